import { describe, expect, it } from 'vitest';
import { auditVerifyBench } from '../../../bench/audit-verify.js';

describe('bench/audit-verify (short run)', () => {
  it('writes an export, verifies it and reports the rate', async () => {
    const r = await auditVerifyBench(5000);
    expect(r).toMatchObject({ events: 5000, checkpoints: 5, ok: true });
    expect(r.eventsPerSecond).toBeGreaterThan(0);
  });
});
