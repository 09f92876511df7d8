import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CloneInfo } from '../clusters/types.js';
import { errorMessage } from '../errors.js';
import type { HeadnodeInfo } from '../headnodes/types.js';
import { log } from '../log.js';
import type { JobRecord } from '../queue/job.js';
import { duration, esc, page, table, when, type PageUser } from './html.js';
import type { Sample } from './samples.js';
import { BadTokenError, type WebIdentity, type WebTokens } from './token.js';

/** What the dashboard reads; gcd's composition root hands it over. */
export interface DashboardServices {
  tokens: WebTokens;
  /** Every job record (array tasks not listed apart), finished ones included. */
  jobs(): Promise<JobRecord[]>;
  headnodes(): Promise<HeadnodeInfo[]>;
  /** Live clones of every headnode, when the backend has virtual clusters. */
  clones?: () => Promise<CloneInfo[]>;
  samples(): Promise<Sample[]>;
  /** The BullMQ run queue, shown raw to admins by bull-board. */
  queue?: Queue;
}

const COOKIE = 'gc_token';
const STATIC_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../../src/web/static');

function cookieToken(req: Request): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === COOKIE) return decodeURIComponent(v.join('='));
  }
  return undefined;
}

function refuse(res: Response, why: string): void {
  res.status(401).type('html').send(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Log in · Copper</title>
<link rel="stylesheet" href="/static/dashboard.css"></head><body><main class="login"><h1>Copper dashboard</h1>
<p class="refused">${esc(why)}</p>
<p>Get a log-in link: in your headnode run <code>gc web token</code>; an administrator runs
<code>gc web token --user USER</code> or <code>gc web token --admin</code> on the host. Open
<code>/?token=TOKEN</code> once; the browser keeps it in a cookie until it expires.</p></main></body></html>`);
}

function who(res: Response): WebIdentity {
  return res.locals.identity as WebIdentity;
}

const mine =
  (id: WebIdentity) =>
  (owner: string): boolean =>
    id.admin || owner === id.user;

function jobCells(j: JobRecord, extra: string[]): string[] {
  return [
    `<span class="jobid">${esc(j.id)}</span>`,
    esc(j.spec.name),
    `<span class="user">${esc(j.spec.user)}</span>`,
    esc(j.spec.headnode),
    esc(j.spec.queue),
    `<span class="state s-${esc(j.state)}">${esc(j.state)}</span>`,
    ...extra,
  ];
}

function jobsPage(jobs: JobRecord[], now: number): string {
  const queued = jobs.filter((j) => j.state === 'Q' || j.state === 'H' || j.state === 'W');
  const running = jobs.filter((j) => j.state === 'R' || j.state === 'E' || j.state === 'B');
  const finished = jobs
    .filter((j) => j.state === 'F')
    .sort((a, b) => (b.endedAt ?? 0) - (a.endedAt ?? 0))
    .slice(0, 50);
  const head = ['Job', 'Name', 'User', 'Headnode', 'Queue', 'S'];
  const res = (j: JobRecord): string => {
    const r = j.spec.assigned ?? j.spec.resources;
    return `${r.ncpus} cpu${r.memMiB ? `, ${r.memMiB} MiB` : ''}`;
  };
  return `<section><h2>Queued <span class="count">${queued.length}</span></h2>
${table(
  'queued',
  [...head, 'Waiting since', 'Asks', 'Why it waits'],
  queued.map((j) =>
    jobCells(j, [
      when(j.queuedAt),
      res(j),
      `<span class="reason">${esc(j.comment ?? (j.holds ? `held (${j.holds})` : j.beginAt ? `not before ${when(j.beginAt)}` : 'waiting for the dispatcher'))}</span>`,
    ]),
  ),
  'No job waits.',
)}</section>
<section><h2>Running <span class="count">${running.length}</span></h2>
${table(
  'running',
  [...head, 'Started', 'Elapsed', 'Walltime', 'Uses', 'CPU time', 'Peak memory', 'Clone'],
  running.map((j) =>
    jobCells(j, [
      when(j.startedAt),
      j.startedAt ? duration((now - j.startedAt) / 1000) : '',
      j.spec.walltimeSec ? duration(j.spec.walltimeSec) : '',
      res(j),
      j.cputSec !== undefined ? duration(j.cputSec) : '',
      j.memKiB !== undefined ? `${Math.round(j.memKiB / 1024)} MiB` : '',
      esc(j.cloneId ?? ''),
    ]),
  ),
  'No job runs.',
)}</section>
<section><h2>Finished <span class="count">${finished.length}</span></h2>
${table(
  'finished',
  [...head, 'Ended', 'Ran for', 'Exit status', 'Comment'],
  finished.map((j) =>
    jobCells(j, [
      when(j.endedAt),
      j.startedAt && j.endedAt ? duration((j.endedAt - j.startedAt) / 1000) : '',
      `<span class="exit ${j.exitStatus === 0 ? 'ok' : 'bad'}">${esc(j.exitStatus ?? '')}</span>`,
      esc(j.comment ?? ''),
    ]),
  ),
  'No finished job in the history.',
)}</section>
<p class="note">Refreshes every 10 s. <script>setTimeout(() => location.reload(), 10000)</script></p>`;
}

/** The timeline's bars: one per job that started, oldest first. */
export interface TimelineBar {
  id: string;
  name: string;
  user: string;
  state: string;
  start: number;
  end: number;
  exitStatus?: number;
}

function timeline(jobs: JobRecord[], now: number): TimelineBar[] {
  return jobs
    .filter((j) => j.startedAt !== undefined)
    .sort((a, b) => a.startedAt! - b.startedAt!)
    .slice(-200)
    .map((j) => ({
      id: j.id,
      name: j.spec.name,
      user: j.spec.user,
      state: j.state,
      start: j.startedAt!,
      end: j.endedAt ?? now,
      ...(j.exitStatus !== undefined ? { exitStatus: j.exitStatus } : {}),
    }));
}

/** The dashboard as an Express app; `listen` is the caller's (web/server.ts). */
export function dashboardApp(s: DashboardServices): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use('/static', express.static(STATIC_DIR, { index: false }));
  // Chart.js as shipped by npm, served from node_modules: the machine may have no internet.
  const chartJs = join(dirname(createRequire(import.meta.url).resolve('chart.js')), 'chart.umd.js');
  app.get('/static/chart.umd.js', (_req, res) => res.sendFile(chartJs));

  // Log-in: ?token= once (becomes an HttpOnly cookie, and leaves the address bar), then the cookie.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const fromUrl = typeof req.query.token === 'string' ? req.query.token : undefined;
    const token = fromUrl ?? cookieToken(req);
    if (!token) return refuse(res, 'Not logged in.');
    let id: WebIdentity;
    try {
      id = s.tokens.verify(token);
    } catch (e) {
      if (!(e instanceof BadTokenError)) return next(e);
      res.setHeader('set-cookie', `${COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`);
      return refuse(res, `Token refused: ${e.reason}.`);
    }
    if (fromUrl !== undefined) {
      const maxAge = Math.max(0, id.expiresAt - Math.floor(Date.now() / 1000));
      res.setHeader('set-cookie', `${COOKIE}=${encodeURIComponent(token)}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}`);
      const u = new URL(req.originalUrl, 'http://x');
      u.searchParams.delete('token');
      return res.redirect(303, u.pathname + u.search);
    }
    res.locals.identity = id;
    res.setHeader('cache-control', 'no-store');
    next();
  });

  const visibleJobs = async (id: WebIdentity): Promise<JobRecord[]> => (await s.jobs()).filter((j) => mine(id)(j.spec.user));
  const visibleHeadnodes = async (id: WebIdentity): Promise<HeadnodeInfo[]> => (await s.headnodes()).filter((h) => mine(id)(h.owner));
  const pu = (id: WebIdentity): PageUser => ({ user: id.user, admin: id.admin });

  app.get('/', (_req, res) => res.redirect(302, '/jobs'));
  app.get('/jobs', async (_req, res) => {
    const id = who(res);
    res.type('html').send(page('Jobs', pu(id), jobsPage(await visibleJobs(id), Date.now())));
  });
  app.get('/history', async (_req, res) => {
    const id = who(res);
    const jobs = await visibleJobs(id);
    const done = jobs.filter((j) => j.state === 'F').sort((a, b) => (b.endedAt ?? 0) - (a.endedAt ?? 0));
    const body = `<section><h2>Timeline</h2><p class="note">One bar per job from its start to its end (running jobs end now).</p>
<div class="chart tall"><canvas id="timeline"></canvas></div></section>
<section><h2>Finished jobs <span class="count">${done.length}</span></h2>
${table(
  'history',
  ['Job', 'Name', 'User', 'Headnode', 'Queue', 'S', 'Queued', 'Started', 'Ended', 'Exit status', 'CPU time', 'Comment'],
  done.map((j) =>
    jobCells(j, [
      when(j.queuedAt),
      when(j.startedAt),
      when(j.endedAt),
      `<span class="exit ${j.exitStatus === 0 ? 'ok' : 'bad'}">${esc(j.exitStatus ?? '')}</span>`,
      j.cputSec !== undefined ? duration(j.cputSec) : '',
      esc(j.comment ?? ''),
    ]),
  ),
  'No finished job in the history.',
)}</section>`;
    res.type('html').send(page('History', pu(id), body, ['/static/chart.umd.js', '/static/dashboard.js']));
  });
  app.get('/charts', (_req, res) => {
    const id = who(res);
    const body = `<p class="note">Sampled by gcd every few seconds; the whole site's queue${id.admin ? '' : ' (counts only, no job names)'}.</p>
<section><h2>Queue depth</h2><div class="chart"><canvas id="depth"></canvas></div></section>
<section><h2>Utilisation</h2><div class="chart"><canvas id="util"></canvas></div></section>`;
    res.type('html').send(page('Queue & utilisation', pu(id), body, ['/static/chart.umd.js', '/static/dashboard.js']));
  });
  app.get('/headnodes', async (_req, res) => {
    const id = who(res);
    const hs = await visibleHeadnodes(id);
    const rows = hs.map((h) => [
      esc(h.name),
      `<span class="user">${esc(h.owner)}</span>`,
      esc(h.group),
      `<span class="hn-${esc(h.state)}">${esc(h.state)}</span>`,
      esc(h.accel),
      `${h.memMiB} MiB`,
      String(h.vcpus),
      `${h.diskGiB} GiB`,
      when(h.startedAt ?? h.createdAt),
      esc(h.reason ?? ''),
    ]);
    res
      .type('html')
      .send(
        page(
          'Headnodes',
          pu(id),
          table('headnodes', ['Name', 'Owner', 'Group', 'State', 'Accel', 'Memory', 'vCPUs', 'Disk', 'Since', 'Note'], rows, 'No headnode.'),
        ),
      );
  });
  app.get('/clones', async (_req, res) => {
    const id = who(res);
    const owners = new Map((await s.headnodes()).map((h) => [h.name, h.owner]));
    const jobClones = (await visibleJobs(id)).filter((j) => (j.state === 'R' || j.state === 'E') && j.cloneId);
    const live = s.clones ? (await s.clones()).filter((c) => mine(id)(owners.get(c.headnode) ?? '')) : undefined;
    const body = `<section><h2>Job clones <span class="count">${jobClones.length}</span></h2>
${table(
  'job-clones',
  ['Clone', 'Job', 'User', 'Headnode', 'Started', 'Elapsed'],
  jobClones.map((j) => [
    esc(j.cloneId),
    `<span class="jobid">${esc(j.id)}</span>`,
    `<span class="user">${esc(j.spec.user)}</span>`,
    esc(j.spec.headnode),
    when(j.startedAt),
    j.startedAt ? duration((Date.now() - j.startedAt) / 1000) : '',
  ]),
  'No job is running in a clone.',
)}</section>
<section><h2>Live clones (gc clone) <span class="count">${live?.length ?? 0}</span></h2>
${
  live === undefined
    ? '<p class="empty">This gcd runs without virtual clusters.</p>'
    : table(
        'live-clones',
        ['Name', 'Headnode', 'Gen', 'Parent', 'State', 'Address', 'Up', 'Expires', 'Memory'],
        live.map((c) => [
          esc(c.name),
          esc(c.headnode),
          String(c.generation),
          esc(c.parent),
          esc(c.state),
          esc(c.address),
          duration(c.uptimeSec),
          when(c.expiresAt),
          c.pssMiB !== undefined ? `${c.pssMiB} MiB` : '',
        ]),
        'No live clone.',
      )
}</section>`;
    res.type('html').send(page('Clones', pu(id), body));
  });

  // JSON for the pictures (static/dashboard.js draws them with Chart.js).
  app.get('/api/timeline', async (_req, res) => {
    res.json({ now: Date.now(), bars: timeline(await visibleJobs(who(res)), Date.now()) });
  });
  app.get('/api/samples', async (_req, res) => {
    res.json({ samples: await s.samples() });
  });
  app.get('/api/jobs', async (_req, res) => {
    res.json({ jobs: await visibleJobs(who(res)) });
  });

  if (s.queue) {
    const board = new ExpressAdapter();
    board.setBasePath('/admin/queue');
    createBullBoard({ queues: [new BullMQAdapter(s.queue, { readOnlyMode: true })], serverAdapter: board });
    app.use(
      '/admin/queue',
      (_req: Request, res: Response, next: NextFunction) => {
        if (!who(res).admin)
          return void res
            .status(403)
            .type('html')
            .send(page('Forbidden', pu(who(res)), '<p class="refused">The raw queue is for administrators.</p>'));
        next();
      },
      board.getRouter() as express.Router,
    );
  }

  app.use((_req: Request, res: Response) => {
    res
      .status(404)
      .type('html')
      .send(page('Not found', pu(who(res)), '<p>No such page.</p>'));
  });
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    log.error('dashboard request failed', { error: errorMessage(err) });
    if (!res.headersSent)
      res
        .status(500)
        .type('text')
        .send('dashboard error: ' + errorMessage(err).split('\n')[0]);
  });
  return app;
}
