/**
 * Load generation for the HTTP figures: a keep-alive JSON client, closed-loop runs at a fixed
 * concurrency, and open-loop runs at a fixed arrival rate. In the open loop a request's latency is
 * counted from the instant it was scheduled, not from when it got a socket, so a server that
 * falls behind shows it in p99 (no coordinated omission).
 */
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

export interface JsonResponse {
  status: number;
  body: unknown;
}

/**
 * A keep-alive HTTP/1.1 JSON client for one loopback base URL, over plain sockets: one request at
 * a time per connection (no pipelining), requests waiting for a free connection. It exists because
 * node:http's client costs a few hundred µs of CPU per request, which on a 2-core machine is taken
 * from the server being measured. It understands only what custos answers: a status line, headers
 * and a Content-Length body (chunked bodies are refused as an error).
 */
export class JsonClient {
  readonly #host: string;
  readonly #port: number;
  readonly #max: number;
  readonly #idle: Conn[] = [];
  readonly #all: Conn[] = [];
  readonly #waiting: ((c: Conn) => void)[] = [];

  constructor(baseUrl: string, maxSockets: number) {
    const u = new URL(baseUrl);
    if (u.protocol !== 'http:') throw new Error('the bench client speaks plain HTTP to loopback only');
    this.#host = u.hostname;
    this.#port = Number(u.port);
    this.#max = maxSockets;
  }

  async post(path: string, body: unknown, token?: string): Promise<JsonResponse> {
    const payload = Buffer.from(JSON.stringify(body));
    const head = `POST ${path} HTTP/1.1\r\nHost: ${this.#host}:${this.#port}\r\nConnection: keep-alive\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${payload.length}\r\n${token !== undefined ? `Authorization: Bearer ${token}\r\n` : ''}\r\n`;
    const c = await this.#take();
    try {
      const { status, text } = await c.send(Buffer.concat([Buffer.from(head, 'latin1'), payload]));
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        /* not JSON: kept as text for the error message */
      }
      return { status, body: parsed };
    } finally {
      this.#give(c);
    }
  }

  #take(): Promise<Conn> {
    for (;;) {
      const c = this.#idle.pop();
      if (c === undefined) break;
      if (!c.closed) return Promise.resolve(c);
    }
    if (this.#all.length < this.#max) {
      const c = new Conn(this.#host, this.#port, (dead) => {
        const i = this.#all.indexOf(dead);
        if (i >= 0) this.#all.splice(i, 1);
      });
      this.#all.push(c);
      return Promise.resolve(c);
    }
    return new Promise((r) => this.#waiting.push(r));
  }

  #give(c: Conn): void {
    if (c.closed) {
      // A replacement connection for whoever waits.
      const w = this.#waiting.shift();
      if (w) void this.#take().then(w);
      return;
    }
    const w = this.#waiting.shift();
    if (w) w(c);
    else this.#idle.push(c);
  }

  close(): void {
    for (const c of this.#all) c.destroy();
  }
}

const RESPONSE_TIMEOUT_MS = 30_000;

class Conn {
  readonly #socket: Socket;
  #buf: Buffer = Buffer.alloc(0);
  #pending: { resolve: (r: { status: number; text: string }) => void; reject: (e: Error) => void } | undefined;
  closed = false;

  constructor(host: string, port: number, onClose: (c: Conn) => void) {
    this.#socket = connect({ host, port, noDelay: true });
    this.#socket.on('data', (chunk: Buffer) => {
      this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
      this.#parse();
    });
    const fail = (e: Error): void => {
      this.closed = true;
      onClose(this);
      const p = this.#pending;
      this.#pending = undefined;
      p?.reject(e);
    };
    this.#socket.on('error', fail);
    this.#socket.on('close', () => fail(new Error('connection closed')));
  }

  send(req: Buffer): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      // A request that gets no answer fails the run with a message instead of hanging it.
      const timer = setTimeout(() => {
        this.#pending = undefined;
        reject(new Error(`no response within ${RESPONSE_TIMEOUT_MS} ms`));
        this.destroy();
      }, RESPONSE_TIMEOUT_MS);
      this.#pending = {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.#socket.write(req);
    });
  }

  #parse(): void {
    const end = this.#buf.indexOf('\r\n\r\n');
    if (end < 0 || this.#pending === undefined) return;
    const head = this.#buf.toString('latin1', 0, end);
    const status = Number(head.slice(9, 12));
    if (/\r\ntransfer-encoding:/i.test(head)) {
      this.#pending.reject(new Error('chunked response'));
      this.destroy();
      return;
    }
    const m = /\r\ncontent-length: *(\d+)/i.exec(head);
    const len = m ? Number(m[1]) : 0;
    if (this.#buf.length < end + 4 + len) return;
    const text = this.#buf.toString('utf8', end + 4, end + 4 + len);
    this.#buf = this.#buf.subarray(end + 4 + len);
    const p = this.#pending;
    this.#pending = undefined;
    p.resolve({ status, text });
  }

  destroy(): void {
    this.closed = true;
    this.#socket.destroy();
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
  /**
   * Open loop only: arrivals stopped early because more than half a second's worth of them waited for
   * a free slot (the server cannot keep up at this rate; p50/p99 then show the backlog).
   */
  saturated?: boolean;
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
  let saturated = false;
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
    if (waiting.length > ratePerSec / 2) {
      saturated = true;
      break;
    }
    const now = performance.now();
    while (sent < total && start + sent * interval <= now) {
      launch(start + sent * interval);
      sent++;
    }
    // Sleep until the next arrival is due. Timers have 1 ms granularity, so arrivals that fall due
    // meanwhile are launched together on the next turn, late by at most about a millisecond; their
    // latency still counts from when they were due. (Polling with setImmediate instead would keep
    // this process busy on a core the server needs: on a 2-core machine that is the server's loss.)
    const wait = start + sent * interval - performance.now();
    await new Promise<void>((r) => setTimeout(r, Math.max(1, Math.floor(wait))));
  }
  await Promise.all(inflight);
  const r = summarize(lat, errors, saturated ? performance.now() - start : Math.max(durationMs, performance.now() - start), firstError);
  return { ...r, targetPerSec: ratePerSec, ...(saturated ? { saturated } : {}) };
}
