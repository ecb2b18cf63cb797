/**
 * Load generation for the HTTP figures: a keep-alive JSON client, closed-loop runs at a fixed
 * concurrency, and open-loop runs at a fixed arrival rate. In the open loop a request's latency is
 * counted from the instant it was scheduled, not from when it got a socket, so a server that
 * falls behind shows it in p99 (no coordinated omission).
 */
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';

export interface JsonResponse {
  status: number;
  body: unknown;
}

/** A keep-alive JSON client for one base URL. */
export class JsonClient {
  readonly #agent: Agent;
  readonly #host: string;
  readonly #port: number;

  constructor(baseUrl: string, maxSockets: number) {
    const u = new URL(baseUrl);
    this.#host = u.hostname;
    this.#port = Number(u.port);
    this.#agent = new Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, scheduling: 'lifo' });
  }

  post(path: string, body: unknown, token?: string): Promise<JsonResponse> {
    const payload = Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': payload.length };
    if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
    return new Promise((resolve, reject) => {
      const req = request({ agent: this.#agent, host: this.#host, port: this.#port, method: 'POST', path, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            /* not JSON: kept as text for the error message */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}

export interface RunResult {
  /** Successful operations per second over the run. */
  opsPerSec: number;
  ok: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
  /** Open loop only: the rate asked for. */
  targetPerSec?: number;
  /** First error seen, for the report. */
  firstError?: string;
}

function summarize(lat: number[], errors: number, elapsedMs: number, firstError: string | undefined): RunResult {
  lat.sort((a, b) => a - b);
  const q = (p: number): number => Math.round((lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] ?? 0) * 100) / 100;
  return {
    opsPerSec: Math.round((lat.length * 1000) / elapsedMs),
    ok: lat.length,
    errors,
    p50Ms: q(0.5),
    p99Ms: q(0.99),
    ...(firstError !== undefined ? { firstError } : {}),
  };
}

/** One operation; `worker` is the caller's slot (0..concurrency-1 in the closed loop). */
export type Op = (worker: number) => Promise<void>;

/** `concurrency` callers, each starting its next operation as soon as the previous one ends. */
export async function closedLoop(op: Op, concurrency: number, durationMs: number): Promise<RunResult> {
  const lat: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const start = performance.now();
  const end = start + durationMs;
  const worker = async (w: number): Promise<void> => {
    while (performance.now() < end) {
      const t = performance.now();
      try {
        await op(w);
        lat.push(performance.now() - t);
      } catch (e) {
        errors++;
        firstError ??= (e as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  return summarize(lat, errors, performance.now() - start, firstError);
}

/**
 * Arrivals every 1/rate seconds for `durationMs`, each started when due whatever is in flight.
 * `slots` bounds how many run at once (operations that need an exclusive resource, such as one
 * in-flight quote per host, wait for a slot; that wait counts in their latency).
 */
export async function openLoop(op: Op, ratePerSec: number, durationMs: number, slots = 1024): Promise<RunResult> {
  const lat: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const free = Array.from({ length: slots }, (_, i) => slots - 1 - i);
  const waiting: ((slot: number) => void)[] = [];
  const take = (): Promise<number> => {
    const s = free.pop();
    return s !== undefined ? Promise.resolve(s) : new Promise((r) => waiting.push(r));
  };
  const give = (s: number): void => {
    const w = waiting.shift();
    if (w) w(s);
    else free.push(s);
  };
  const interval = 1000 / ratePerSec;
  const total = Math.floor((durationMs * ratePerSec) / 1000);
  const inflight: Promise<void>[] = [];
  const start = performance.now();
  let sent = 0;
  const launch = (due: number): void => {
    inflight.push((async () => {
      const slot = await take();
      try {
        await op(slot);
        lat.push(performance.now() - due);
      } catch (e) {
        errors++;
        firstError ??= (e as Error).message;
      } finally {
        give(slot);
      }
    })());
  };
  while (sent < total) {
    const now = performance.now();
    while (sent < total && start + sent * interval <= now) {
      launch(start + sent * interval);
      sent++;
    }
    // Yield to the event loop until the next arrival is due (timers have ~1 ms granularity, so
    // arrivals that fall due meanwhile are launched together on the next turn).
    const wait = start + sent * interval - performance.now();
    await new Promise<void>((r) => (wait > 1 ? setTimeout(r, Math.floor(wait)) : setImmediate(r)));
  }
  await Promise.all(inflight);
  const r = summarize(lat, errors, Math.max(durationMs, performance.now() - start), firstError);
  return { ...r, targetPerSec: ratePerSec };
}
