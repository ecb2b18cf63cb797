/**
 * How much the old generation may grow between V8's full garbage collections (`custos serve`).
 *
 * Under load the server promoted a few MB/s of short-lived objects to the old generation. The live
 * heap stays at about 25 MB, and by its own heuristics V8 starts a full collection (mark-compact)
 * every 5 MB or so of growth: every 1–2 s at 1,000 sessions/s then. Each one costs the event loop
 * incremental marking steps and a final pause. With `--heap-growing-percent=300` the old
 * generation may reach four times the live size first, which means about 100 MB here and a full
 * collection about three times less often.
 *
 * Most of what was promoted has since been found and removed (an audit record built with an
 * object spread, and the Maps of calls in flight to worker threads; see src/lib/call-table.ts):
 * at 10,500 signatures/s a server process's old generation grew 6.2 MB/s before and about
 * 0.6 MB/s after. The setting was measured before that, and stays: it costs memory, not time.
 *
 * Measured on 2 cores, `BENCH_ONLY=sign-batch,sessions BENCH_SESSION_RATES=1000,1000,1000,1000
 * npm run bench`: in a server that had been signing first, so that V8 runs its steady-state cycle,
 * ten rows at 1,000 sessions/s for each setting, with the settings in alternating runs:
 *   - V8's default: p99 median 19.6 ms, 7 of 10 rows ≤ 20 ms;
 *   - 300%: median 16.9 ms, 9 of 10 ≤ 20 ms;
 *   - the default with --single-threaded-gc: median 19.1 ms, 8 of 10 ≤ 20 ms.
 * Full collections fell from 13–15 to 5–6 per run. In whole `npm run bench` runs the sessions p99 at
 * 1,000/s was 34.1–34.7 ms before (2 runs) and 16.1–37.3 ms after, ≤ 20 ms in 9 of 11 runs (150%:
 * 37.0 and 44.4 ms; 600%: 17.9–80.9 ms, ≤ 20 ms in 3 of 6 runs, and a sessions peak under
 * 2,000/s in 3 of them).
 *
 * The cost is memory: the old generation reaches ~100–150 MB. No effect on the sign path was
 * established: its open-loop p99 at half the peak is noisy either way (under its 10 ms target in
 * 4 of 14 runs with 300% and 1 of 3 with V8's default in this round), and with `--trace-gc-nvp`
 * in one run each the same amount was promoted (227 MB) with 5 full collections instead of 14,
 * whose longest pauses were 9.9 and 19.1 ms. 0 restores V8's own heuristics.
 *
 * V8 reads this flag each time it sets the next collection's limit, so it can be set once the
 * process runs (v8.setFlagsFromString). Flags that change how the collector is built (such as
 * --single-threaded-gc) cannot: set at run time, that one crashed Node 20 at its next full GC.
 */
import { setFlagsFromString } from 'node:v8';

/**
 * Sets V8's heap growing factor to 1 + percent/100 for the rest of the process; 0 leaves V8's own
 * heuristics. Callers pass a validated configuration value (0–1000).
 */
export function applyHeapGrowingPercent(percent: number): void {
  if (!Number.isInteger(percent) || percent < 0 || percent > 1000) throw new RangeError('heap growing percent must be an integer from 0 to 1000');
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
}
