/**
 * Several server processes on one listening socket (`processes` in the configuration).
 *
 * Why: Node runs a process's JavaScript on one thread, and every request passes through it (HTTP
 * parsing, authentication, the audit append, the answer). On the 2-core bench machine that
 * thread was busy 85–95 % of the time at the peak of `POST /v1/keys/{name}/sign` and of
 * `POST /v1/sessions`, while the HSM worker threads had room to spare: the one thread, not the
 * token or the cores, was the limit. Two processes each bring their own.
 *
 * How: node:cluster. The primary process forks `processes` server processes, which all run
 * `custos serve` and listen on the same address; the primary accepts connections and hands each
 * one to the processes in turn (a keep-alive connection stays with its process). Each process
 * has its own HSM sessions and worker threads on the one token, and its own connection to the
 * one database: the deployment DESIGN.md already describes for several hosts, on one host. What
 * must be shared is in the database (nonces, tokens, audit chain, leases); what each process
 * caches is bounded in time (see SECURITY.md).
 *
 * The primary does no request work. It:
 * - starts the processes and reports the address once every one listens; a process that exits
 *   before it listens stops the start-up, with that process's exit code;
 * - starts a process again when one exits later (after 1 s, doubling to 30 s while they keep
 *   exiting within a minute of their start);
 * - answers `/metrics` for the whole group: the process that got the scrape asks the primary,
 *   which gathers every process's registry and sums them (prom-client's aggregation);
 * - on SIGTERM/SIGINT asks every process to stop (each closes its listener, finishes its
 *   requests and closes its store and HSM sessions) and exits when they have.
 *
 * Background work (rotation scheduler, audit checkpoints, nonce clean-up) runs in process 0 only;
 * a process that replaces process 0 takes it over. The rotation scheduler's lease in the store
 * would keep two schedulers apart anyway.
 */
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { Logger } from './lib/logger.js';

/** The environment variable that tells a server process its index (0 … processes-1). */
const PROCESS_INDEX_ENV = 'CUSTOS_PROCESS_INDEX';

/** This process's index in its cluster, or null outside one. */
export function processIndex(): number | null {
  return cluster.isWorker ? Number(process.env[PROCESS_INDEX_ENV] ?? 0) : null;
}

type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** Messages between the primary and a server process; each carries `custos`. */
type FromMember =
  | { custos: 'listening'; url: string }
  | { custos: 'metrics'; id: number }
  | { custos: 'metrics-json'; id: number; metrics?: MetricsJson; error?: string };
type ToMember = { custos: 'stop' } | { custos: 'metrics'; id: number; text?: string; error?: string } | { custos: 'metrics-json'; id: number };

const isFromMember = (m: unknown): m is FromMember => typeof m === 'object' && m !== null && typeof (m as { custos?: unknown }).custos === 'string';

const RESTART_MIN_MS = 1_000;
const RESTART_MAX_MS = 30_000;
/** A process that ran this long before it exited is restarted after the shortest delay again. */
const STABLE_MS = 60_000;
const METRICS_TIMEOUT_MS = 5_000;
const STOP_TIMEOUT_MS = 12_000;

export interface ClusterHandle {
  /** The address every process listens on. */
  readonly url: string;
  /** Stops every process (each finishes its requests) and resolves when they have exited. */
  stop(): Promise<void>;
}

export class ClusterStartError extends Error {
  constructor(
    message: string,
    /** The exit code of the process that failed (what `custos serve` exits with). */
    readonly exitCode: number,
  ) {
    super(message);
  }
}

/**
 * Primary side: forks `processes` server processes running this same program and resolves once
 * each of them listens.
 * @throws ClusterStartError when a process exits before it listens (the others are stopped)
 */
export function startCluster(opts: { processes: number; log: Logger }): Promise<ClusterHandle> {
  const { processes, log } = opts;
  const members: (Worker | undefined)[] = new Array(processes).fill(undefined);
  const failures = new Array<number>(processes).fill(0);
  const timers = new Set<NodeJS.Timeout>();
  let stopping = false;
  let url: string | undefined;
  let listening = 0;
  let settle: { resolve: (h: ClusterHandle) => void; reject: (e: Error) => void } | undefined;

  // Metrics scrapes being gathered: the primary's id → who asked and what came back.
  const scrapes = new Map<number, { from: Worker; fromId: number; want: number; got: MetricsJson[]; timer: NodeJS.Timeout }>();
  let scrapeSeq = 0;
  const answerScrape = (id: number, error?: string): void => {
    const s = scrapes.get(id);
    if (!s) return;
    scrapes.delete(id);
    clearTimeout(s.timer);
    const reply = async (): Promise<ToMember> => {
      if (error !== undefined) return { custos: 'metrics', id: s.fromId, error };
      try {
        return { custos: 'metrics', id: s.fromId, text: await AggregatorRegistry.aggregate(s.got).metrics() };
      } catch (e) {
        return { custos: 'metrics', id: s.fromId, error: (e as Error).message };
      }
    };
    void reply().then((r) => {
      if (s.from.isConnected()) s.from.send(r);
    });
  };

  const live = (): Worker[] => members.filter((w): w is Worker => w !== undefined && w.isConnected());

  const onMessage = (index: number, w: Worker, m: unknown): void => {
    if (!isFromMember(m)) return;
    if (m.custos === 'listening') {
      if (url === undefined) url = m.url;
      log.info({ process: index, pid: w.process.pid }, 'server process listening');
      if (settle && ++listening === processes) {
        settle.resolve(handle);
        settle = undefined;
      }
    } else if (m.custos === 'metrics') {
      const id = ++scrapeSeq;
      const targets = live();
      const timer = setTimeout(() => answerScrape(id, 'a server process did not answer in time'), METRICS_TIMEOUT_MS);
      scrapes.set(id, { from: w, fromId: m.id, want: targets.length, got: [], timer });
      for (const t of targets) t.send({ custos: 'metrics-json', id } satisfies ToMember);
    } else if (m.custos === 'metrics-json') {
      const s = scrapes.get(m.id);
      if (!s) return;
      if (m.error !== undefined || m.metrics === undefined) return answerScrape(m.id, m.error ?? 'no metrics');
      s.got.push(m.metrics);
      if (s.got.length >= s.want) answerScrape(m.id);
    }
  };

  const fork = (index: number): void => {
    const started = Date.now();
    const w = cluster.fork({ [PROCESS_INDEX_ENV]: String(index) });
    members[index] = w;
    w.on('message', (m: unknown) => onMessage(index, w, m));
    w.on('exit', (code: number | null, signal: string | null) => {
      if (members[index] === w) members[index] = undefined;
      if (stopping) return;
      if (settle) {
        // Start-up failed: that process said why on stderr.
        const e = new ClusterStartError(`server process ${index} exited before it listened (${signal ?? `exit code ${code}`})`, code && code > 0 ? code : 1);
        settle.reject(e);
        settle = undefined;
        void stopAll();
        return;
      }
      failures[index] = Date.now() - started >= STABLE_MS ? 0 : failures[index]! + 1;
      const delay = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** Math.max(0, failures[index]! - 1));
      log.error({ process: index, pid: w.process.pid, code, signal, restartInMs: delay }, 'server process exited; starting it again');
      const t = setTimeout(() => {
        timers.delete(t);
        if (!stopping) fork(index);
      }, delay);
      timers.add(t);
    });
  };

  const stopAll = async (): Promise<void> => {
    stopping = true;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    const all = members.filter((w): w is Worker => w !== undefined && w.process.exitCode === null && w.process.signalCode === null);
    await Promise.all(
      all.map(
        (w) =>
          new Promise<void>((resolve) => {
            const kill = setTimeout(() => w.process.kill('SIGKILL'), STOP_TIMEOUT_MS);
            w.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            if (w.isConnected()) w.send({ custos: 'stop' } satisfies ToMember);
            else w.process.kill('SIGTERM');
          }),
      ),
    );
  };

  const handle: ClusterHandle = {
    get url() {
      return url ?? '';
    },
    stop: stopAll,
  };

  return new Promise<ClusterHandle>((resolve, reject) => {
    settle = { resolve, reject };
    for (let i = 0; i < processes; i++) fork(i);
  });
}

/** Server-process side: what a process of a cluster tells and asks its primary. */
export interface ClusterMember {
  readonly index: number;
  /** Tells the primary this process listens. */
  listening(url: string): void;
  /** The metrics of the whole group, in Prometheus text format (through the primary). */
  groupMetrics(): Promise<string>;
}

/**
 * Joins the cluster this process was forked into, or returns null outside one. `registry` is
 * what this process reports to a scrape; `stop` runs when the primary asks this process to stop
 * or goes away.
 */
export function joinCluster(registry: Registry, stop: () => void): ClusterMember | null {
  const index = processIndex();
  if (index === null || !process.send) return null;
  const send = (m: FromMember): void => {
    process.send?.(m);
  };
  const waiting = new Map<number, { resolve: (t: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  let seq = 0;
  process.on('message', (m: unknown) => {
    if (typeof m !== 'object' || m === null) return;
    const msg = m as ToMember;
    if (msg.custos === 'stop') stop();
    else if (msg.custos === 'metrics-json') {
      registry.getMetricsAsJSON().then(
        (metrics) => send({ custos: 'metrics-json', id: msg.id, metrics }),
        (e: unknown) => send({ custos: 'metrics-json', id: msg.id, error: (e as Error).message }),
      );
    } else if (msg.custos === 'metrics') {
      const w = waiting.get(msg.id);
      if (!w) return;
      waiting.delete(msg.id);
      clearTimeout(w.timer);
      if (msg.text !== undefined) w.resolve(msg.text);
      else w.reject(new Error(msg.error ?? 'no metrics'));
    }
  });
  // The primary is gone (killed): nobody hands out connections any more; stop.
  process.on('disconnect', stop);
  return {
    index,
    listening: (url) => send({ custos: 'listening', url }),
    groupMetrics: () =>
      new Promise<string>((resolve, reject) => {
        const id = ++seq;
        const timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Error('the primary process did not answer in time'));
        }, METRICS_TIMEOUT_MS + 1_000);
        waiting.set(id, { resolve, reject, timer });
        send({ custos: 'metrics', id });
      }),
  };
}
