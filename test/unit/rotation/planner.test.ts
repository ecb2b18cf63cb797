import { describe, expect, it } from 'vitest';
import type { AutomaticRotationPolicy, RotationPolicy } from '../../../src/policy/rotation-policy.js';
import { applyPlanStep, nextRotationAt, planRotations, planRotationsDetailed } from '../../../src/rotation/planner.js';
import type { KeyVersionInfo, KeyWithVersions } from '../../../src/rotation/types.js';

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 5, 10, 0, 0); // a Monday
const d = (days: number, ms = 0) => new Date(T0 + days * DAY + ms);

const policy = (over: Partial<AutomaticRotationPolicy> = {}): AutomaticRotationPolicy => ({
  id: 'p',
  version: 1,
  selector: { names: ['k*'] },
  rotateEvery: 'P90D',
  prePublish: 'P7D',
  deactivateAfter: 'P30D',
  destroyAfter: 'P44D',
  destroyPendingWindow: 'P14D',
  ...over,
});

const v = (version: number, state: KeyVersionInfo['state'], extra: Partial<KeyVersionInfo> = {}): KeyVersionInfo => ({
  version,
  state,
  createdAt: extra.createdAt ?? d(0),
  ...(state === 'active' ? { activatedAt: d(0) } : {}),
  ...extra,
});

const key = (versions: KeyVersionInfo[], over: Partial<KeyWithVersions> = {}): KeyWithVersions => ({
  name: 'k1',
  type: 'ec-p256',
  purpose: 'sign',
  createdAt: d(0),
  versions,
  ...over,
});

const brief = (steps: ReturnType<typeof planRotations>) =>
  steps.map((s) => ({ action: s.action, version: s.version, dueAt: s.dueAt.toISOString(), ...(s.destroyAt ? { destroyAt: s.destroyAt.toISOString() } : {}) }));

describe('planRotations: one step per situation', () => {
  it('creates an active version for a key that has none, due now', () => {
    expect(brief(planRotations([policy()], [key([])], d(3)))).toEqual([{ action: 'create-active', version: undefined, dueAt: d(3).toISOString() }]);
  });

  it('publishes the next version prePublish before the rotation, not earlier', () => {
    const k = key([v(1, 'active')]);
    expect(planRotations([policy()], [k], d(82, DAY - 1))).toEqual([]);
    expect(brief(planRotations([policy()], [k], d(83)))).toEqual([{ action: 'create-pre-active', version: undefined, dueAt: d(83).toISOString() }]);
  });

  it('activates the pre-active version at the rotation instant, superseding the active one', () => {
    const k = key([v(1, 'active'), v(2, 'pre-active', { createdAt: d(83) })]);
    expect(planRotations([policy()], [k], d(89))).toEqual([]);
    const [s] = planRotations([policy()], [k], d(90));
    expect(s).toMatchObject({ action: 'activate', version: 2, supersedes: 1, policyId: 'p' });
    expect(s!.dueAt.toISOString()).toBe(d(90).toISOString());
  });

  it('waits until a late pre-active version was published for prePublish', () => {
    const k = key([v(1, 'active'), v(2, 'pre-active', { createdAt: d(89) })]);
    expect(planRotations([policy()], [k], d(95, -1))).toEqual([]);
    expect(planRotations([policy()], [k], d(96))[0]).toMatchObject({ action: 'activate', version: 2 });
  });

  it('does not shift the schedule after a manual rotation (anchored on key creation)', () => {
    const k = key([v(1, 'deactivated', { deactivatedAt: d(50) }), v(2, 'active', { createdAt: d(50), activatedAt: d(50) })]);
    expect(nextRotationAt(policy(), k, d(50))!.toISOString()).toBe(d(90).toISOString());
    expect(planRotations([policy()], [k], d(83)).map((s) => s.action)).toEqual(['schedule-destroy', 'create-pre-active']);
    expect(planRotations([policy()], [k], d(83, -1)).map((s) => s.action)).toEqual(['schedule-destroy']);
  });

  it('rotates once, not once per missed period, after a long outage', () => {
    const k = key([v(1, 'active')]);
    const steps = planRotations([policy()], [k], d(400));
    expect(steps.map((s) => s.action)).toEqual(['create-pre-active']);
    const k2 = applyPlanStep(k, steps[0]!, d(400));
    const k3 = applyPlanStep(k2, planRotations([policy()], [k2], d(407))[0]!, d(407));
    expect(nextRotationAt(policy(), k3, d(407))!.toISOString()).toBe(d(450).toISOString());
  });

  it('moves the rotation into the UTC window on an allowed day', () => {
    // T0 + 90 days = Sunday 2026-04-05 10:00; next Tuesday 02:00 is 2026-04-07.
    const p = policy({ window: { start: '02:00', end: '04:00', days: ['tue', 'thu'] } });
    expect(nextRotationAt(p, key([v(1, 'active')]), d(0))!.toISOString()).toBe('2026-04-07T02:00:00.000Z');
    const across = policy({ window: { start: '23:00', end: '01:00' } });
    expect(nextRotationAt(across, key([v(1, 'active')]), d(0))!.toISOString()).toBe('2026-04-05T23:00:00.000Z');
    const inside = policy({ window: { start: '09:00', end: '11:00' } });
    expect(nextRotationAt(inside, key([v(1, 'active')]), d(0))!.toISOString()).toBe('2026-04-05T10:00:00.000Z');
  });

  it('adds a deterministic per-key jitter that stays inside the window', () => {
    const p = policy({ jitter: 'PT6H', window: { start: '02:00', end: '04:00' } });
    const at = (name: string) => nextRotationAt(p, key([v(1, 'active')], { name }), d(0))!.getTime();
    const open = Date.parse('2026-04-06T02:00:00Z');
    const times = ['k1', 'k2', 'k3', 'k4', 'k5', 'k6'].map(at);
    for (const t of times) {
      expect(t).toBeGreaterThanOrEqual(open);
      expect(t).toBeLessThan(open + 2 * 3600_000);
    }
    expect(new Set(times).size).toBeGreaterThan(1);
    expect(at('k1')).toBe(at('k1'));
    const noWindow = policy({ jitter: 'PT6H' });
    const j = nextRotationAt(noWindow, key([v(1, 'active')]), d(0))!.getTime() - d(90).getTime();
    expect(j).toBeGreaterThanOrEqual(0);
    expect(j).toBeLessThan(6 * 3600_000);
  });

  it('rotates every calendar month on the anchor day, clamped in short months', () => {
    const p = policy({ rotateEvery: 'P1M', prePublish: 'P1D' });
    const k = key([v(1, 'active', { activatedAt: new Date(Date.UTC(2026, 1, 28, 12)) })], { createdAt: new Date(Date.UTC(2026, 0, 31, 12)) });
    expect(nextRotationAt(p, k, k.versions[0]!.activatedAt!)!.toISOString()).toBe('2026-03-31T12:00:00.000Z');
  });

  it('schedules destruction when deactivateAfter ends, destroying destroyAfter after deactivation', () => {
    const k = key([v(1, 'deactivated', { deactivatedAt: d(10) }), v(2, 'active', { activatedAt: d(10) })]);
    expect(planRotations([policy()], [k], d(40, -1))).toEqual([]);
    const [s] = planRotations([policy()], [k], d(40));
    expect(brief([s!])).toEqual([{ action: 'schedule-destroy', version: 1, dueAt: d(40).toISOString(), destroyAt: d(54).toISOString() }]);
  });

  it('never shortens the pending window when the step runs late', () => {
    const k = key([v(1, 'deactivated', { deactivatedAt: d(10) }), v(2, 'active', { activatedAt: d(10) })]);
    const [s] = planRotations([policy()], [k], d(50));
    expect(s!.destroyAt!.toISOString()).toBe(d(64).toISOString());
  });

  it('destroys at destroyAt, not before', () => {
    const k = key([v(1, 'destroy-scheduled', { destroyAt: d(54) }), v(2, 'active', { activatedAt: d(10) })]);
    expect(planRotations([policy()], [k], d(54, -1))).toEqual([]);
    expect(planRotations([policy()], [k], d(54))[0]).toMatchObject({ action: 'destroy', version: 1 });
  });

  it('prunes the oldest deactivated versions above maxVersions, with a full pending window', () => {
    const p = policy({ maxVersions: 3, deactivateAfter: 'P300D', destroyAfter: 'P330D' });
    const k = key([
      v(1, 'deactivated', { deactivatedAt: d(1) }),
      v(2, 'deactivated', { deactivatedAt: d(2) }),
      v(3, 'deactivated', { deactivatedAt: d(3) }),
      v(4, 'active', { createdAt: d(3), activatedAt: d(3) }),
    ]);
    const steps = planRotations([p], [k], d(5));
    expect(brief(steps)).toEqual([
      { action: 'schedule-destroy', version: 1, dueAt: d(3).toISOString(), destroyAt: d(19).toISOString() },
    ]);
  });

  it('repairs two active versions by deactivating the older one', () => {
    const k = key([v(1, 'active'), v(2, 'active', { activatedAt: d(5) }), v(3, 'pre-active'), v(4, 'pre-active')]);
    const steps = planRotations([policy()], [k], d(6));
    expect(steps.filter((s) => s.action === 'deactivate').map((s) => s.version).sort()).toEqual([1, 3]);
  });

  it('replaces a compromised active version at once', () => {
    const k = key([v(1, 'compromised', { activatedAt: d(0) })]);
    expect(planRotations([policy()], [k], d(7))[0]).toMatchObject({ action: 'create-active' });
    const k2 = key([v(1, 'compromised'), v(2, 'pre-active', { createdAt: d(6) })]);
    expect(planRotations([policy()], [k2], d(7))[0]).toMatchObject({ action: 'activate', version: 2 });
  });

  it('plans nothing for manual keys and reports keys with no or several policies', () => {
    const manual: RotationPolicy = { id: 'm', version: 1, manual: true, selector: { names: ['man'] } };
    const overlapping = policy({ id: 'q', selector: { names: ['dup*'] } });
    const other = policy({ id: 'r', selector: { names: ['*licate'] } });
    const keys = [key([], { name: 'man' }), key([], { name: 'orphan' }), key([], { name: 'duplicate' }), key([])];
    const r = planRotationsDetailed([manual, policy(), overlapping, other], keys, d(1));
    expect(r.steps.map((s) => s.key)).toEqual(['k1']);
    expect(r.unresolved.map((u) => [u.key, u.code])).toEqual([['orphan', 'ERR_POLICY_NOT_FOUND'], ['duplicate', 'ERR_POLICY_INVALID']]);
  });

  it('lists every future step up to the horizon by simulating forward', () => {
    const k = key([v(1, 'active')]);
    const steps = planRotations([policy()], [k], d(0), { until: d(200) });
    expect(steps.map((s) => `${s.action}${s.version ?? ''}@${(s.dueAt.getTime() - T0) / DAY}`)).toEqual([
      'create-pre-active@83',
      'activate2@90',
      'schedule-destroy1@120',
      'destroy1@134',
      'create-pre-active@173',
      'activate3@180',
    ]);
    expect(planRotations([policy()], [k], d(0), { until: d(82) })).toEqual([]);
  });

  it('is deterministic: the same input gives the same plan', () => {
    const ks = [key([v(1, 'active')]), key([v(1, 'active')], { name: 'k2' })];
    const p = policy({ jitter: 'PT12H' });
    expect(planRotations([p], ks, d(0), { until: d(1000) })).toEqual(planRotations([p], ks, d(0), { until: d(1000) }));
  });
});
