import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPolicyFile } from '../../../src/policy/loader.js';
import { PolicyError } from '../../../src/policy/policy-error.js';
import { ROTATION_POLICY_SCHEMA, checkRotationPolicy, type RotationPolicy } from '../../../src/policy/rotation-policy.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'custos-policy-prop-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const VALID = 'id: p\nversion: 1\nselector:\n  names: [k1]\nrotateEvery: P90D\ndeactivateAfter: P30D\ndestroyAfter: P44D\ndestroyPendingWindow: P14D\n';

describe('policy loader on arbitrary input', () => {
  it('either loads or throws a PolicyError with a position inside the file', () => {
    const file = join(dir, 'p.yaml');
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.tuple(fc.nat(VALID.length), fc.string({ maxLength: 20 })).map(([i, s]) => VALID.slice(0, i) + s + VALID.slice(i))), (text) => {
        writeFileSync(file, text);
        try {
          loadPolicyFile<RotationPolicy>(file, 'rotation', ROTATION_POLICY_SCHEMA, { semanticCheck: checkRotationPolicy });
        } catch (e) {
          expect(e).toBeInstanceOf(PolicyError);
          const lines = text.split('\n').length;
          for (const p of (e as PolicyError).problems) {
            expect(p.line).toBeGreaterThanOrEqual(1);
            expect(p.line).toBeLessThanOrEqual(lines + 1);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
