/**
 * The rotation planner: plan = f(policies, keys with their versions, now). Pure — no I/O, no
 * clock, no randomness — so that a plan can be reproduced and tested over simulated years. The
 * executor applies due steps one at a time and plans again after each (every step is computed
 * from the current state alone, so re-planning after a crash yields the same step again).
 *
 * Schedule anchoring. The issue asks that manual rotations do not shift the schedule, so rotation
 * instants are a fixed cadence from the key's `createdAt`: R_k = createdAt + k·rotateEvery
 * (calendar arithmetic in UTC, k ≥ 1). The next rotation of a key is the first R'_k (R_k moved into
 * the window, plus jitter) strictly after its active version's `activatedAt`. A manual rotation on
 * day 50 of a 90-day cadence therefore lives until day 90; a late scheduled rotation does not drift
 * later ones; several missed periods cause one rotation, not a burst.
 *
 * Jitter. j_k = floor(u · min(jitter, time left in the window)), u = FNV-1a-32(UTF-8(name ‖ 0x00 ‖
 * decimal k)) / 2^32. It spreads rotations of many keys over time while keeping the plan a pure,
 * reproducible function of the key name and period index (it is not a secret and needs no CSPRNG).
 *
 * Steps per key (see ../policy/rotation-policy.ts for the version timeline):
 * - no active version: `activate` the pre-active one if any, else `create-active` (due now);
 * - more than one active / pre-active (a crash artefact): `deactivate` all but the newest;
 * - no pre-active: `create-pre-active` at R' − prePublish; pre-active: `activate` it (swapping out
 *   the active version in the same step) at R', but not before it was published for prePublish;
 * - deactivated: `schedule-destroy` at deactivatedAt + deactivateAfter with destroyAt =
 *   deactivatedAt + destroyAfter; when more than maxVersions versions are live, the oldest
 *   deactivated ones are scheduled early, with destroyAt no sooner than the pending window;
 *   a late step never shortens the pending window (destroyAt ≥ max(dueAt, now) + window);
 * - destroy-scheduled: `destroy` at destroyAt. Compromised versions get no automatic step.
 */
import { isCustosError, type ErrorCode } from '../lib/errors.js';
import {
  compileRotationPolicy,
  resolvePolicyForKey,
  type CompiledRotationPolicy,
  type RotationPolicy,
} from '../policy/rotation-policy.js';
import { addDurationMs, approximateDurationMs } from './durations.js';
import type { KeyVersionInfo, KeyWithVersions, PlanAction, PlanStep } from './types.js';

const DAY = 86_400_000;
const MINUTE = 60_000;

/** FNV-1a 32-bit over the UTF-16 code units reduced to bytes (names are ASCII by schema of the key API). */
function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i) & 0xff;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The earliest instant ≥ t inside the window, and when that window closes. */
function alignToWindow(t: number, w: NonNullable<CompiledRotationPolicy['window']>): { at: number; close: number } {
  const dayStart = Math.floor(t / DAY) * DAY;
  for (let d = -1; d <= 8; d++) {
    const open = dayStart + d * DAY + w.open * MINUTE;
    // 1970-01-01 was a Thursday (4).
    const weekday = (((Math.floor(open / DAY) + 4) % 7) + 7) % 7;
    if (!w.days.has(weekday)) continue;
    const close = open + w.length * MINUTE;
    if (t < close) return { at: Math.max(t, open), close };
  }
  // Unreachable: the schema requires at least one weekday, so some window opens within 8 days.
  return { at: t, close: t };
}

/** R'_k: the k-th cadence instant moved into the window, plus its jitter. */
function rotationInstant(c: CompiledRotationPolicy, key: KeyWithVersions, k: number): number {
  const r = addDurationMs(key.createdAt.getTime(), c.rotateEvery, k);
  let at = r;
  let room = c.jitterMs;
  if (c.window) {
    const a = alignToWindow(r, c.window);
    at = a.at;
    room = Math.min(room, a.close - a.at - 1);
  }
  if (room <= 0) return at;
  const u = fnv1a32(`${key.name}\u0000${k}`) / 0x1_0000_0000;
  return at + Math.floor(u * room);
}

/**
 * The next scheduled rotation of a key after `after` (normally its active version's activatedAt):
 * the first cadence instant from `key.createdAt`, after window and jitter, strictly later.
 */
export function nextRotationAt(policy: RotationPolicy, key: KeyWithVersions, after: Date): Date | undefined {
  if (policy.manual === true) return undefined;
  return new Date(nextRotationMs(compileRotationPolicy(policy), key, after.getTime()));
}

function nextRotationMs(c: CompiledRotationPolicy, key: KeyWithVersions, after: number): number {
  const anchor = key.createdAt.getTime();
  const approx = Math.max(1, approximateDurationMs(c.rotateEvery));
  let k = Math.max(1, Math.floor((after - anchor) / approx) - 1);
  while (k > 1 && rotationInstant(c, key, k - 1) > after) k--;
  while (rotationInstant(c, key, k) <= after) k++;
  return rotationInstant(c, key, k);
}

function activationTime(v: KeyVersionInfo): number {
  return (v.activatedAt ?? v.createdAt).getTime();
}

function newestFirst(a: KeyVersionInfo, b: KeyVersionInfo): number {
  return activationTime(b) - activationTime(a) || b.version - a.version;
}

/** A step before it is turned into a PlanStep: plain numbers, reason text built only if emitted. */
interface Candidate {
  readonly action: PlanAction;
  readonly due: number;
  readonly version: number | undefined;
  readonly supersedes: number | undefined;
  readonly destroyAt: number | undefined;
  readonly why: 'extra-active' | 'extra-pre-active' | 'no-active' | 'pre-publish' | 'scheduled' | 'deactivated' | 'max-versions' | 'pending-over';
  /** The instant or version number the reason names. */
  readonly at: number;
}

function candidate(
  action: PlanAction,
  due: number,
  why: Candidate['why'],
  at: number,
  version?: number,
  supersedes?: number,
  destroyAt?: number,
): Candidate {
  return { action, due, version, supersedes, destroyAt, why, at };
}

const iso = (t: number): string => new Date(t).toISOString();

function reasonText(c: CompiledRotationPolicy, k: Candidate): string {
  switch (k.why) {
    case 'extra-active':
      return `more than one active version; v${k.at} is the newest`;
    case 'extra-pre-active':
      return `more than one pre-active version; v${k.at} is the newest`;
    case 'no-active':
      return 'no active version';
    case 'pre-publish':
      return `rotation due ${iso(k.at)}; publish ${c.policy.prePublish ?? 'PT0S'} before`;
    case 'scheduled':
      return `scheduled rotation (every ${c.policy.rotateEvery})`;
    case 'deactivated':
      return `deactivated ${iso(k.at)}; usable for ${c.policy.deactivateAfter}`;
    case 'max-versions':
      return `more than maxVersions (${c.policy.maxVersions}) live versions`;
    case 'pending-over':
      return 'pending window over';
  }
}

function toStep(key: KeyWithVersions, c: CompiledRotationPolicy, k: Candidate): PlanStep {
  const s: { -readonly [P in keyof PlanStep]: PlanStep[P] } = {
    key: key.name,
    action: k.action,
    dueAt: new Date(k.due),
    reason: reasonText(c, k),
    policyId: c.policy.id,
  };
  if (k.version !== undefined) s.version = k.version;
  if (k.supersedes !== undefined) s.supersedes = k.supersedes;
  if (k.destroyAt !== undefined) s.destroyAt = new Date(k.destroyAt);
  return s;
}

/** Every step the current state of one key calls for, due or not (dueAt may lie in the future). */
function planKey(c: CompiledRotationPolicy, key: KeyWithVersions, now: number): Candidate[] {
  const out: Candidate[] = [];
  const actives: KeyVersionInfo[] = [];
  const preActives: KeyVersionInfo[] = [];
  let newestLiveCreated = -Infinity;
  let live = 0;
  let deactivatedCount = 0;
  for (const v of key.versions) {
    if (v.state === 'active') actives.push(v);
    else if (v.state === 'pre-active') preActives.push(v);
    else if (v.state === 'deactivated') deactivatedCount++;
    if (v.state === 'active' || v.state === 'pre-active' || v.state === 'deactivated') {
      live++;
      newestLiveCreated = Math.max(newestLiveCreated, v.createdAt.getTime());
    }
  }
  if (actives.length > 1) actives.sort(newestFirst);
  if (preActives.length > 1) preActives.sort((a, b) => b.version - a.version);
  const active = actives[0];
  const pre = preActives[0];

  for (let i = 1; i < actives.length; i++) {
    out.push(candidate('deactivate', activationTime(active!), 'extra-active', active!.version, actives[i]!.version));
  }
  for (let i = 1; i < preActives.length; i++) {
    out.push(candidate('deactivate', pre!.createdAt.getTime(), 'extra-pre-active', pre!.version, preActives[i]!.version));
  }

  if (!active) {
    if (pre) out.push(candidate('activate', now, 'no-active', 0, pre.version));
    else out.push(candidate('create-active', now, 'no-active', 0));
  } else {
    const r = nextRotationMs(c, key, activationTime(active));
    if (!pre) {
      out.push(candidate('create-pre-active', r - c.prePublishMs, 'pre-publish', r));
    } else {
      let at = Math.max(r, pre.createdAt.getTime() + c.prePublishMs);
      if (c.window && at > r) at = alignToWindow(at, c.window).at;
      out.push(candidate('activate', at, 'scheduled', r, pre.version, active.version));
    }
  }

  if (deactivatedCount > 0) {
    const max = c.policy.maxVersions;
    let excess = max === undefined ? 0 : live - max;
    const deactivated = deactivatedCount === 1 ? key.versions.filter((v) => v.state === 'deactivated') : key.versions.filter((v) => v.state === 'deactivated').sort((a, b) => a.version - b.version);
    for (const v of deactivated) {
      const d = (v.deactivatedAt ?? v.activatedAt ?? v.createdAt).getTime();
      const scheduleAt = addDurationMs(d, c.deactivateAfter);
      let due = scheduleAt;
      let early = false;
      if (excess > 0) {
        excess--;
        const pruneAt = Math.max(d, newestLiveCreated);
        if (pruneAt < scheduleAt) {
          due = pruneAt;
          early = true;
        }
      }
      const notBefore = addDurationMs(Math.max(due, now), c.pendingWindow);
      const destroyAt = early ? notBefore : Math.max(addDurationMs(d, c.destroyAfter), notBefore);
      out.push(candidate('schedule-destroy', due, early ? 'max-versions' : 'deactivated', d, v.version, undefined, destroyAt));
    }
  }
  for (const v of key.versions) {
    if (v.state === 'destroy-scheduled' && v.destroyAt) {
      out.push(candidate('destroy', v.destroyAt.getTime(), 'pending-over', 0, v.version));
    }
  }
  return out;
}

const ACTION_ORDER: Record<PlanAction, number> = {
  deactivate: 0,
  'create-active': 1,
  activate: 2,
  'create-pre-active': 3,
  'schedule-destroy': 4,
  destroy: 5,
};

function earlier(a: Candidate, b: Candidate): boolean {
  return a.due < b.due || (a.due === b.due && (ACTION_ORDER[a.action] < ACTION_ORDER[b.action] || (ACTION_ORDER[a.action] === ACTION_ORDER[b.action] && (a.version ?? 0) < (b.version ?? 0))));
}

function byDue(a: PlanStep, b: PlanStep): number {
  return a.dueAt.getTime() - b.dueAt.getTime() || ACTION_ORDER[a.action] - ACTION_ORDER[b.action] || (a.version ?? 0) - (b.version ?? 0);
}

/**
 * Apply one step to a key's metadata at instant `at`: the reference semantics the executor
 * implements against the HSM and the store. Pure: returns a new key.
 */
export function applyPlanStep(key: KeyWithVersions, s: PlanStep, at: Date): KeyWithVersions {
  const versions = key.versions.map((v) => ({ ...v }));
  const nextVersion = versions.reduce((m, v) => Math.max(m, v.version), 0) + 1;
  const find = (n: number | undefined) => versions.find((v) => v.version === n);
  switch (s.action) {
    case 'create-pre-active':
      versions.push({ version: nextVersion, state: 'pre-active', createdAt: at });
      break;
    case 'create-active':
      versions.push({ version: nextVersion, state: 'active', createdAt: at, activatedAt: at });
      break;
    case 'activate': {
      const v = find(s.version);
      if (v) Object.assign(v, { state: 'active', activatedAt: at });
      const old = find(s.supersedes);
      if (old && old.state === 'active') Object.assign(old, { state: 'deactivated', deactivatedAt: at });
      break;
    }
    case 'deactivate': {
      const v = find(s.version);
      if (v) Object.assign(v, { state: 'deactivated', deactivatedAt: at });
      break;
    }
    case 'schedule-destroy': {
      const v = find(s.version);
      if (v) Object.assign(v, { state: 'destroy-scheduled', destroyAt: s.destroyAt });
      break;
    }
    case 'destroy': {
      const v = find(s.version);
      if (v) Object.assign(v, { state: 'destroyed' });
      break;
    }
  }
  return { ...key, versions };
}

export interface UnresolvedKey {
  readonly key: string;
  readonly code: ErrorCode;
  readonly message: string;
}

export interface RotationPlan {
  readonly steps: PlanStep[];
  /** Keys with no governing policy or with several (they get no step until fixed). */
  readonly unresolved: UnresolvedKey[];
}

/** Upper bound on simulated steps per key, against a pathological policy over a long horizon. */
const MAX_SIMULATED_STEPS_PER_KEY = 100_000;

/** {@link planRotations}, also returning the keys no policy (or more than one) governs. */
export function planRotationsDetailed(
  policies: readonly RotationPolicy[],
  keys: readonly KeyWithVersions[],
  now: Date,
  horizon?: { until: Date },
): RotationPlan {
  const steps: PlanStep[] = [];
  const unresolved: UnresolvedKey[] = [];
  const t0 = now.getTime();
  for (const key of keys) {
    let policy;
    try {
      policy = resolvePolicyForKey(policies, key);
    } catch (e) {
      if (!isCustosError(e)) throw e;
      unresolved.push({ key: key.name, code: e.code, message: e.message });
      continue;
    }
    if (policy === 'manual') continue;
    const c = compileRotationPolicy(policy);
    if (!horizon) {
      for (const k of planKey(c, key, t0)) if (k.due <= t0) steps.push(toStep(key, c, k));
      continue;
    }
    const until = horizon.until.getTime();
    let state = key;
    let t = t0;
    for (let i = 0; i < MAX_SIMULATED_STEPS_PER_KEY; i++) {
      let next: Candidate | undefined;
      for (const k of planKey(c, state, t)) if (!next || earlier(k, next)) next = k;
      if (!next || next.due > until) break;
      const s = toStep(key, c, next);
      steps.push(s);
      t = Math.max(t, next.due);
      state = applyPlanStep(state, s, new Date(t));
    }
  }
  steps.sort((a, b) => byDue(a, b) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { steps, unresolved };
}

/**
 * Plan rotations. Without a horizon: the steps due now (dueAt ≤ now), which the executor applies
 * one at a time, planning again after each. With `horizon.until`: every step up to that instant,
 * found by simulating the schedule forward from `now` (GET /v1/rotation/plan?days=N). Keys whose
 * policy cannot be resolved are left out; see {@link planRotationsDetailed}.
 */
export function planRotations(
  policies: readonly RotationPolicy[],
  keys: readonly KeyWithVersions[],
  now: Date,
  horizon?: { until: Date },
): PlanStep[] {
  return planRotationsDetailed(policies, keys, now, horizon).steps;
}
