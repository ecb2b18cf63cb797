/**
 * Open-loop load from bench/openloop.c, a small C generator (epoll, timerfd) built here with the
 * machine's C compiler: requests due at a fixed rate, latency counted from when each was due.
 * bench/load.ts's Node open loop does the same, but costs the server 35–45 µs of CPU per request
 * on the two cores they share, and its own event-loop stalls count in the p99 it reports; this
 * one costs a few µs and does not collect garbage.
 *
 * Built with libcrypto, it also plays the enclaves of the sessions rows (challenge, quote signed
 * with a software AK, session request), open or closed loop: the Node generator spends 120–250 µs
 * of the shared cores per session there.
 *
 * The bearer token and the body reach the generator through its environment, never its command
 * line.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SoftAk } from '../test/helpers/soft-tpm.js';
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
  /** Sessions only. */
  challengeP50Us?: number;
  challengeP99Us?: number;
  sessionP50Us?: number;
  sessionP99Us?: number;
  ownP50Us: number;
  ownP99Us: number;
  ownMaxUs: number;
  wireP50Us: number;
  wireP99Us: number;
  p999Us: number;
  over10Ms: number;
}

export interface NativeOpenLoopRun extends RunResult {
  generator: 'openloop.c';
  /** CPU time of the generator process per request (µs). */
  generatorCpuUsPerOp: number;
  maxMs: number;
  /** Operations due (open loop) or started (closed loop). */
  operations: number;
  /** Sessions: p50/p99 (ms) of the time to the challenge's answer (from when due) and from there to the session's. */
  split?: { challengeMs: [number, number]; sessionMs: [number, number] };
  /**
   * The generator's own time in each operation (late writes for want of a core, answers waiting
   * in its sockets, quotes signed between the two requests of a session): p50/p99/max in ms; and
   * p50/p99 of each operation's latency less its own time (see bench/openloop.c).
   */
  own: { p50Ms: number; p99Ms: number; maxMs: number };
  lessOwn: { p50Ms: number; p99Ms: number };
  p999Ms: number;
  /** Operations that took more than 10 ms. */
  over10Ms: number;
}

/** µs → ms with two decimals. */
const ms = (us: number): number => Math.round(us / 10) / 100;

/** The C source: next to this file in the repository (the compiled bench runs from .bench/bench/). */
function source(): string | undefined {
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const p of [join(here, 'openloop.c'), join(here, '..', '..', 'bench', 'openloop.c')]) if (existsSync(p)) return p;
  return undefined;
}

/**
 * Builds the generator into `dir`; returns its path and whether it can play sessions (that needs
 * OpenSSL's headers, libssl-dev), or the reason it cannot be built (no C compiler, say), in which
 * case the caller uses the Node generator.
 */
export function buildOpenLoop(dir: string): { path: string; sessions: true } | { path: string; sessions: false; reason: string } | { reason: string } {
  const src = source();
  if (src === undefined) return { reason: 'bench/openloop.c not found' };
  const out = join(dir, 'openloop');
  // cc, else gcc, else g++ told the source is C (node-gyp's compiler, there wherever pkcs11js built).
  for (const [compiler, lang] of [['cc', []], ['gcc', []], ['g++', ['-x', 'c']]] as const) {
    const withSessions = spawnSync(compiler, ['-O2', '-Wall', '-DOPENLOOP_SESSIONS', ...lang, '-o', out, src, '-lcrypto'], { encoding: 'utf8' });
    if (withSessions.error !== undefined) continue;
    if (withSessions.status === 0) return { path: out, sessions: true };
    const r = spawnSync(compiler, ['-O2', '-Wall', ...lang, '-o', out, src], { encoding: 'utf8' });
    if (r.status !== 0) return { reason: `${compiler} failed: ${(r.stderr ?? '').slice(0, 300)}` };
    return { path: out, sessions: false, reason: `no libcrypto to build against (libssl-dev): ${(withSessions.stderr ?? '').split('\n')[0]!.slice(0, 200)}` };
  }
  return { reason: 'no C compiler (cc, gcc or g++)' };
}

/**
 * POSTs `body` with the bearer `token` to `url` + `path` at `ratePerSec` for `durationMs`, over
 * `connections` keep-alive connections. Rates count successful (2xx) answers only.
 */
export async function nativeOpenLoop(binary: string, opts: { url: string; path: string; token: string; body?: unknown; env?: Record<string, string>; ratePerSec: number; durationMs: number; connections: number }): Promise<NativeOpenLoopRun> {
  const u = new URL(opts.url);
  const { summary: s, cpuUs: cpu } = await runGenerator<OpenLoopSummary>(binary, [u.hostname, u.port, opts.path, String(opts.ratePerSec), String(opts.durationMs), String(opts.connections)], opts, 'OPENLOOP_JSON');
  const errors = s.errors + s.status + s.unanswered;
  const elapsedMs = s.saturated ? s.durationUs / 1000 : Math.max(opts.durationMs, s.durationUs / 1000);
  return {
    opsPerSec: Math.round((s.ok * 1000) / elapsedMs),
    ok: s.ok,
    errors,
    p50Ms: ms(s.p50Us),
    p99Ms: ms(s.p99Us),
    maxMs: ms(s.maxUs),
    ...(opts.ratePerSec > 0 ? { targetPerSec: opts.ratePerSec } : {}),
    ...(s.saturated ? { saturated: true } : {}),
    generator: 'openloop.c',
    generatorCpuUsPerOp: Math.round(cpu / Math.max(1, s.due)),
    operations: s.due,
    own: { p50Ms: ms(s.ownP50Us), p99Ms: ms(s.ownP99Us), maxMs: ms(s.ownMaxUs) },
    lessOwn: { p50Ms: ms(s.wireP50Us), p99Ms: ms(s.wireP99Us) },
    p999Ms: ms(s.p999Us),
    over10Ms: s.over10Ms,
    ...(s.challengeP50Us !== undefined ? { split: { challengeMs: [ms(s.challengeP50Us), ms(s.challengeP99Us!)], sessionMs: [ms(s.sessionP50Us!), ms(s.sessionP99Us!)] } } : {}),
    ...(errors > 0 ? { firstError: `openloop: ${s.status} non-2xx, ${s.errors} socket errors, ${s.unanswered} unanswered` } : {}),
  };
}

/**
 * Sessions from the C generator, as bench/run.ts's Node `sessionOp` makes them: per operation a
 * challenge for the connection's host, a quote over SHA-256(nonce ‖ thumbprint of a fresh
 * ephemeral P-256 key) signed with that host's software AK, and POST /v1/sessions; one connection
 * per host, so that each host's quotes (and their clock) go out in order. `ratePerSec` 0 is a
 * closed loop. The AKs' private keys (bench keys, made for this run) reach it in a file of `dir`
 * readable by this user only, removed when it ends; each AK's clock is moved past every quote the
 * generator may have made, so later Node rows do not go back.
 */
export async function nativeSessions(binary: string, opts: {
  dir: string; url: string; token: string; hosts: readonly { id: string; ak: SoftAk }[]; pcrs: readonly Buffer[]; audience: string;
  ratePerSec: number; durationMs: number;
}): Promise<NativeOpenLoopRun> {
  const lines = [`audience ${opts.audience}`];
  const clocks: bigint[] = [];
  for (const h of opts.hosts) {
    // The parts of this AK's quotes that stay the same: everything but extraData and the clock.
    const sample = h.ak.quote(Buffer.alloc(32), opts.pcrs);
    if (lines.length === 1) lines.push(`pcrs ${JSON.stringify(sample.pcrs)}`);
    const q = Buffer.from(sample.quote, 'base64');
    const prefixLength = 8 + q.readUInt16BE(6) + 2; // magic, type, qualifiedSigner, extraData's size
    if (q.readUInt16BE(prefixLength - 2) !== 32) throw new Error('unexpected quote layout');
    const clock = q.readBigUInt64BE(prefixLength + 32);
    clocks.push(clock);
    const der = h.ak.privateKey.export({ type: 'pkcs8', format: 'der' });
    lines.push(`host ${h.id} ${h.ak.kind} ${der.toString('hex')} ${q.subarray(0, prefixLength).toString('hex')} ${clock} ${q.subarray(prefixLength + 40).toString('hex')}`);
  }
  const file = join(opts.dir, 'sessions.txt');
  await writeFile(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  let run: NativeOpenLoopRun;
  try {
    run = await nativeOpenLoop(binary, { url: opts.url, path: '/v1/sessions', token: opts.token, env: { CUSTOS_BENCH_SESSIONS: file }, ratePerSec: opts.ratePerSec, durationMs: opts.durationMs, connections: opts.hosts.length });
  } finally {
    await rm(file, { force: true });
  }
  // Every operation's quote may have gone to one host: move each clock past all of them.
  const quotes = BigInt(run.operations);
  opts.hosts.forEach((h, i) => h.ak.advanceClock(clocks[i]! + 10n * (quotes + 1n)));
  return run;
}
