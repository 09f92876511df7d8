/**
 * Programs the project's guest image carries (src/image installs them); the VM floor and the
 * job driver run them through the guest agent.
 */
export const GUEST_INIT = '/sbin/copper-init';
/** Runs one job command: its output to files, its process group to a file, its exit status. */
export const GUEST_RUN_JOB = '/usr/local/lib/copper/run-job';
/** Gives a fresh clone its own identity (hostname, machine-id, entropy, clock, vCPUs online). */
export const GUEST_CLONE_INIT = '/usr/local/lib/copper/clone-init';
/** Installs the owner's SSH public keys for root and the owner (stdin), prints the SSH host key. */
export const GUEST_SSH_KEYS = '/usr/local/lib/copper/ssh-keys';
