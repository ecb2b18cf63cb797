/**
 * Closed-loop HTTP load from wrk (https://github.com/wg/wrk, Debian package `wrk`; `make bench`
 * installs it). On a 2-core machine the load generator takes its CPU from the server it measures:
 * the Node generator of ./load.ts costs 23–30 µs per request here, wrk (C, epoll) a third of that,
 * so with wrk the rows say more about the server and less about the generator.
 *
 * wrk sends one fixed request over and over on keep-alive connections, one request in flight per
 * connection (no pipelining). A Lua script sets method, headers and body, and prints wrk's own
 * summary as JSON when the run ends (its latency histogram, in µs). The bearer token reaches the
 * script through the environment, never the command line.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RunResult } from './load.js';

/** Whether a wrk binary is on PATH. */
export function wrkAvailable(): boolean {
  const r = spawnSync('wrk', ['--version'], { stdio: 'ignore' });
  return r.error === undefined;
}

const SCRIPT = `
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CUSTOS_BENCH_TOKEN")
wrk.body = os.getenv("CUSTOS_BENCH_BODY")

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"durationUs":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50Us":%d,"p99Us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`;

interface WrkSummary {
  requests: number;
  durationUs: number;
  connect: number;
  read: number;
  write: number;
  status: number;
  timeout: number;
  p50Us: number;
  p99Us: number;
}

/** CPU time (µs) of this process's reaped children, from /proc/self/stat (cutime + cstime). */
function childrenCpuUs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[13]) + Number(f[14]); // cutime, cstime (fields 16 and 17 of proc(5))
  return (ticks * 1e6) / 100; // USER_HZ is 100 on Linux
}

/**
 * Runs a C load generator to its end: the bearer token and the JSON body go through its
 * environment (CUSTOS_BENCH_TOKEN, CUSTOS_BENCH_BODY, and `env`), never its command line; its
 * summary is the JSON after `marker` on the line it prints; its CPU time is measured as a reaped
 * child's.
 */
export async function runGenerator<T>(command: string, args: string[], req: { token: string; body?: unknown; env?: Record<string, string> }, marker: string): Promise<{ summary: T; cpuUs: number }> {
  const cpu0 = childrenCpuUs();
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, ...req.env, CUSTOS_BENCH_TOKEN: req.token, ...(req.body === undefined ? {} : { CUSTOS_BENCH_BODY: JSON.stringify(req.body) }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.stderr.on('data', (d: Buffer) => (text += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`${command} exited with ${code}: ${text.slice(0, 300)}`))));
  });
  const cpuUs = childrenCpuUs() - cpu0;
  const line = out.split('\n').find((l) => l.startsWith(`${marker} `));
  if (line === undefined) throw new Error(`${command} printed no summary: ${out.slice(0, 300)}`);
  return { summary: JSON.parse(line.slice(marker.length + 1)) as T, cpuUs };
}

export interface WrkRun extends RunResult {
  /** CPU time of the wrk process per operation (µs). */
  generatorCpuUsPerOp: number;
}

/**
 * Runs wrk with one thread against `url` + `path` for `durationMs` at `connections`, POSTing
 * `body` with the bearer `token`. Rates count successful (2xx) answers only.
 */
export async function wrkClosedLoop(opts: { dir: string; url: string; path: string; token: string; body: unknown; connections: number; durationMs: number }): Promise<WrkRun> {
  const script = join(opts.dir, 'wrk-post.lua');
  await writeFile(script, SCRIPT, { mode: 0o600 });
  const seconds = Math.max(1, Math.round(opts.durationMs / 1000));
  const { summary: s, cpuUs: cpu } = await runGenerator<WrkSummary>('wrk', ['-t1', `-c${opts.connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, `${opts.url}${opts.path}`], opts, 'WRK_JSON');
  const errors = s.connect + s.read + s.write + s.status + s.timeout;
  const ok = Math.max(0, s.requests - s.status);
  return {
    opsPerSec: Math.round(ok / (s.durationUs / 1e6)),
    ok,
    errors,
    p50Ms: Math.round(s.p50Us / 10) / 100,
    p99Ms: Math.round(s.p99Us / 10) / 100,
    generatorCpuUsPerOp: Math.round(cpu / Math.max(1, s.requests)),
    ...(errors > 0 ? { firstError: `wrk: ${s.status} non-2xx, ${s.connect + s.read + s.write} socket errors, ${s.timeout} timeouts` } : {}),
  };
}
