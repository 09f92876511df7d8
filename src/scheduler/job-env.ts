import type { JobRecord } from '../queue/job.js';

/** The environment a job sees, as PBS sets it, on top of what the submitter exported (-v/-V). */
export function pbsEnvironment(job: JobRecord): Record<string, string> {
  const s = job.spec;
  const o = (k: string): string | undefined => s.env[k];
  const env: Record<string, string> = {
    PATH: o('PATH') ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: o('HOME') ?? (s.user === 'root' ? '/root' : `/home/${s.user}`),
    ...s.env,
    PBS_JOBID: job.id,
    PBS_JOBNAME: s.name,
    PBS_QUEUE: s.queue,
    PBS_O_QUEUE: s.queue,
    PBS_ENVIRONMENT: 'PBS_BATCH',
    PBS_O_WORKDIR: s.cwd,
    PBS_O_HOST: s.submitHost,
    PBS_O_LOGNAME: s.user,
    PBS_O_HOME: o('HOME') ?? (s.user === 'root' ? '/root' : `/home/${s.user}`),
    PBS_O_PATH: o('PATH') ?? '',
    PBS_O_SHELL: o('SHELL') ?? '/bin/sh',
    NCPUS: String(s.resources.ncpus),
    OMP_NUM_THREADS: String(s.resources.ncpus),
    TMPDIR: '/tmp',
    USER: s.user,
    LOGNAME: s.user,
  };
  return env;
}
