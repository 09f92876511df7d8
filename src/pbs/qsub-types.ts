/**
 * The shapes gcqsub's parsing passes around: what the caller knows (`QsubContext`), what one
 * source of options asked for (`OptionSet`), and the answer (`QsubResult`).
 */
import type { JobSpec, JoinMode } from '../queue/job.js';
import type { Dependency } from './option-values.js';
import type { ChunkRequest, ResourceRequest } from './resources.js';
import type { ArraySpec } from './units.js';

export interface QsubContext {
  /** The submitter's working directory (absolute, inside the headnode). */
  cwd: string;
  /** The submitter's environment (for -V and bare -v names). */
  env: Record<string, string>;
  user: string;
  group: string;
  /** The calling headnode; empty on the host, where --headnode names it. */
  headnode: string;
  submitHost: string;
  /** Epoch ms, for -a and --cron. */
  now: number;
  defaultQueue: string;
  /** The script's text by the path as typed (relative to cwd); undefined when not available. */
  readFile?: (path: string) => string | undefined;
  /** The account's groups inside the headnode, when the client sent them (-W group_list is checked against them). */
  accountGroups?: readonly string[];
  /** The client looked for this path and it does not exist (see parseQsub's operand rule). */
  isMissing?: (path: string) => boolean;
  /** Is this absolute path a directory? Lets -o/-e name a directory without a trailing "/". */
  isDirectory?: (path: string) => boolean;
  /** The caller is the host administrator (gcd's Unix socket): --headnode is accepted there only. */
  hostSide?: boolean;
  /** Custom `-l` resources the admin declared (quotas.yaml `resources:`). */
  customResources?: readonly string[];
}

/** A parsed submission. `spec` leaves seq-dependent defaults (output paths) to the server. */
export interface QsubJob {
  kind: 'job';
  spec: JobSpec;
  /** -W block=true: the client waits for the job and exits with its status. */
  block: boolean;
  /** -h: submitted held. */
  hold: boolean;
  /** -a: not before this epoch ms. */
  beginAt?: number;
  array?: ArraySpec;
  depend?: Dependency[];
  cron?: string;
  warnings: string[];
  /** select / nodes chunks as asked (spec.resources holds their sum). */
  chunks?: ChunkRequest[];
  /** -o/-e named a directory: the default file name `<name>.o<seq>` goes inside it. */
  outputDirs?: { stdout?: string; stderr?: string };
  /** -z: print no job id. */
  quiet: boolean;
  /** -I: the client stays and attaches its terminal once the job runs (server/commands/interactive.ts). */
  interactive: boolean;
}

/** The script named on the command line must be sent by the client first. */
export interface QsubNeedFile {
  kind: 'needFile';
  needFile: string;
}

export interface QsubHelp {
  kind: 'help';
  help: string;
}

export type QsubResult = QsubJob | QsubNeedFile | QsubHelp;

/** The operand the client answers with its standard input (`gcqsub < job.sh`, `echo cmd | gcqsub`). */
export const STDIN = '-';

/** What one source (the command line, or one directive line) asked for. */
export interface OptionSet {
  name?: string;
  stdout?: string;
  stderr?: string;
  join?: JoinMode;
  resources: ResourceRequest;
  vars: Record<string, string>;
  exportAll?: boolean;
  queue?: string;
  priority?: number;
  block?: boolean;
  depend?: Dependency[];
  stageout?: 'none' | string[];
  array?: ArraySpec;
  hold?: boolean;
  beginAt?: number;
  rerunnable?: boolean;
  mailPoints?: string;
  mailUsers?: string[];
  shell?: string;
  prefix?: string;
  account?: string;
  project?: string;
  groupList?: string;
  umask?: string;
  maxRunSubjobs?: number;
  quiet?: boolean;
  /** -d / -w: the job's working directory, as typed. */
  workdir?: string;
  /** -F: extra script arguments. */
  scriptArgs?: string[];
  cron?: string;
  headnode?: string;
  /** -I: an interactive job (a login shell in its clone on the submitter's terminal). */
  interactive?: boolean;
  warnings: string[];
}

export type Source = 'command line' | 'directive';
