import { describe, expect, it } from 'vitest';
import type { AutomaticRotationPolicy, RotationPolicy } from '../../../src/policy/rotation-policy.js';
import { CRYPTOPERIODS, cryptoperiodFor, rotationReport } from '../../../src/rotation/report.js';
import type { KeyWithVersions } from '../../../src/rotation/types.js';

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 5, 10);
const d = (days: number) => new Date(T0 + days * DAY);

const sign: AutomaticRotationPolicy = {
  id: 'sign', version: 1, selector: { purposes: ['sign'], names: ['s-*'] }, rotateEvery: 'P90D', prePublish: 'P7D',
  deactivateAfter: 'P30D', destroyAfter: 'P44D', destroyPendingWindow: 'P14D', notifyBefore: 'P14D',
};
const manual: RotationPolicy = { id: 'm', version: 1, manual: true, selector: { names: ['legacy-*'] } };

describe('rotationReport', () => {
  it('uses the NIST SP 800-57 cryptoperiods from one table', () => {
    expect(cryptoperiodFor('ec-p256', 'sign')).toBe(CRYPTOPERIODS.sign);
    expect(cryptoperiodFor('aes-256', 'encrypt')).toMatchObject({ originatorUsage: 'P2Y', totalUsage: 'P5Y' });
    expect(CRYPTOPERIODS.sign.citation).toContain('800-57');
  });

  it('lists overdue steps past the grace period only', () => {
    const k: KeyWithVersions = { name: 's-1', type: 'ec-p256', purpose: 'sign', createdAt: d(0), versions: [{ version: 1, state: 'active', createdAt: d(0), activatedAt: d(0) }] };
    const fresh = rotationReport([sign], [k], new Date(d(83).getTime() + 30 * 60_000));
    expect(fresh.overdue).toEqual([]);
    const late = rotationReport([sign], [k], d(85));
    expect(late.overdue).toEqual([expect.objectContaining({ key: 's-1', action: 'create-pre-active', overdueMs: 2 * DAY, policyId: 'sign' })]);
  });

  it('flags versions used past their cryptoperiod, including manual keys', () => {
    const keys: KeyWithVersions[] = [
      { name: 'legacy-sig', type: 'rsa-2048', purpose: 'sign', createdAt: d(-1200), versions: [{ version: 1, state: 'active', createdAt: d(-1200), activatedAt: d(-1200) }] },
      { name: 'legacy-sig2', type: 'rsa-2048', purpose: 'sign', createdAt: d(-1000), versions: [{ version: 1, state: 'active', createdAt: d(-1000), activatedAt: d(-1000) }] },
      {
        name: 'legacy-aes', type: 'aes-256', purpose: 'encrypt', createdAt: d(-2000), versions: [
          { version: 1, state: 'deactivated', createdAt: d(-2000), activatedAt: d(-2000), deactivatedAt: d(-1000) },
          { version: 2, state: 'active', createdAt: d(-1000), activatedAt: d(-1000) },
        ],
      },
    ];
    const r = rotationReport([manual], keys, d(0));
    // Sorted by when the limit was passed: v2 at activation + 2 years, v1 at + 5 years, the RSA key at + 3 years.
    expect(r.pastCryptoperiod.map((p) => [p.key, p.version, p.period, p.limit])).toEqual([
      ['legacy-aes', 2, 'originator', 'P2Y'],
      ['legacy-aes', 1, 'total', 'P5Y'],
      ['legacy-sig', 1, 'originator', 'P3Y'],
    ]);
    expect(r.pastCryptoperiod).toHaveLength(3);
    expect(r.pastCryptoperiod.find((p) => p.key === 'legacy-sig2')).toBeUndefined();
  });

  it('lists scheduled and planned destructions within the horizon, soonest first', () => {
    const k: KeyWithVersions = {
      name: 's-2', type: 'ec-p256', purpose: 'sign', createdAt: d(0), versions: [
        { version: 1, state: 'destroy-scheduled', createdAt: d(0), activatedAt: d(0), deactivatedAt: d(90), destroyAt: d(134) },
        { version: 2, state: 'deactivated', createdAt: d(83), activatedAt: d(90), deactivatedAt: d(120) },
        { version: 3, state: 'active', createdAt: d(113), activatedAt: d(120) },
      ],
    };
    const r = rotationReport([sign], [k], d(125));
    // v2's destruction (scheduled at day 150 for day 164) lies past the default 30-day horizon.
    expect(r.upcomingDestructions.map((u) => [u.version, u.scheduled, (u.destroyAt.getTime() - T0) / DAY])).toEqual([[1, true, 134]]);
    const wide = rotationReport([sign], [k], d(125), { horizon: 'P60D' });
    expect(wide.upcomingDestructions.map((u) => [u.version, u.scheduled])).toEqual([[1, true], [2, false]]);
  });

  it('lists rotations within notifyBefore and keys without a policy', () => {
    const k: KeyWithVersions = { name: 's-3', type: 'ec-p256', purpose: 'sign', createdAt: d(0), versions: [{ version: 1, state: 'active', createdAt: d(0), activatedAt: d(0) }] };
    expect(rotationReport([sign], [k], d(75)).upcomingRotations).toEqual([]);
    expect(rotationReport([sign], [k], d(77)).upcomingRotations).toEqual([expect.objectContaining({ key: 's-3', at: d(90), policyId: 'sign' })]);
    const orphan: KeyWithVersions = { ...k, name: 'other' };
    expect(rotationReport([sign], [orphan], d(1)).unresolved).toEqual([expect.objectContaining({ key: 'other', code: 'ERR_POLICY_NOT_FOUND' })]);
  });
});
