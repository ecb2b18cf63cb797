/**
 * Property tests: random policies and keys, simulated over years with a fake clock. A tiny
 * executor written here (independently of applyPlanStep) applies the due steps one at a time,
 * planning again after each, and the lifecycle invariants are checked after every step.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ManualClock } from '../../../src/lib/clock.js';
import type { AutomaticRotationPolicy } from '../../../src/policy/rotation-policy.js';
import { durationBoundsMs, parseDuration } from '../../../src/rotation/durations.js';
import { planRotations } from '../../../src/rotation/planner.js';
import type { KeyVersionState, KeyWithVersions, PlanStep } from '../../../src/rotation/types.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

interface SimVersion {
  version: number;
  state: KeyVersionState;
  createdAt: Date;
  activatedAt?: Date;
  deactivatedAt?: Date;
  destroyAt?: Date;
  scheduledAt?: Date;
  pruned?: boolean;
}
interface SimKey extends Omit<KeyWithVersions, 'versions'> {
  versions: SimVersion[];
}

const ORDER: Record<KeyVersionState, number> = { 'pre-active': 0, active: 1, deactivated: 2, 'destroy-scheduled': 3, destroyed: 4, compromised: 5 };

const policyArb = fc
  .record({
    everyDays: fc.integer({ min: 2, max: 120 }),
    months: fc.boolean(),
    preFrac: fc.option(fc.double({ min: 0, max: 0.9, noNaN: true }), { nil: undefined }),
    deactDays: fc.integer({ min: 0, max: 60 }),
    pendingDays: fc.integer({ min: 0, max: 20 }),
    extraDays: fc.integer({ min: 0, max: 10 }),
    jitterHours: fc.option(fc.integer({ min: 1, max: 47 }), { nil: undefined }),
    window: fc.option(
      fc.record({ start: fc.integer({ min: 0, max: 23 }), len: fc.integer({ min: 1, max: 23 }), days: fc.subarray(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const, { minLength: 1 }) }),
      { nil: undefined },
    ),
    maxVersions: fc.option(fc.integer({ min: 2, max: 6 }), { nil: undefined }),
  })
  .map((r): AutomaticRotationPolicy => {
    const every = r.months ? `P${Math.max(1, Math.round(r.everyDays / 30))}M` : `P${r.everyDays}D`;
    const everyMin = durationBoundsMs(parseDuration(every)).min;
    const pre = r.preFrac === undefined ? undefined : `PT${Math.floor((everyMin * r.preFrac) / HOUR)}H`;
    const hh = (h: number) => `${String(h % 24).padStart(2, '0')}:00`;
    return {
      id: 'p',
      version: 1,
      profile: 'test',
      selector: { names: ['*'] },
      rotateEvery: every,
      ...(pre === undefined ? {} : { prePublish: pre }),
      ...(r.jitterHours === undefined || r.jitterHours * HOUR >= everyMin ? {} : { jitter: `PT${r.jitterHours}H` }),
      ...(r.window === undefined ? {} : { window: { start: hh(r.window.start), end: hh(r.window.start + r.window.len), days: [...r.window.days] } }),
      deactivateAfter: `P${r.deactDays}D`,
      destroyAfter: `P${r.deactDays + r.pendingDays + r.extraDays}D`,
      destroyPendingWindow: `P${r.pendingDays}D`,
      ...(r.maxVersions === undefined ? {} : { maxVersions: r.maxVersions }),
    };
  });

/** The test's own executor: applies one step to the simulated key, checking it is legal. */
function apply(k: SimKey, s: PlanStep, now: Date, policy: AutomaticRotationPolicy): void {
  expect(s.dueAt.getTime()).toBeLessThanOrEqual(now.getTime());
  const next = Math.max(0, ...k.versions.map((v) => v.version)) + 1;
  const find = (n: number | undefined) => {
    const v = k.versions.find((x) => x.version === n);
    expect(v, `${s.action} names version ${n}`).toBeDefined();
    return v!;
  };
  switch (s.action) {
    case 'create-active':
      expect(k.versions.some((v) => v.state === 'active')).toBe(false);
      k.versions.push({ version: next, state: 'active', createdAt: now, activatedAt: now });
      break;
    case 'create-pre-active':
      expect(k.versions.some((v) => v.state === 'pre-active')).toBe(false);
      k.versions.push({ version: next, state: 'pre-active', createdAt: now });
      break;
    case 'activate': {
      const v = find(s.version);
      expect(v.state).toBe('pre-active');
      const pre = durationBoundsMs(parseDuration(policy.prePublish ?? 'PT0S')).min;
      if (s.supersedes !== undefined) {
        // Published long enough before it is used (relying parties saw it in JWKS).
        expect(now.getTime() - v.createdAt.getTime()).toBeGreaterThanOrEqual(pre);
        const old = find(s.supersedes);
        expect(old.state).toBe('active');
        Object.assign(old, { state: 'deactivated', deactivatedAt: now });
      }
      Object.assign(v, { state: 'active', activatedAt: now });
      break;
    }
    case 'deactivate':
      Object.assign(find(s.version), { state: 'deactivated', deactivatedAt: now });
      break;
    case 'schedule-destroy': {
      const v = find(s.version);
      expect(v.state).toBe('deactivated');
      expect(s.destroyAt).toBeDefined();
      Object.assign(v, { state: 'destroy-scheduled', destroyAt: s.destroyAt, scheduledAt: now, pruned: !s.reason.startsWith('deactivated') });
      break;
    }
    case 'destroy': {
      const v = find(s.version);
      expect(v.state).toBe('destroy-scheduled');
      expect(now.getTime()).toBeGreaterThanOrEqual(v.destroyAt!.getTime());
      v.state = 'destroyed';
      break;
    }
  }
}

function must(cond: boolean, what: string): void {
  if (!cond) throw new Error(`invariant broken: ${what}`);
}

function checkInvariants(k: SimKey, policy: AutomaticRotationPolicy, before: Map<number, KeyVersionState>): void {
  let actives = 0;
  let preActives = 0;
  const pendingMin = durationBoundsMs(parseDuration(policy.destroyPendingWindow)).min;
  const destroyAfterMin = durationBoundsMs(parseDuration(policy.destroyAfter)).min;
  for (const v of k.versions) {
    if (v.state === 'active') actives++;
    if (v.state === 'pre-active') preActives++;
    const was = before.get(v.version);
    // Lifecycle only moves forward: nothing deactivated is ever used (active) again.
    if (was !== undefined) must(ORDER[v.state] >= ORDER[was], `v${v.version} went from ${was} back to ${v.state}`);
    if (was !== v.state && (v.state === 'destroy-scheduled' || v.state === 'destroyed')) {
      must(v.destroyAt!.getTime() - v.scheduledAt!.getTime() >= pendingMin, `v${v.version} pending window shorter than policy`);
      if (!v.pruned) must(v.destroyAt!.getTime() >= v.deactivatedAt!.getTime() + destroyAfterMin, `v${v.version} destroyAt before deactivatedAt + destroyAfter`);
    }
    before.set(v.version, v.state);
  }
  must(actives === 1, `exactly one active version (found ${actives})`);
  must(preActives <= 1, `at most one pre-active version (found ${preActives})`);
}

describe('planner properties over simulated years', () => {
  it('keeps exactly one active version, never reuses a deactivated one, never destroys early, and keeps rotating', () => {
    fc.assert(
      fc.property(
        policyArb,
        fc.array(fc.integer({ min: 4, max: 72 }), { minLength: 1, maxLength: 8 }),
        fc.oneof(fc.constant(0), fc.integer({ min: 20, max: 400 })),
        (policy, tickHours, manualEvery) => {
          const clock = new ManualClock(Date.UTC(2026, 0, 1));
          const k: SimKey = { name: 'key-a', type: 'ec-p256', purpose: 'sign', createdAt: clock.now(), versions: [] };
          const before = new Map<number, KeyVersionState>();
          const everyMax = durationBoundsMs(parseDuration(policy.rotateEvery)).max;
          const jitter = policy.jitter ? durationBoundsMs(parseDuration(policy.jitter)).max : 0;
          const maxTick = Math.max(...tickHours) * HOUR;
          const prePub = durationBoundsMs(parseDuration(policy.prePublish ?? 'PT0S')).max;
          const end = clock.now().getTime() + 3 * 365 * DAY;
          let tick = 0;
          let rotations = 0;
          while (clock.now().getTime() < end) {
            const now = clock.now();
            // An operator rotates by hand now and then: a new active version, the old one deactivated.
            if (manualEvery > 0 && tick % manualEvery === manualEvery - 1 && k.versions.some((v) => v.state === 'active')) {
              const old = k.versions.find((v) => v.state === 'active')!;
              Object.assign(old, { state: 'deactivated', deactivatedAt: now });
              const next = Math.max(...k.versions.map((v) => v.version)) + 1;
              k.versions.push({ version: next, state: 'active', createdAt: now, activatedAt: now });
              rotations++;
              checkInvariants(k, policy, before);
            }
            for (let i = 0; ; i++) {
              expect(i).toBeLessThan(50);
              const due = planRotations([policy], [k as KeyWithVersions], now);
              // Planning is a pure function: the same state gives the same steps.
              expect(planRotations([policy], [k as KeyWithVersions], now)).toEqual(due);
              const s = due[0];
              if (!s) break;
              if (s.action === 'activate') rotations++;
              apply(k, s, now, policy);
              checkInvariants(k, policy, before);
            }
            const active = k.versions.find((v) => v.state === 'active')!;
            // Liveness: the active version is never older than a period plus jitter and publication
            // delay, plus twice (window shift of up to a week + one tick of the fake clock): once to
            // reach the window, and once more when a coarse tick misses the window in which a
            // late-created version would have been activated.
            expect(now.getTime() - active.activatedAt!.getTime()).toBeLessThanOrEqual(everyMax + jitter + prePub + 2 * (8 * DAY + maxTick));
            clock.advance(tickHours[tick % tickHours.length]! * HOUR);
            tick++;
          }
          expect(rotations).toBeGreaterThan(0);
          if (policy.maxVersions !== undefined) {
            const live = k.versions.filter((v) => ['pre-active', 'active', 'deactivated'].includes(v.state)).length;
            expect(live).toBeLessThanOrEqual(policy.maxVersions);
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});
