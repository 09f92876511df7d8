import type { JobRecord } from '../queue/job.js';

/** The environment a job sees, as PBS sets it, on top of what the submitter exported (-v/-V). */
export function pbsEnvironment(job: JobRecord): Record<string, string> {
  const s = job.spec;
  const o = (k: string): string | undefined => s.env[k];
  const account = s.account ?? 'root';
  const env: Record<string, string> = {
    PATH: o('PATH') ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: o('HOME') ?? (account === 'root' ? '/root' : `/home/${account}`),
    ...s.env,
    PBS_JOBID: job.id,
    PBS_JOBNAME: s.name,
    PBS_QUEUE: s.queue,
    PBS_O_QUEUE: s.queue,
    PBS_ENVIRONMENT: job.spec.interactive ? 'PBS_INTERACTIVE' : 'PBS_BATCH',
    PBS_O_WORKDIR: s.cwd,
    PBS_O_HOST: s.submitHost,
    PBS_O_LOGNAME: s.user,
    PBS_O_HOME: o('HOME') ?? (account === 'root' ? '/root' : `/home/${account}`),
    PBS_O_PATH: o('PATH') ?? '',
    PBS_O_SHELL: o('SHELL') ?? '/bin/sh',
    // What the clone really has (resources_assigned), not what was asked beyond its slots.
    NCPUS: String(s.assigned?.ncpus ?? s.resources.ncpus),
    OMP_NUM_THREADS: String(s.assigned?.ncpus ?? s.resources.ncpus),
    TMPDIR: '/tmp',
    ...(job.arrayIndex !== undefined
      ? { PBS_ARRAY_INDEX: String(job.arrayIndex), PBS_ARRAYID: String(job.arrayIndex), PBS_ARRAY_ID: job.arrayParent ?? '' }
      : {}),
    USER: account,
    LOGNAME: account,
  };
  return env;
}
