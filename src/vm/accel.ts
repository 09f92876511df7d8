import { closeSync, constants, openSync, readFileSync } from 'node:fs';
import { settings } from '../config/settings.js';
/** How a VM's vCPUs run: hardware virtualization or QEMU's translator. */
export type Accel = 'kvm' | 'tcg';

/**
 * Choose the QEMU accelerator.
 *
 * A usable /dev/kvm is not enough: some hosts expose a paravirtual KVM (e.g. kvm_pvm) on
 * which a stock guest kernel hangs right after "Booting from ROM". Those hosts show no
 * vmx/svm CPU flag, so KVM is used only when /dev/kvm opens read-write AND the flag is there.
 * `GC_ACCEL=kvm|tcg` forces the choice either way.
 */
export function detectAccel(env: NodeJS.ProcessEnv = process.env): Accel {
  return settings(env).accel ?? (kvmDeviceUsable() && cpuHasVirtFlag() ? 'kvm' : 'tcg');
}

function kvmDeviceUsable(path = '/dev/kvm'): boolean {
  try {
    closeSync(openSync(path, constants.O_RDWR));
    return true;
  } catch {
    return false; // absent or no permission: both mean "no KVM for us"
  }
}

/** True when /proc/cpuinfo lists vmx (Intel) or svm (AMD) among the CPU flags. */
export function cpuHasVirtFlag(cpuinfo?: string): boolean {
  let text = cpuinfo;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return false;
    }
  }
  return /^flags\s*:.*\b(vmx|svm)\b/m.test(text);
}
