import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stageOutScripts } from '../../src/drivers/qemu/stage-out.js';

/**
 * The guest halves of stage-out (pack.sh in the clone, place.py in the headnode) run here on the
 * host's own bash, GNU tar and python3, in a temporary folder standing in for both guests: what
 * pack lists, and what place does with an archive a hostile clone made.
 */
describe('stage-out guest scripts (bash, GNU tar, python3 on this host)', function () {
  let dir: string;
  const { pack, place } = stageOutScripts();
  const run = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, COPPER_STAGEOUT_LEDGERS: join(dir, 'ledgers') } });
    return { out: r.stdout, err: r.stderr, status: r.status };
  };
  /** place.py ARCHIVE JOBID SNAP_NS ACCOUNT PATH... (this host's clock stands for the headnode's) */
  const placeRun = (archive: string, jobId: string, snapMs: number, account: string, ...paths: string[]) =>
    run('/usr/bin/python3', ['-I', '-S', '-c', place, archive, jobId, (BigInt(snapMs) * 1_000_000n).toString(), account, ...paths]);

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'copper-so-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('pack lists what changed since the start (not before), no FIFOs, and splits at the cap', async function () {
    const work = join(dir, 'work');
    mkdirSync(work);
    writeFileSync(join(work, 'before.txt'), 'old');
    await new Promise((r) => setTimeout(r, 50));
    const since = (Date.now() / 1000).toFixed(3);
    await new Promise((r) => setTimeout(r, 50));
    writeFileSync(join(work, 'small.txt'), 'x'.repeat(100));
    writeFileSync(join(work, 'big.bin'), Buffer.alloc(5000));
    run('mkfifo', [join(work, 'fifo')]);
    const r = run('bash', ['-c', pack, 'pack', since, '1000', join(dir, 'out'), work]);
    expect(r.status, r.err).to.equal(0);
    expect(r.out.trim()).to.equal('2 100 1 5000'); // the folder and small.txt; big.bin over the cap
    const listed = run('tar', ['-tf', join(dir, 'out', 'd.tar')])
      .out.split('\n')
      .filter(Boolean)
      .sort();
    expect(listed).to.deep.equal([`${work.slice(1)}/`, `${work.slice(1)}/small.txt`]);
    expect(run('tar', ['-tf', join(dir, 'out', 'x.tar')]).out.trim()).to.equal(`${work.slice(1)}/big.bin`);
  });

  it('place does not follow a link the archive planted, drops devices and what lies outside the paths', function () {
    const work = join(dir, 'work');
    const victim = join(dir, 'victim');
    mkdirSync(work);
    mkdirSync(victim);
    // A hostile archive: a link to a folder outside, then a file "through" it; a device; a file
    // outside the stage-out paths; a member with '..'.
    const w = work.slice(1);
    const py = [
      'import io, sys, tarfile',
      't = tarfile.open(sys.argv[1], "w")',
      'def add(name, data=None, **kw):',
      '    i = tarfile.TarInfo(name)',
      '    for k, v in kw.items(): setattr(i, k, v)',
      '    if data is not None: i.size = len(data)',
      '    t.addfile(i, io.BytesIO(data) if data is not None else None)',
      `add("${w}/link", type=tarfile.SYMTYPE, linkname="${victim}")`,
      `add("${w}/link/pwned", b"pwned")`,
      `add("${w}/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)`,
      `add("${dir.slice(1)}/outside.txt", b"no")`,
      `add("${w}/../escaped.txt", b"no")`,
      `add("${w}/good.txt", b"good")`,
      't.close()',
    ].join('\n');
    const archive = join(dir, 'a.tar');
    expect(run('/usr/bin/python3', ['-c', py, archive]).status).to.equal(0);
    const r = placeRun(archive, '5.srv', Date.now(), 'root', work);
    expect(r.status, r.err).to.equal(0);
    const report = JSON.parse(r.out.trim().split('\n').pop() as string) as { placed: number; errors: string[] };
    expect(readFileSync(join(work, 'good.txt'), 'utf8')).to.equal('good');
    expect(lstatSync(join(work, 'link')).isSymbolicLink()).to.equal(true);
    expect(readlinkSync(join(work, 'link'))).to.equal(victim);
    expect(existsSync(join(victim, 'pwned'))).to.equal(false);
    expect(existsSync(join(work, 'dev'))).to.equal(false);
    expect(existsSync(join(dir, 'outside.txt'))).to.equal(false);
    expect(existsSync(join(dir, 'escaped.txt'))).to.equal(false);
    expect(report.errors.join(' ')).to.include('outside the stage-out paths');
    expect(existsSync(archive)).to.equal(false, 'the archive is removed');
  });

  it('place writes NAME.copper-<jobid> beside a file changed since the snapshot, but a later stage-out overwrites an earlier one', async function () {
    const work = join(dir, 'work');
    mkdirSync(work);
    const snap = Date.now();
    await new Promise((r) => setTimeout(r, 30)); // file times come from the kernel's coarse clock
    writeFileSync(join(work, 'data.txt'), 'user'); // changed in the headnode after the snapshot
    const mk = (content: string): string => {
      const src = join(dir, `src-${content}`, work.slice(1));
      mkdirSync(src, { recursive: true });
      writeFileSync(join(src, 'data.txt'), content);
      writeFileSync(join(src, 'res.txt'), content);
      const a = join(dir, `${content}.tar`);
      expect(run('tar', ['-C', join(dir, `src-${content}`), '-cf', a, work.slice(1)]).status).to.equal(0);
      return a;
    };
    const first = placeRun(mk('one'), '1.srv', snap, 'root', work);
    expect((JSON.parse(first.out) as { conflicts: string[] }).conflicts).to.deep.equal([join(work, 'data.txt')]);
    const second = placeRun(mk('two'), '2.srv', snap, 'root', work);
    expect((JSON.parse(second.out) as { conflicts: string[] }).conflicts).to.deep.equal([join(work, 'data.txt')]);
    expect(readFileSync(join(work, 'data.txt'), 'utf8')).to.equal('user');
    expect(readFileSync(join(work, 'data.txt.copper-1.srv'), 'utf8')).to.equal('one');
    expect(readFileSync(join(work, 'data.txt.copper-2.srv'), 'utf8')).to.equal('two');
    expect(readFileSync(join(work, 'res.txt'), 'utf8')).to.equal('two', 'the last stage-out wins over the first');
  });

  it('place writes entries in the order the job wrote them: a marker written last appears last', function () {
    // Snakemake's generic cluster mode: the job script touches .snakemake/tmp.*/N.jobfinished
    // after the rule wrote its outputs, and the headnode's snakemake takes the outputs as done
    // once the marker is there. Placed in path order, the marker came before out/ and z.txt.
    const work = join(dir, 'work');
    mkdirSync(join(work, '.snakemake', 'tmp.x'), { recursive: true }); // made by the headnode's snakemake
    const w = work.slice(1);
    const py = [
      'import io, sys, tarfile',
      't = tarfile.open(sys.argv[1], "w")',
      'def add(name, mtime, data=None, dir=False):',
      '    i = tarfile.TarInfo(name)',
      '    i.mtime = mtime',
      '    if dir: i.type, i.mode = tarfile.DIRTYPE, 0o755',
      '    else: i.size = len(data)',
      '    t.addfile(i, None if dir else io.BytesIO(data))',
      `add("${w}/.snakemake/tmp.x/3.jobfinished", 1700000300, b"")`,
      `add("${w}/out", 1700000100, dir=True)`,
      `add("${w}/out/a.txt", 1700000200, b"a")`, // written after out/ was made: out/ goes in at 200
      `add("${w}/z.txt", 1700000150, b"z")`,
      't.close()',
    ].join('\n');
    const archive = join(dir, 'a.tar');
    expect(run('/usr/bin/python3', ['-c', py, archive]).status).to.equal(0);
    const r = placeRun(archive, '3.srv', Date.now(), 'root', work);
    expect(r.status, r.err).to.equal(0);
    expect(JSON.parse(r.out) as { placed: number; errors: string[] }).to.include({ placed: 3 });
    // The account's ledger lists what was placed (dev:ino:ctime), in the order it was placed.
    const order = readFileSync(join(dir, 'ledgers', 'root', 'ledger'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((k) => Number(k.split(':')[1]));
    const ino = (p: string) => lstatSync(join(work, p)).ino;
    const placed = order.filter((i) => [ino('z.txt'), ino('out'), ino('.snakemake/tmp.x/3.jobfinished')].includes(i));
    expect(placed).to.deep.equal([ino('z.txt'), ino('out'), ino('.snakemake/tmp.x/3.jobfinished')]);
  });

  it("place becomes the job's account: its files are the account's, and it cannot write where the account cannot", function () {
    if (process.getuid?.() !== 0) this.skip(); // needs root to change user, as the headnode's agent is
    const nobody = Number(run('id', ['-u', 'nobody']).out.trim());
    const work = join(dir, 'work');
    const locked = join(dir, 'locked');
    mkdirSync(work);
    mkdirSync(locked, { mode: 0o755 });
    run('chown', ['nobody', work]);
    run('chmod', ['755', dir]);
    const src = join(dir, 'src');
    mkdirSync(join(src, work.slice(1)), { recursive: true });
    mkdirSync(join(src, locked.slice(1)), { recursive: true });
    writeFileSync(join(src, work.slice(1), 'mine.txt'), 'mine');
    writeFileSync(join(src, locked.slice(1), 'x.txt'), 'x');
    const a = join(dir, 'n.tar');
    expect(run('tar', ['-C', src, '-cf', a, work.slice(1), locked.slice(1)]).status).to.equal(0);
    const r = placeRun(a, '3.srv', Date.now(), 'nobody', work, locked);
    expect(r.status, r.err).to.equal(0);
    expect(lstatSync(join(work, 'mine.txt')).uid).to.equal(nobody);
    expect(existsSync(join(locked, 'x.txt'))).to.equal(false);
    expect((JSON.parse(r.out) as { errors: string[] }).errors.join(' ')).to.include('Permission denied');
  });
});
