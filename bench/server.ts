/**
 * The custos server as the benchmark runs it: a child process with the production wiring
 * (composeService: PKCS#11 KeyStore with its worker threads on the SoftHSM2 token the parent made,
 * SQLite in a temp folder, policies from files), listening on a free loopback port. With
 * CUSTOS_PROCESSES > 1 it is the primary of a cluster of that many server processes, as
 * `custos serve` runs them (src/cluster.ts): it relays the messages below to them and sums
 * their figures; process 0 registers the hosts and makes the token and keys.
 *
 * The parent talks to it over the IPC channel:
 * - child → parent `{type: 'ready', url, token, keys, sessionCopies}` once it listens (token: an admin API
 *   token; sessionCopies: whether the HSM adapter signs with session copies of the keys);
 * - parent → child `{type: 'hosts', hosts}`: registers software-AK hosts directly in the store
 *   (there is no swtpm behind them, so they skip enrollment), answered with `{type: 'hosts-ok'}`;
 * - parent → child `{type: 'usage'}` → `{type: 'usage', cpuUs, elu}` since the previous call;
 * - parent → child `{type: 'stop'}`: closes everything and exits.
 * Configuration comes from CUSTOS_* variables set by the parent (PIN in a file, never argv).
 */
import cluster, { type Worker } from 'node:cluster';
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks';
import { pino } from 'pino';
import { joinCluster, startCluster } from '../src/cluster.js';
import { composeService } from '../src/compose.js';
import { loadConfig } from '../src/config/config.js';
import { applyHeapGrowingPercent } from '../src/lib/v8-heap.js';
import { Metrics } from '../src/http/metrics.js';
import { listen } from '../src/server.js';
import type { HostRecord } from '../src/store/records.js';

export interface BenchHost {
  id: string;
  akPublic: string;
  akName: string;
  akQualifiedName: string;
}

export type ToServer = { type: 'hosts'; hosts: BenchHost[] } | { type: 'usage' } | { type: 'stop' };
export type FromServer =
  | { type: 'ready'; url: string; token: string; keys: { ec: string; rsa: string }; sessionCopies: boolean }
  | { type: 'hosts-ok' }
  | { type: 'usage'; cpuUs: number; mainCpuUs: number; elu: number; loopDelayP99Ms: number; loopDelayMaxMs: number; serverP50Ms: number; serverP99Ms: number }
  | { type: 'error'; message: string };

/** A server process's figures, for its primary to sum: the latencies themselves, to merge. */
type MemberUsage = Omit<Extract<FromServer, { type: 'usage' }>, 'serverP50Ms' | 'serverP99Ms'> & { durations: number[] };

const quantile = (sorted: number[], p: number): number => Math.round((sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0) * 100) / 100;

const send = (m: FromServer): void => {
  process.send?.(m);
};

async function main(): Promise<void> {
  const config = loadConfig(process.env, process.cwd());
  // As `custos serve` does (src/cli/serve.ts).
  applyHeapGrowingPercent(config.heapGrowingPercent);
  const log = pino({ level: process.env.BENCH_LOG_LEVEL ?? 'silent' }, pino.destination(2));
  if (config.processes > 1 && cluster.isPrimary) return primary(config.processes);
  // No EK trust anchors: the bench hosts are registered directly, never enrolled.
  const service = await composeService(config, log, { anchors: { certificates: [] }, metrics: new Metrics({ defaultMetrics: false }) });
  const { server, url } = await listen(service.app, config, log);
  // Server-side latency of each request, from the request event to the response's 'finish',
  // reported with each usage figure: the client's latency minus this is time outside the server
  // process's handling (socket queues, scheduling of the two shared cores, the generator itself).
  let durations: number[] = [];
  server.on('request', (_req, res) => {
    const t = performance.now();
    res.once('finish', () => durations.push(performance.now() - t));
  });
  const shutdown = async (): Promise<void> => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await service.close();
    process.exit(0);
  };
  const member = joinCluster(service.deps.metrics.registry, () => void shutdown());
  const first = member === null || member.index === 0;
  const { token } = first ? await service.deps.tokens.create('system:bench', { name: 'bench admin', role: 'admin' }) : { token: '' };
  if (first) await service.deps.keys.createIfMissing('system:bench', { name: 'bench-ec', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' });
  if (first) await service.deps.keys.createIfMissing('system:bench', { name: 'bench-rsa', type: 'rsa-2048', purpose: 'sign', rotationPolicy: 'manual' });
  let cpu = process.cpuUsage();
  // The main thread's own CPU time (ns on a CPU, /proc/thread-self/schedstat; read on the main
  // thread, which handles these messages): the event loop is the serial part of every request.
  // NaN where there is no such file (not Linux): the rows then leave the figure out.
  const mainCpuNs = (): number => {
    try {
      return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ', 1)[0]);
    } catch {
      return Number.NaN;
    }
  };
  let mainCpu = mainCpuNs();
  let elu = performance.eventLoopUtilization();
  // Event-loop delay of the server's main thread between two usage calls: a stall (GC pause,
  // a long synchronous step) shows here before it shows in the client's p99.
  // The histogram holds whole intervals between samples: the sampling interval is subtracted.
  const RESOLUTION_MS = 2;
  const delay = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  delay.enable();

  process.on('message', (m: ToServer) => {
    void (async () => {
      try {
        if (m.type === 'hosts') {
          const now = new Date().toISOString();
          await service.deps.store.tx(async (t) => {
            for (const h of m.hosts) {
              const rec: HostRecord = {
                id: h.id, status: 'active', akName: h.akName, akPublic: h.akPublic, akQualifiedName: h.akQualifiedName,
                ekPublicHash: '00'.repeat(32), ekCertificateSubject: null, ekCertificateIssuer: null, labels: { role: 'bench' },
                policyId: 'bench-hosts', enrolledAt: now, revokedAt: null, lastAttestation: null, lastClock: null,
              };
              await t.insertHost(rec);
            }
          });
          send({ type: 'hosts-ok' });
        } else if (m.type === 'usage') {
          const c = process.cpuUsage(cpu);
          const e = performance.eventLoopUtilization(elu);
          const mainNow = mainCpuNs();
          const mainCpuUs = Math.round((mainNow - mainCpu) / 1000);
          mainCpu = mainNow;
          cpu = process.cpuUsage();
          elu = performance.eventLoopUtilization();
          const beyond = (ns: number): number => Math.max(0, Math.round((ns / 1e6 - RESOLUTION_MS) * 100) / 100);
          const loopDelayP99Ms = beyond(delay.percentile(99));
          const loopDelayMaxMs = beyond(delay.max);
          delay.reset();
          const d = durations;
          durations = [];
          const u = { type: 'usage' as const, cpuUs: c.user + c.system, mainCpuUs, elu: e.utilization, loopDelayP99Ms, loopDelayMaxMs };
          if (member) {
            process.send?.({ ...u, durations: d.map((x) => Math.round(x * 100) / 100) } satisfies MemberUsage);
          } else {
            d.sort((a, b) => a - b);
            send({ ...u, serverP50Ms: quantile(d, 0.5), serverP99Ms: quantile(d, 0.99) });
          }
        } else if (m.type === 'stop') {
          await shutdown();
        }
      } catch (e) {
        send({ type: 'error', message: (e as Error).message });
      }
    })();
  });
  if (process.env.BENCH_STALL_LOG) watchStalls();
  if (first) {
    const sessionCopies = /custos_hsm_pool\{measure="session_copies"\} 1/.test(await service.deps.metrics.registry.metrics());
    send({ type: 'ready', url, token, keys: { ec: 'bench-ec', rsa: 'bench-rsa' }, sessionCopies });
  }
  member?.listening(url);
}

/**
 * The primary of a cluster: starts the server processes as `custos serve` does, then relays the
 * parent's messages (hosts to process 0; usage and stop to all) and sums the usage answers.
 */
async function primary(processes: number): Promise<void> {
  let ready: { m: FromServer; from: Worker } | undefined;
  let usages: MemberUsage[] = [];
  let cpu = process.cpuUsage();
  cluster.on('message', (w, m: FromServer | MemberUsage) => {
    if (m.type === 'ready') ready = { m, from: w };
    else if (m.type === 'hosts-ok' || m.type === 'error') send(m);
    else if (m.type === 'usage' && 'durations' in m) {
      usages.push(m);
      if (usages.length < processes) return;
      const us = usages;
      usages = [];
      // The primary's own CPU (it accepts the connections) counts with the server's.
      const own = process.cpuUsage(cpu);
      cpu = process.cpuUsage();
      const d = us.flatMap((u) => u.durations).sort((a, b) => a - b);
      send({
        type: 'usage', cpuUs: us.reduce((n, u) => n + u.cpuUs, own.user + own.system), mainCpuUs: us.reduce((n, u) => n + u.mainCpuUs, 0),
        elu: us.reduce((n, u) => n + u.elu, 0) / us.length, loopDelayP99Ms: Math.max(...us.map((u) => u.loopDelayP99Ms)),
        loopDelayMaxMs: Math.max(...us.map((u) => u.loopDelayMaxMs)), serverP50Ms: quantile(d, 0.5), serverP99Ms: quantile(d, 0.99),
      });
    }
  });
  const group = await startCluster({ processes, log: pino({ level: 'silent' }) });
  const members = (): Worker[] => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
  process.on('message', (m: ToServer) => {
    if (m.type === 'hosts') ready?.from.send(m);
    else if (m.type === 'usage') for (const w of members()) w.send(m);
    else if (m.type === 'stop') void group.stop().finally(() => process.exit(0));
  });
  if (!ready) throw new Error('server process 0 listened without its ready message');
  send(ready.m);
}

/** perf_hooks' GC kinds (NODE_PERFORMANCE_GC_*). */
const GC_KINDS: Record<number, string> = { 1: 'scavenge', 2: 'minor-mc', 4: 'mark-compact', 8: 'incremental', 16: 'weak-callbacks' };

/**
 * BENCH_STALL_LOG=1: every 5 ms a timer checks how long the event loop took to come back; a gap
 * over 15 ms (over BENCH_STALL_LOG ms when that is a number above 5) goes to stderr (between the
 * rows it falls in) with where the main thread's time went, from /proc/thread-self/schedstat: ran (on a CPU: JavaScript, GC, a long synchronous
 * call), runqueue (ready but waiting for one of the shared cores) or blocked (neither: a system
 * call, a lock, the disk). GC pauses over 3 ms that overlap the gap are named with it.
 */
function watchStalls(): void {
  const over = Number(process.env.BENCH_STALL_LOG) > 5 ? Number(process.env.BENCH_STALL_LOG) : 15;
  const gcs: { t: number; d: number; kind: number }[] = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.duration > 3) gcs.push({ t: e.startTime, d: e.duration, kind: (e as unknown as { detail: { kind: number } }).detail.kind });
  }).observe({ entryTypes: ['gc'] });
  const sched = (): number[] => readFileSync('/proc/thread-self/schedstat', 'utf8').trim().split(' ').map(Number);
  let last = performance.now();
  let lastSched = sched();
  setInterval(() => {
    const now = performance.now();
    const gap = now - last;
    const sc = sched();
    const ran = (sc[0]! - lastSched[0]!) / 1e6;
    const queued = (sc[1]! - lastSched[1]!) / 1e6;
    last = now;
    lastSched = sc;
    while (gcs.length > 0 && gcs[0]!.t + gcs[0]!.d < now - 1000) gcs.shift();
    if (gap <= over) return;
    const near = gcs.filter((g) => g.t + g.d > now - gap - 1 && g.t < now + 1).map((g) => `${GC_KINDS[g.kind] ?? g.kind} ${g.d.toFixed(1)} ms`);
    process.stderr.write(
      `  STALL ${gap.toFixed(1)} ms at ${(now / 1000).toFixed(2)} s: ran ${ran.toFixed(1)}, runqueue ${queued.toFixed(1)}, blocked ${Math.max(0, gap - ran - queued).toFixed(1)}${near.length > 0 ? `; GC: ${near.join(', ')}` : ''}\n`,
    );
  }, 5).unref();
}

main().catch((e: unknown) => {
  send({ type: 'error', message: (e as Error).stack ?? String(e) });
  process.exit(1);
});
