/**
 * Open-loop load from bench/openloop.c, a small C generator (epoll, timerfd) built here with the
 * machine's C compiler: requests due at a fixed rate, latency counted from when each was due.
 * bench/load.ts's Node open loop does the same, but costs the server 35–45 µs of CPU per request
 * on the two cores they share, and its own event-loop stalls count in the p99 it reports; this
 * one costs a few µs and does not collect garbage.
 *
 * The bearer token and the body reach the generator through its environment, never its command
 * line.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunResult } from './load.js';
import { runGenerator } from './wrk.js';

interface OpenLoopSummary {
  due: number;
  ok: number;
  errors: number;
  status: number;
  unanswered: number;
  durationUs: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  saturated: 0 | 1;
}

export interface NativeOpenLoopRun extends RunResult {
  generator: 'openloop.c';
  /** CPU time of the generator process per request (µs). */
  generatorCpuUsPerOp: number;
  maxMs: number;
}

/** The C source: next to this file in the repository (the compiled bench runs from .bench/bench/). */
function source(): string | undefined {
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const p of [join(here, 'openloop.c'), join(here, '..', '..', 'bench', 'openloop.c')]) if (existsSync(p)) return p;
  return undefined;
}

/**
 * Builds the generator into `dir`; returns its path, or the reason it cannot be built (no C
 * compiler, say), in which case the caller uses the Node generator.
 */
export function buildOpenLoop(dir: string): { path: string } | { reason: string } {
  const src = source();
  if (src === undefined) return { reason: 'bench/openloop.c not found' };
  const out = join(dir, 'openloop');
  // cc, else gcc, else g++ told the source is C (node-gyp's compiler, there wherever pkcs11js built).
  for (const [compiler, lang] of [['cc', []], ['gcc', []], ['g++', ['-x', 'c']]] as const) {
    const r = spawnSync(compiler, ['-O2', '-Wall', ...lang, '-o', out, src], { encoding: 'utf8' });
    if (r.error !== undefined) continue;
    if (r.status !== 0) return { reason: `${compiler} failed: ${(r.stderr ?? '').slice(0, 300)}` };
    return { path: out };
  }
  return { reason: 'no C compiler (cc, gcc or g++)' };
}

/**
 * POSTs `body` with the bearer `token` to `url` + `path` at `ratePerSec` for `durationMs`, over
 * `connections` keep-alive connections. Rates count successful (2xx) answers only.
 */
export async function nativeOpenLoop(binary: string, opts: { url: string; path: string; token: string; body: unknown; ratePerSec: number; durationMs: number; connections: number }): Promise<NativeOpenLoopRun> {
  const u = new URL(opts.url);
  const { summary: s, cpuUs: cpu } = await runGenerator<OpenLoopSummary>(binary, [u.hostname, u.port, opts.path, String(opts.ratePerSec), String(opts.durationMs), String(opts.connections)], opts, 'OPENLOOP_JSON');
  const errors = s.errors + s.status + s.unanswered;
  const elapsedMs = s.saturated ? s.durationUs / 1000 : Math.max(opts.durationMs, s.durationUs / 1000);
  return {
    opsPerSec: Math.round((s.ok * 1000) / elapsedMs),
    ok: s.ok,
    errors,
    p50Ms: Math.round(s.p50Us / 10) / 100,
    p99Ms: Math.round(s.p99Us / 10) / 100,
    maxMs: Math.round(s.maxUs / 10) / 100,
    targetPerSec: opts.ratePerSec,
    ...(s.saturated ? { saturated: true } : {}),
    generator: 'openloop.c',
    generatorCpuUsPerOp: Math.round(cpu / Math.max(1, s.due)),
    ...(errors > 0 ? { firstError: `openloop: ${s.status} non-2xx, ${s.errors} socket errors, ${s.unanswered} unanswered` } : {}),
  };
}
