/**
 * What a guest may reach through QEMU's user networking (slirp).
 *
 * slirp opens an ordinary host socket for each guest connection, from the QEMU process: so a
 * guest reaches whatever the host can, its loopback services included (10.0.2.2 is the host's
 * 127.0.0.1). Guests keep the Internet (apt), but not the host itself, link-local addresses
 * (cloud metadata) or private networks, unless the admin allows some (GC_GUEST_ALLOW).
 *
 * How: every QEMU runs with one group id of its own (GC_VM_GID, vm-process.ts), and one
 * nftables table on the host's output hook refuses new traffic from sockets of that group to
 * those destinations (TCP gets a reset, anything else an ICMP "administratively prohibited"),
 * except to the allowed ones and DNS (port 53) to the host's own resolvers, which slirp's DNS
 * proxy (10.0.2.3) forwards to. Chosen over a network namespace per VM (veth + NAT): QEMU's
 * multicast cluster network on the host's loopback (clusters/) and its Unix sockets to gcd work
 * unchanged; over slirp `restrict=on`: that cuts the Internet too; over passt/pasta: Debian 12's
 * has no destination filter. The rule follows the socket's group, so it holds for a clone and a
 * headnode alike, survives a gcd restart (the table stays; gcd replaces it atomically at start)
 * and costs nothing per VM.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { SettingError } from '../config/setting-types.js';
import { DriverError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { qemuSliceForNft } from './vm-cgroup.js';

/** The host itself, link-local, private and reserved networks (RFC 1918, 6598, 3927, 4193, 4291). */
export const BLOCKED_V4 = ['0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12', '192.168.0.0/16'];
export const BLOCKED_V6 = ['::/128', '::1/128', 'fc00::/7', 'fe80::/10'];

export interface EgressPolicy {
  /** The group id QEMU runs with (GC_VM_GID). */
  gid: number;
  /** Destinations allowed although blocked (CIDRs). */
  allow: string[];
  /** The host's DNS resolvers (slirp forwards the guest's DNS to them). */
  resolvers: string[];
  /**
   * copper.slice in cgroup v2 as nft names it (vm-cgroup.ts qemuSliceForNft): a connection of
   * the guests' group to a host address is let through only when the socket it reaches belongs
   * to a Copper QEMU. libslirp connects each guestfwd child to QEMU over a TCP pair on the
   * host's loopback; without the slice, that would be refused with everything else local.
   */
  qemuSlice: string | undefined;
}

/** Conntrack mark of a guests'-group connection to a host address, checked on the input side. */
export const LOCAL_MARK = '0x636f7072';

/** `all`: no filter at all (an admin's explicit choice). */
export type EgressSetting = { open: true } | { open: false; allow: string[] };

/** GC_GUEST_ALLOW: addresses or CIDRs separated by commas or spaces; `all` turns the filter off. */
export function parseGuestAllow(text: string): EgressSetting {
  const items = text
    .split(/[\s,]+/)
    .map((t) => t.trim())
    .filter((t) => t !== '');
  if (items.length === 1 && items[0] === 'all') return { open: true };
  for (const item of items) {
    const [addr = '', bits, extra] = item.split('/');
    const family = isIP(addr);
    const max = family === 4 ? 32 : 128;
    const okBits = bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= max);
    if (family === 0 || !okBits || extra !== undefined) {
      throw new SettingError('GC_GUEST_ALLOW', text, `'${item}' is not an IPv4/IPv6 address or CIDR (or 'all': no guest egress filter)`);
    }
  }
  return { open: false, allow: items };
}

/** The nameservers of /etc/resolv.conf (libslirp reads the same file). */
export function hostResolvers(file = '/etc/resolv.conf'): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
    .filter((a): a is string => a !== undefined && isIP(a.split('%')[0] ?? '') !== 0)
    .map((a) => a.split('%')[0] ?? a);
}

export function egressTableName(gid: number): string {
  return `copper_guest_${gid}`;
}

/** The nft script that (re)places the table atomically: declare, delete, define, in one transaction. */
export function egressRuleset(p: EgressPolicy): string {
  const v4 = (list: string[]): string[] => list.filter((a) => isIP(a.split('/')[0] ?? '') === 4);
  const v6 = (list: string[]): string[] => list.filter((a) => isIP(a.split('/')[0] ?? '') === 6);
  const set = (name: string, type: string, elems: string[]): string =>
    `  set ${name} { type ${type}; flags interval; auto-merge;${elems.length ? ` elements = { ${elems.join(', ')} };` : ''} }`;
  const t = egressTableName(p.gid);
  return [
    `table inet ${t}`,
    `delete table inet ${t}`,
    `table inet ${t} {`,
    set('allow4', 'ipv4_addr', v4(p.allow)),
    set('allow6', 'ipv6_addr', v6(p.allow)),
    set('dns4', 'ipv4_addr', v4(p.resolvers)),
    set('dns6', 'ipv6_addr', v6(p.resolvers)),
    set('blocked4', 'ipv4_addr', BLOCKED_V4),
    set('blocked6', 'ipv6_addr', BLOCKED_V6),
    '  chain guest {',
    '    ip daddr @allow4 accept',
    '    ip6 daddr @allow6 accept',
    '    ip daddr @dns4 meta l4proto { tcp, udp } th dport 53 accept',
    '    ip6 daddr @dns6 meta l4proto { tcp, udp } th dport 53 accept',
    // Without the slice the pair cannot be told from a guest's connection: local stays open (gcd warns).
    p.qemuSlice !== undefined ? `    fib daddr type local ct mark set ${LOCAL_MARK} accept` : '    fib daddr type local accept',
    '    ip daddr @blocked4 goto refuse',
    '    ip6 daddr @blocked6 goto refuse',
    '  }',
    '  chain refuse {',
    '    meta l4proto tcp reject with tcp reset',
    '    reject with icmpx type admin-prohibited',
    '  }',
    '  chain output {',
    '    type filter hook output priority 0; policy accept;',
    `    meta skgid ${p.gid} ct state new,untracked jump guest`,
    '  }',
    // The receiving end of a local connection: only a Copper QEMU's own socket (its guestfwd pair).
    ...(p.qemuSlice !== undefined
      ? [
          '  chain input {',
          '    type filter hook input priority 0; policy accept;',
          `    ct state new ct mark ${LOCAL_MARK} socket cgroupv2 level 1 ${JSON.stringify(p.qemuSlice)} accept`,
          `    ct state new ct mark ${LOCAL_MARK} goto refuse`,
          '  }',
        ]
      : []),
    '}',
    '',
  ].join('\n');
}

/**
 * Put the guests' egress filter in place (gcd start). A host where it cannot be (no nft, no
 * nf_tables) refuses to start gcd rather than run guests unfiltered; GC_GUEST_ALLOW=all is the
 * admin's way to run without it.
 */
export async function applyGuestEgress(gid: number, allowText: string): Promise<void> {
  const s = parseGuestAllow(allowText);
  if (s.open) {
    log.warn('GC_GUEST_ALLOW=all: guests reach everything the host can, its own services included');
    await removeGuestEgress(gid);
    return;
  }
  const qemuSlice = await qemuSliceForNft();
  if (qemuSlice === undefined)
    log.warn("no cgroup v2 hierarchy under /sys/fs/cgroup: guests can reach the host's own services (only private and link-local networks are refused)");
  const script = egressRuleset({ gid, allow: s.allow, resolvers: hostResolvers(), qemuSlice });
  await nft(script).catch((e: unknown) => {
    throw new DriverError(
      `cannot install the guests' egress filter (nftables): ${errorMessage(e)}. Install nftables (scripts/install-deps.sh), or set GC_GUEST_ALLOW=all to run guests unfiltered`,
      { cause: e },
    );
  });
}

export async function removeGuestEgress(gid: number): Promise<void> {
  const t = egressTableName(gid);
  await nft(`table inet ${t}\ndelete table inet ${t}\n`).catch(() => undefined);
}

async function nft(script: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = execFile('nft', ['-f', '-'], (err, _out, stderr) => (err ? reject(new Error(stderr.trim() || err.message)) : resolve()));
    child.stdin?.end(script);
  });
}
