import { describe, expect, it } from 'vitest';
import { serveV8Flags, SINGLE_THREADED_GC_MAX_CPUS } from '../../../src/cli/relaunch.js';

describe('V8 flags of custos serve', () => {
  it('auto: single-threaded GC up to 4 cores, V8 defaults above', () => {
    expect(serveV8Flags({}, 2)).toEqual(['--single-threaded-gc']);
    expect(serveV8Flags({ CUSTOS_GC: 'auto' }, SINGLE_THREADED_GC_MAX_CPUS)).toEqual(['--single-threaded-gc']);
    expect(serveV8Flags({}, SINGLE_THREADED_GC_MAX_CPUS + 1)).toEqual([]);
  });

  it('CUSTOS_GC forces either mode, and anything else is refused by name', () => {
    expect(serveV8Flags({ CUSTOS_GC: 'parallel' }, 2)).toEqual([]);
    expect(serveV8Flags({ CUSTOS_GC: 'single-threaded' }, 64)).toEqual(['--single-threaded-gc']);
    expect(() => serveV8Flags({ CUSTOS_GC: 'Parallel' }, 2)).toThrow(/CUSTOS_GC/);
  });
});
