import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A free loopback TCP port (bound and released at once). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

/** A real Prometheus server (Debian's package) scraping one target every second. */
export class PrometheusProcess {
  private proc: ChildProcess | undefined;
  private readonly dir = mkdtempSync(join(tmpdir(), 'copper-prom-'));
  log = '';
  port = 0;

  constructor(private readonly target: string) {}

  async start(): Promise<void> {
    this.port = await freePort();
    const config = join(this.dir, 'prometheus.yml');
    writeFileSync(
      config,
      ['global:', '  scrape_interval: 1s', '  evaluation_interval: 1s', 'scrape_configs:', '  - job_name: gcd', '    static_configs:', `      - targets: ['${this.target}']`, ''].join('\n'),
    );
    this.proc = spawn(
      'prometheus',
      [`--config.file=${config}`, `--storage.tsdb.path=${join(this.dir, 'data')}`, `--web.listen-address=127.0.0.1:${this.port}`, '--log.level=warn'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.proc.stdout!.on('data', (d: Buffer) => (this.log += d.toString()));
    this.proc.stderr!.on('data', (d: Buffer) => (this.log += d.toString()));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`prometheus exited: ${this.log}`);
      const ready = await fetch(`http://127.0.0.1:${this.port}/-/ready`).then((r) => r.ok, () => false);
      if (ready) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`prometheus did not become ready: ${this.log}`);
  }

  /** An instant query through Prometheus's HTTP API. */
  async query(q: string): Promise<PromSample[]> {
    const r = await fetch(`http://127.0.0.1:${this.port}/api/v1/query?query=${encodeURIComponent(q)}`);
    const body = (await r.json()) as { status: string; error?: string; data?: { resultType: string; result: PromSample[] } };
    if (body.status !== 'success' || !body.data) throw new Error(`query ${q} failed: ${body.error ?? r.status}`);
    return body.data.result;
  }

  /** The target's health as Prometheus sees it ('up', 'down', 'unknown'). */
  async targetHealth(): Promise<string | undefined> {
    const r = await fetch(`http://127.0.0.1:${this.port}/api/v1/targets`);
    const body = (await r.json()) as { data: { activeTargets: Array<{ health: string; lastError: string }> } };
    return body.data.activeTargets[0]?.health;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await gone;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
