/**
 * gcd's composition root: the one place its parts are built and wired, in order: Redis
 * (embedded unless GC_REDIS_URL), the per-VM channels, the quota watcher (one, for jobs and
 * clusters), the backend (QEMU headnodes, job driver and clusters; or the test double), the
 * scheduler, the server-side commands and the API. close() takes them down in reverse.
 */
import type { Redis } from 'ioredis';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiServer } from '../api/server.js';
import { ChannelServer } from '../api/channels.js';
import { sendError } from '../api/http-util.js';
import { QuotaWatcher } from '../config/quotas.js';
import type { Settings } from '../config/settings.js';
import { UnavailableError, UsageError, errorMessage } from '../errors.js';
import { log } from '../log.js';
import { createMailNotifier, mailSettings } from '../notify/mail/index.js';
import { keysFor } from '../queue/keys.js';
import { bullConnection, connectRedis, type RedisTarget } from '../redis/connection.js';
import { startEmbeddedRedis } from '../redis/embedded.js';
import { defaultCapacity } from '../scheduler/capacity.js';
import { ADMIN } from '../scheduler/actor.js';
import { Scheduler } from '../scheduler/scheduler.js';
import { Dashboard } from '../web/dashboard.js';
import { createBackend, type Backend } from './backend.js';
import { CLUSTER_COMMANDS, clusterTool } from './commands/gc-clone.js';
import { gcTool } from './commands/gc.js';
import { runTool } from './commands/index.js';
import type { Tool, ToolServices } from './commands/tool.js';
import { startObservers } from './observers.js';
import { registryControlUrl, startNodeApi } from '../grid/server-relay.js';
import { jobsOf, RemoteJobControl } from '../grid/remote-jobs.js';
import { isNodeTokenCall } from '../grid/node-token-cmd.js';
import { startServerGrid } from '../grid/server-grid.js';
import { NodeTokens } from '../grid/node-tokens.js';
import { NodeRedisUsers } from '../grid/node-redis-users.js';
import { GridParts } from '../grid/grid-parts.js';
import { hostAccel } from '../grid/node-role.js';
import { gcNodesTool, NODE_COMMANDS } from './commands/gc-nodes.js';

export interface Gcd {
  api: ApiServer;
  scheduler: Scheduler;
  backend: Backend;
  redis: 'embedded' | 'external';
  /** Stops everything started, last first; a failing step is logged and the rest still run. */
  close(): Promise<void>;
}

/** The `gc` command: headnodes, exec and clusters, when the backend has them. */
function gcCommand(backend: Backend): Tool | undefined {
  const admin = backend.admin;
  if (!admin) return undefined;
  const clusters = { commands: CLUSTER_COMMANDS, tool: clusterTool(admin.clusters) };
  return (req, s) => gcTool(req, s, admin.headnodes, admin.exec, clusters);
}

export async function composeGcd(settings: Settings): Promise<Gcd> {
  const cleanups: Array<() => Promise<void> | void> = [];
  const close = async (): Promise<void> => {
    for (const c of cleanups.splice(0).reverse()) {
      const t0 = Date.now();
      await Promise.resolve()
        .then(c)
        .catch((e: unknown) => log.error('shutdown step failed', { error: errorMessage(e) }));
      log.debug('shutdown step', { step: c.toString().slice(0, 60), ms: Date.now() - t0 });
    }
  };
  try {
    let target: RedisTarget;
    if (settings.redisUrl) target = { url: settings.redisUrl };
    else {
      const embedded = await startEmbeddedRedis(settings.stateDir, { maxMemoryMiB: settings.redisMaxMemoryMiB, bind: settings.redisBind });
      target = embedded.target;
      cleanups.push(() => embedded.stop());
    }
    const redis: Redis = await connectRedis(target, 3000, { waitWhileDown: true });
    cleanups.push(() => redis.disconnect());

    // The channels exist before the API (headnodes re-attach while the backend opens); a
    // guest's request before the scheduler has recovered is told gcd is starting (503), and
    // nothing a guest sends may throw out of here (docs/security.md).
    // eslint-disable-next-line prefer-const -- assigned once the scheduler has recovered, read earlier by the channels
    let api: ApiServer | undefined;
    const channels = new ChannelServer(settings.stateDir, (req, res, actor) => {
      try {
        if (api) api.handle(req, res, actor);
        else sendError(res, new UnavailableError('gcd is starting; try again'));
      } catch (e) {
        log.error('guest request failed', { error: errorMessage(e) });
        res.destroy();
      }
    });
    cleanups.push(() => channels.closeAll());

    // Admin limits: a broken file at start stops gcd; later a broken edit keeps the old settings.
    // One watcher for jobs and clusters: max_clones comes from the same file.
    const quotas = new QuotaWatcher({
      dir: settings.configDir,
      onReload: (c) => log.info('quota settings reloaded', { source: c.source }),
      onError: (e) => log.error(`quota settings not reloaded, previous ones stay: ${e.message}`),
    });
    const initial = quotas.start();
    cleanups.push(() => quotas.close());

    const backend = await createBackend(settings, channels, () => quotas.current());
    cleanups.push(() => backend.close());

    // The grid (src/grid/): this host in the node registry, and the failure monitor.
    const grid = new GridParts({
      redis,
      keys: keysFor(settings.keyPrefix),
      settings,
      role: 'server',
      runsJobs: settings.serverRunsJobs,
      capacity: defaultCapacity(),
      accel: hostAccel(settings),
    });
    const observers = startObservers(settings);
    const nodeTokens = new NodeTokens(settings.stateDir);
    // Snapshots exported to nodes over NBD (GC_NBD_ADDR); `driver` unexports before releasing.
    // Each node's Redis ACL user (node-<name>) follows its token; saved to the embedded Redis's ACL file.
    const redisUsers = new NodeRedisUsers(redis, settings.keyPrefix, !settings.redisUrl);
    const serverGrid = await startServerGrid({ settings, redis, tokens: nodeTokens, driver: backend.driver, redisUsers });
    cleanups.push(() => serverGrid.close());
    const driver = serverGrid.driver;
    // A grid (GC_NODE_API_ADDR): jobs running on other hosts are controlled there (src/grid).
    const remote: RemoteJobControl | undefined = settings.nodeApiAddr
      ? new RemoteJobControl({
          tokens: nodeTokens,
          controlUrlOf: registryControlUrl(redis, settings.keyPrefix),
          store: jobsOf(() => scheduler),
          self: settings.nodeName,
        })
      : undefined;
    const scheduler = new Scheduler({
      redis,
      connection: bullConnection(target),
      keys: keysFor(settings.keyPrefix),
      serverName: settings.serverName,
      driver,
      stateDir: settings.stateDir,
      capacity: defaultCapacity(),
      killDelayMs: settings.killDelayMs,
      guestDeadlineMs: settings.guestDeadlineMs,
      lockDurationMs: settings.lockDurationMs,
      historyTtlSec: initial.historyTtlSec,
      quotas: () => quotas.current(),
      observe: observers.lifecycle,
      ...(remote ? { remote } : {}),
      host: grid.host,
      largestHost: () => grid.largestHost(),
      dispatch: settings.serverRunsJobs,
    });
    // Job mail (-m/-M) hears every transition, those of the recovery in start() too; closed
    // after the scheduler, so the mails of the jobs it ends on the way down still go.
    const mail = createMailNotifier({
      redis,
      keys: keysFor(settings.keyPrefix),
      serverName: settings.serverName,
      jobs: scheduler.store,
      settings: mailSettings(settings),
    });
    // A crash replay (t.replay) may have been mailed already: no second mail.
    const unsubscribeMail = scheduler.events.subscribe((t) => (t.replay ? undefined : mail.onTransition(t)));
    cleanups.push(async () => {
      unsubscribeMail();
      await mail.close();
    });
    // Before start(): the recovery's state changes are observed too.
    observers.attach(scheduler);

    // The web dashboard (src/web): `gc web token` always; the site itself only with GC_WEB_ADDR.
    const admin = backend.admin;
    const dashboard = new Dashboard({
      stateDir: settings.stateDir,
      keyPrefix: settings.keyPrefix,
      addr: settings.webAddr,
      sampleSec: settings.webSampleSec,
      redis,
      scheduler,
      headnodes: async () => (backend.headnodes.list ? backend.headnodes.list() : []),
      ...(admin ? { clones: () => admin.clusters.list(ADMIN, { all: true }) } : {}),
    });
    const baseGc = gcCommand(backend);
    const gc: Tool = async (req, s) => {
      if (req.argv[0] === 'web') return dashboard.tool(req);
      if (isNodeTokenCall(req.argv)) return serverGrid.tokenTool(req);
      if (NODE_COMMANDS.has(req.argv[0] ?? '')) return gcNodesTool(req, grid.registry);
      if (!baseGc) throw new UsageError('this gcd has no headnodes or clusters (test-double driver): only gc web token');
      return baseGc(req, s);
    };
    const tools: ToolServices = {
      scheduler,
      headnodes: backend.headnodes,
      serverName: settings.serverName,
      clones: remote ? remote.clones(backend.driver) : backend.driver,
      gc,
      ...observers.services,
    };
    const server = new ApiServer({
      scheduler,
      cli: (tool, call) => runTool(tool, call, tools),
      ...(backend.admin ? { clusters: backend.admin.clusters } : {}),
    });
    if (settings.testStartDelayMs > 0) await sleep(settings.testStartDelayMs); // tests: widen the start window
    await grid.join(scheduler);
    cleanups.push(() => grid.close()); // after the scheduler's close: its runs are requeued first
    await scheduler.start();
    cleanups.push(() => scheduler.close());
    await grid.started(scheduler);
    // Only now: until the scheduler has recovered, a guest's call could act on half-recovered state.
    api = server;
    await observers.serveMetrics();
    cleanups.push(() => observers.close());
    await server.listenAdmin(settings.socketPath);
    cleanups.push(() => server.close());
    // Compute nodes reach the server here (src/grid): their output, archives and clones' channels.
    const nodeApi = await startNodeApi(settings, {
      tokens: nodeTokens,
      store: scheduler.store,
      driver,
      guestApi: () => api?.handle,
      dependents: (job) => scheduler.reviewDependentsOf(job),
    });
    if (nodeApi) cleanups.push(() => nodeApi.close());
    await dashboard.start();
    cleanups.push(() => dashboard.close());
    return { api: server, scheduler, backend, redis: settings.redisUrl ? 'external' : 'embedded', close };
  } catch (e) {
    await close();
    throw e;
  }
}
