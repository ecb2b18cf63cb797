import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';

const setFlags = vi.hoisted(() => vi.fn());
vi.mock('node:v8', async (importOriginal) => ({ ...(await importOriginal<typeof import('node:v8')>()), setFlagsFromString: setFlags }));
const { applyHeapGrowingPercent } = await import('../../../src/lib/v8-heap.js');

/**
 * A child process applies the setting at run time, then collects garbage of both generations
 * under allocation: V8 flags are process-wide, and some of them (such as --single-threaded-gc)
 * crash the process at its next full collection when set after start-up.
 */
const CHILD = `
const { applyHeapGrowingPercent } = await import(process.argv[1]);
applyHeapGrowingPercent(300);
const { PerformanceObserver, constants } = await import('node:perf_hooks');
let major = 0;
new PerformanceObserver((l) => { for (const e of l.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major++; }).observe({ entryTypes: ['gc'] });
const ring = new Array(300000);
for (let round = 0; round < 4; round++) {
  for (let i = 0; i < 1e6; i++) ring[i % ring.length] = { i, b: [i, i + 1] };
  globalThis.gc();
}
await new Promise((r) => setTimeout(r, 50));
console.log(JSON.stringify({ major }));
`;

describe('V8 heap growing percent', () => {
  it('sets --heap-growing-percent, and leaves V8 alone for 0', () => {
    applyHeapGrowingPercent(300);
    expect(setFlags).toHaveBeenLastCalledWith('--heap-growing-percent=300');
    setFlags.mockClear();
    applyHeapGrowingPercent(0);
    expect(setFlags).not.toHaveBeenCalled();
  });

  it('refuses values outside 0–1000', () => {
    expect(() => applyHeapGrowingPercent(-1)).toThrow(RangeError);
    expect(() => applyHeapGrowingPercent(1001)).toThrow(RangeError);
    expect(() => applyHeapGrowingPercent(2.5)).toThrow(RangeError);
  });

  it('a process that set it at run time goes through full collections under allocation', () => {
    const module = join(process.cwd(), 'dist', 'lib', 'v8-heap.js');
    const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', CHILD, module], { encoding: 'utf8', timeout: 60_000 });
    expect((JSON.parse(out) as { major: number }).major).toBeGreaterThanOrEqual(4);
  }, 90_000);
});
