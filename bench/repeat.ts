/**
 * `npm run bench:repeat -- N`: N whole benches (`bench/run.ts`) one after the other, each in its
 * own process with the flags `npm run bench` gives it, then one table of the targets (the issues',
 * and custos's own for sign-batch): each run's figure, the range, and in how many runs the target
 * was met. One run says little
 * about a p99 on two shared cores; this is how the README's "met in k of n runs" are counted.
 *
 * Each run's own output goes to `.custos/bench-repeat/run-<i>.txt` (its last line is its
 * `BENCH_JSON`). The environment reaches every run (BENCH_ONLY, BENCH_SCALE, CUSTOS_PROCESSES…);
 * rows whose figure no run measured are left out. Nothing else should load the machine meanwhile.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));

/** Where a figure sits in a run's BENCH_JSON, and its target. */
interface Target {
  label: string;
  path: readonly string[];
  /** The target as printed, and whether a figure meets it. */
  goal: string;
  met(v: number): boolean;
}

export const TARGETS: readonly Target[] = [
  { label: 'HTTP ec-p256 sign peak / raw C_Sign', path: ['httpSign', 'ecRatioToRaw'], goal: '≥ 0.5', met: (v) => v >= 0.5 },
  { label: 'sign p99 at half the peak (ms)', path: ['httpSign', 'ecOpenLoopP99Ms'], goal: '< 10', met: (v) => v < 10 },
  // The batch rows' targets are custos's own (the issues set none for sign-batch).
  { label: 'sign-batch peak / raw C_Sign (own)', path: ['httpSignBatch', 'ratioToRaw'], goal: '≥ 0.5', met: (v) => v >= 0.5 },
  { label: 'sign-batch p99 at half the peak (own, ms)', path: ['httpSignBatch', 'openLoopP99Ms'], goal: '< 10', met: (v) => v < 10 },
  { label: 'sessions peak, ECC AK (/s)', path: ['sessions', 'eccPeak'], goal: '≥ 2,000', met: (v) => v >= 2000 },
  { label: 'sessions p99 at 1,000/s, ECC AK (ms)', path: ['sessions', 'eccP99At1000Ms'], goal: '≤ 20', met: (v) => v <= 20 },
  { label: 'sessions p99 at 1,000/s, RSA AK (ms)', path: ['sessions', 'rsaP99At1000Ms'], goal: '≤ 20', met: (v) => v <= 20 },
  { label: 'verifyQuote / crypto.verify, RSA AK', path: ['quoteVerify', 'ratioRsa'], goal: '≥ 0.9', met: (v) => v >= 0.9 },
  { label: 'verifyQuote / crypto.verify, ECC AK', path: ['quoteVerify', 'ratioEcc'], goal: '≥ 0.9', met: (v) => v >= 0.9 },
  { label: 'rotation planning, 100k keys (ms)', path: ['planning', 'ms'], goal: '< 1,000', met: (v) => v < 1000 },
  { label: 'audit chain verification (events/s)', path: ['auditVerify', 'eventsPerSecond'], goal: '≥ 500,000', met: (v) => v >= 500_000 },
];

/** The figure at `path` of a BENCH_JSON object, if it is a number. */
export function figure(json: unknown, path: readonly string[]): number | undefined {
  let v: unknown = json;
  for (const k of path) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/** The table's lines for the runs' BENCH_JSON objects (undefined: a run that printed none). */
export function summarize(runs: readonly (unknown | undefined)[]): string[] {
  const lines: string[] = [];
  const width = Math.max(...TARGETS.map((t) => t.label.length));
  const fmt = (v: number): string => (Number.isInteger(v) ? v.toLocaleString('en-US') : String(v));
  for (const t of TARGETS) {
    const values = runs.map((r) => (r === undefined ? undefined : figure(r, t.path)));
    const measured = values.filter((v): v is number => v !== undefined);
    if (measured.length === 0) continue;
    const met = measured.filter((v) => t.met(v)).length;
    const range = `${fmt(Math.min(...measured))}–${fmt(Math.max(...measured))}`;
    const each = values.map((v) => (v === undefined ? '-' : `${fmt(v)}${t.met(v) ? '' : '*'}`)).join(' ');
    lines.push(`${t.label.padEnd(width)}  target ${t.goal.padEnd(9)} met in ${met} of ${measured.length}  range ${range}  runs: ${each}`);
  }
  return lines;
}

function main(): void {
  const n = Number(process.argv[2] ?? '3');
  if (!Number.isInteger(n) || n < 1 || n > 100) {
    console.error('usage: npm run bench:repeat -- <runs, 1..100>');
    process.exit(2);
  }
  const dir = join(process.cwd(), '.custos', 'bench-repeat');
  mkdirSync(dir, { recursive: true });
  const runs: (unknown | undefined)[] = [];
  for (let i = 1; i <= n; i++) {
    const file = join(dir, `run-${i}.txt`);
    const fd = openSync(file, 'w');
    const start = Date.now();
    // The flags of `npm run bench` (package.json): see bench/run.ts on the generator's GC.
    const r = spawnSync(process.execPath, ['--single-threaded-gc', '--max-semi-space-size=2', join(HERE, 'run.js')], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const line = readFileSync(file, 'utf8').split('\n').find((l) => l.startsWith('BENCH_JSON '));
    runs.push(line === undefined ? undefined : JSON.parse(line.slice('BENCH_JSON '.length)));
    console.log(`run ${i} of ${n}: ${line === undefined ? `no BENCH_JSON (exit ${r.status ?? r.signal}), see ${file}` : 'done'} in ${Math.round((Date.now() - start) / 1000)} s`);
  }
  console.log(`\n${n} runs (* = target missed; each run's output in ${dir}):`);
  for (const l of summarize(runs)) console.log(l);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();
