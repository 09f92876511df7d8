/**
 * `$PBS_JOBID` and `$PBS_JOBNAME` in `-o`/`-e` paths, expanded when the job's id is known, as
 * Torque does. Toil's Torque/PBS batch system writes `#PBS -o .../toil_WF.N.${PBS_JOBID}.out.log`
 * in every job it submits and looks for that file when a job fails. PBS Pro leaves the text as
 * it is, but a file name holding a literal `${PBS_JOBID}` is never what a script meant.
 */
const PATH_VARIABLE = /\$(?:\{(PBS_JOBID|PBS_JOBNAME)\}|(PBS_JOBID|PBS_JOBNAME)(?![A-Za-z0-9_]))/g;

export function expandPathVariables(path: string, job: { id: string; name: string }): string {
  return path.replace(PATH_VARIABLE, (_m, braced: string | undefined, bare: string | undefined) => ((braced ?? bare) === 'PBS_JOBID' ? job.id : job.name));
}
