/**
 * Rotation policies: their JSON Schema (the copy in policies/schema/rotation.schema.json is kept
 * equal to {@link ROTATION_POLICY_SCHEMA} by a test), TypeScript shape, semantic checks, static
 * overlap detection, and the runtime choice of the policy that governs a key.
 *
 * Timeline of one key version under an automatic policy (all instants UTC):
 *   created pre-active at R − prePublish → active at R (the previous active version is deactivated
 *   in the same step) → deactivated, still usable to verify/decrypt, for `deactivateAfter` →
 *   destroy-scheduled (cancellable) until destroyAt = deactivatedAt + destroyAfter → destroyed.
 * So `destroyAfter − deactivateAfter` is the pending window, which must be at least
 * `destroyPendingWindow`; that window is also the least notice any early destruction (maxVersions
 * pruning) gets.
 */
import { CustosError } from '../lib/errors.js';
import { KEY_TYPES, type KeyPurpose, type KeyType } from '../hsm/key-types.js';
import { durationBoundsMs, parseDuration, tryParseDuration } from '../rotation/durations.js';
import type { KeyWithVersions } from '../rotation/types.js';
import type { LoadedPolicy, PolicyIssue } from './loader.js';
import { registerPolicyKind } from './registry.js';

export type Weekday = 'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat' | 'sun';
export const WEEKDAYS: readonly Weekday[] = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

export interface RotationSelector {
  /** Exact key names or globs (`*` any run of characters, `?` one character). */
  readonly names?: readonly string[];
  /** Every listed label must be present on the key with this value. */
  readonly labels?: Readonly<Record<string, string>>;
  readonly types?: readonly KeyType[];
  readonly purposes?: readonly KeyPurpose[];
}

export interface RotationWindow {
  /** UTC time of day HH:MM at which the window opens. */
  readonly start: string;
  /** UTC time of day HH:MM at which it closes; earlier than start means it spans midnight. */
  readonly end: string;
  /** Days (by the day the window opens) on which it opens; all days when absent. */
  readonly days?: readonly Weekday[];
}

interface RotationPolicyBase {
  readonly id: string;
  readonly version: string | number;
  readonly description?: string;
  readonly selector: RotationSelector;
}

export interface ManualRotationPolicy extends RotationPolicyBase {
  readonly manual: true;
}

export interface AutomaticRotationPolicy extends RotationPolicyBase {
  readonly manual?: false;
  /** `production` (default) bounds destroyPendingWindow to 7–30 days; `test` allows shorter. */
  readonly profile?: 'production' | 'test';
  readonly rotateEvery: string;
  readonly window?: RotationWindow;
  readonly jitter?: string;
  readonly prePublish?: string;
  readonly deactivateAfter: string;
  readonly destroyAfter: string;
  readonly destroyPendingWindow: string;
  readonly notifyBefore?: string;
  readonly maxVersions?: number;
}

export type RotationPolicy = ManualRotationPolicy | AutomaticRotationPolicy;

const duration = { type: 'string', format: 'iso8601-duration' } as const;

const selectorSchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    names: {
      type: 'array',
      minItems: 1,
      uniqueItems: true,
      items: { type: 'string', minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9._*?-]+$' },
    },
    labels: {
      type: 'object',
      minProperties: 1,
      propertyNames: { pattern: '^[A-Za-z0-9._/-]{1,63}$' },
      additionalProperties: { type: 'string', maxLength: 200 },
    },
    types: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', enum: Object.keys(KEY_TYPES) } },
    purposes: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', enum: ['sign', 'encrypt'] } },
  },
} as const;

const common = {
  id: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' },
  version: { anyOf: [{ type: 'integer', minimum: 1 }, { type: 'string', minLength: 1, maxLength: 64 }] },
  description: { type: 'string', maxLength: 2000 },
  selector: selectorSchema,
} as const;

/** JSON Schema (draft 2020-12 subset understood by ajv's default draft-07 mode) of a rotation policy. */
export const ROTATION_POLICY_SCHEMA = {
  $id: 'https://custos.dev/schema/rotation-policy.json',
  title: 'custos rotation policy',
  type: 'object',
  // if/then/else rather than oneOf, so that a bad automatic policy reports only its own errors.
  if: { type: 'object', required: ['manual'], properties: { manual: { const: true } } },
  then: {
    type: 'object',
    additionalProperties: false,
    required: ['id', 'version', 'selector', 'manual'],
    properties: { ...common, manual: { const: true } },
  },
  else: {
    type: 'object',
    additionalProperties: false,
    required: ['id', 'version', 'selector', 'rotateEvery', 'deactivateAfter', 'destroyAfter', 'destroyPendingWindow'],
    properties: {
      ...common,
      manual: { const: false },
      profile: { type: 'string', enum: ['production', 'test'] },
      rotateEvery: duration,
      window: {
        type: 'object',
        additionalProperties: false,
        required: ['start', 'end'],
        properties: {
          start: { type: 'string', format: 'utc-time-of-day' },
          end: { type: 'string', format: 'utc-time-of-day' },
          days: {
            type: 'array',
            minItems: 1,
            uniqueItems: true,
            items: { type: 'string', enum: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] },
          },
        },
      },
      jitter: duration,
      prePublish: duration,
      deactivateAfter: duration,
      destroyAfter: duration,
      destroyPendingWindow: duration,
      notifyBefore: duration,
      maxVersions: { type: 'integer', minimum: 2, maximum: 1000 },
    },
  },
} as const;

const DAY = 86_400_000;
const PENDING_BOUNDS: Record<'production' | 'test', { min: number; max: number }> = {
  production: { min: 7 * DAY, max: 30 * DAY },
  test: { min: 0, max: 30 * DAY },
};

export function isManualPolicy(p: RotationPolicy): p is ManualRotationPolicy {
  return p.manual === true;
}

/** Minutes after midnight of an HH:MM string (already schema-checked). */
export function timeOfDayMinutes(hhmm: string): number {
  return Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));
}

/**
 * Per-file semantic checks that a schema cannot express. Durations are compared by their bounds
 * over every possible start (a month is 28–31 days), so a check holds for every period.
 */
export function checkRotationPolicy(p: RotationPolicy): PolicyIssue[] {
  if (isManualPolicy(p)) return [];
  const issues: PolicyIssue[] = [];
  const b = (s: string | undefined) => (s === undefined ? undefined : durationBoundsMs(parseDuration(s)));
  const every = b(p.rotateEvery)!;
  const deact = b(p.deactivateAfter)!;
  const destroy = b(p.destroyAfter)!;
  const pending = b(p.destroyPendingWindow)!;
  if (every.min <= 0) issues.push({ path: ['rotateEvery'], reason: 'must be longer than zero' });
  const pre = b(p.prePublish);
  if (pre && pre.max >= every.min) issues.push({ path: ['prePublish'], reason: 'must be shorter than rotateEvery' });
  if (destroy.min < deact.max) {
    issues.push({ path: ['destroyAfter'], reason: 'must not be shorter than deactivateAfter' });
  } else if (destroy.min - deact.max < pending.max) {
    issues.push({
      path: ['destroyAfter'],
      reason: 'must be at least deactivateAfter + destroyPendingWindow (destruction is scheduled when deactivateAfter ends)',
    });
  }
  const profile = p.profile ?? 'production';
  const range = PENDING_BOUNDS[profile];
  if (pending.min < range.min || pending.max > range.max) {
    const words = profile === 'production' ? 'between 7 and 30 days in the production profile' : 'at most 30 days';
    issues.push({ path: ['destroyPendingWindow'], reason: `must be ${words}` });
  }
  const jitter = b(p.jitter);
  if (jitter && jitter.max >= every.min) issues.push({ path: ['jitter'], reason: 'must be shorter than rotateEvery' });
  const notify = b(p.notifyBefore);
  if (notify && notify.max >= every.min) issues.push({ path: ['notifyBefore'], reason: 'must be shorter than rotateEvery' });
  if (p.window && p.window.start === p.window.end) {
    issues.push({ path: ['window', 'end'], reason: 'must differ from start (omit window to allow any time)' });
  }
  const sel = p.selector;
  if (sel.types && sel.purposes && !sel.types.some((t) => sel.purposes!.some((u) => KEY_TYPES[t].purposes.includes(u)))) {
    issues.push({ path: ['selector'], reason: 'no key type listed can have any purpose listed, so it selects nothing' });
  }
  return issues;
}

/** Whether two globs (`*`, `?`, literals) can match one common name. */
export function globsIntersect(a: string, b: string): boolean {
  const memo = new Map<number, boolean>();
  const la = a.length;
  const lb = b.length;
  const f = (i: number, j: number): boolean => {
    const k = i * (lb + 1) + j;
    const hit = memo.get(k);
    if (hit !== undefined) return hit;
    let r: boolean;
    if (i === la && j === lb) r = true;
    else if (i < la && a[i] === '*') r = f(i + 1, j) || (j < lb && f(i, j + 1));
    else if (j < lb && b[j] === '*') r = f(i, j + 1) || (i < la && f(i + 1, j));
    else if (i === la || j === lb) r = false;
    else r = (a[i] === '?' || b[j] === '?' || a[i] === b[j]) && f(i + 1, j + 1);
    memo.set(k, r);
    return r;
  };
  return f(0, 0);
}

/** Conservative static test: false only when no key can be matched by both selectors. */
export function selectorsMayOverlap(x: RotationSelector, y: RotationSelector): boolean {
  const types = (s: RotationSelector): KeyType[] => {
    const all = Object.keys(KEY_TYPES) as KeyType[];
    return all.filter((t) => (!s.types || s.types.includes(t)) && (!s.purposes || s.purposes.some((u) => KEY_TYPES[t].purposes.includes(u))));
  };
  const tx = types(x);
  const ty = types(y);
  if (!tx.some((t) => ty.includes(t))) return false;
  if (x.purposes && y.purposes && !x.purposes.some((u) => y.purposes!.includes(u))) return false;
  if (x.labels && y.labels) {
    for (const [k, v] of Object.entries(x.labels)) {
      const w = y.labels[k];
      if (w !== undefined && w !== v) return false;
    }
  }
  if (x.names && y.names && !x.names.some((n) => y.names!.some((m) => globsIntersect(n, m)))) return false;
  return true;
}

/** Cross-file check: two policies whose selectors may select the same key are an error. */
export function checkRotationPolicySet(policies: readonly LoadedPolicy<RotationPolicy>[]): (PolicyIssue & { index: number })[] {
  const issues: (PolicyIssue & { index: number })[] = [];
  for (let j = 1; j < policies.length; j++) {
    for (let i = 0; i < j; i++) {
      if (selectorsMayOverlap(policies[i]!.doc.selector, policies[j]!.doc.selector)) {
        issues.push({ index: j, path: ['selector'], reason: `overlaps the selector of policy "${policies[i]!.id}" (a key could be governed by both)` });
      }
    }
  }
  return issues;
}

registerPolicyKind<RotationPolicy>('rotation', ROTATION_POLICY_SCHEMA, checkRotationPolicy, checkRotationPolicySet);

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\-]/g, '\\$&').replaceAll('*', '.*').replaceAll('?', '.');
  return new RegExp(`^${body}$`, 's');
}

const compiledSelectors = new WeakMap<RotationSelector, (k: KeyWithVersions) => boolean>();

/** A fast predicate for a selector (globs compiled once). */
export function selectorMatcher(sel: RotationSelector): (k: KeyWithVersions) => boolean {
  let m = compiledSelectors.get(sel);
  if (m) return m;
  const exact = new Set((sel.names ?? []).filter((n) => !/[*?]/.test(n)));
  const globs = (sel.names ?? []).filter((n) => /[*?]/.test(n)).map(globToRegExp);
  const labels = sel.labels ? Object.entries(sel.labels) : [];
  m = (k) =>
    (!sel.names || exact.has(k.name) || globs.some((g) => g.test(k.name))) &&
    (!sel.types || sel.types.includes(k.type)) &&
    (!sel.purposes || sel.purposes.includes(k.purpose)) &&
    labels.every(([lk, lv]) => k.labels?.[lk] === lv);
  compiledSelectors.set(sel, m);
  return m;
}

/**
 * The policy governing a key. A key's own `rotationPolicy` (an id, or `manual`) wins over
 * selectors; otherwise exactly one policy's selector must match.
 * @throws CustosError ERR_POLICY_INVALID when several policies match (never a silent pick);
 *   ERR_POLICY_NOT_FOUND when none does or the named policy is not loaded (deny by default).
 */
export function resolvePolicyForKey(policies: readonly RotationPolicy[], key: KeyWithVersions): AutomaticRotationPolicy | 'manual' {
  let chosen: RotationPolicy | undefined;
  if (key.rotationPolicy !== undefined) {
    if (key.rotationPolicy === 'manual') return 'manual';
    chosen = policies.find((p) => p.id === key.rotationPolicy);
    if (!chosen) {
      throw new CustosError('ERR_POLICY_NOT_FOUND', `key ${key.name} names rotation policy "${key.rotationPolicy}", which is not loaded`, {
        details: { key: key.name, policy: key.rotationPolicy },
      });
    }
  } else {
    const matches = policies.filter((p) => selectorMatcher(p.selector)(key));
    if (matches.length > 1) {
      throw new CustosError('ERR_POLICY_INVALID', `key ${key.name} is selected by several rotation policies: ${matches.map((p) => p.id).join(', ')}`, {
        details: { key: key.name, policies: matches.map((p) => p.id) },
      });
    }
    chosen = matches[0];
    if (!chosen) {
      throw new CustosError('ERR_POLICY_NOT_FOUND', `no rotation policy selects key ${key.name}`, { details: { key: key.name } });
    }
  }
  return isManualPolicy(chosen) ? 'manual' : chosen;
}

/** Durations of an automatic policy, parsed once (the planner's hot path uses these). */
export interface CompiledRotationPolicy {
  readonly policy: AutomaticRotationPolicy;
  readonly rotateEvery: ReturnType<typeof parseDuration>;
  readonly jitterMs: number;
  readonly prePublishMs: number;
  readonly deactivateAfter: ReturnType<typeof parseDuration>;
  readonly destroyAfter: ReturnType<typeof parseDuration>;
  readonly pendingWindow: ReturnType<typeof parseDuration>;
  readonly notifyBeforeMs: number;
  /** Window as [openMinute, lengthMinutes, allowed weekdays (0 = Sunday)] or undefined. */
  readonly window?: { readonly open: number; readonly length: number; readonly days: ReadonlySet<number> } | undefined;
}

const compiledPolicies = new WeakMap<AutomaticRotationPolicy, CompiledRotationPolicy>();

/** Parse a policy's durations once. Jitter, prePublish and notifyBefore are fixed-length in ms. */
export function compileRotationPolicy(policy: AutomaticRotationPolicy): CompiledRotationPolicy {
  const hit = compiledPolicies.get(policy);
  if (hit) return hit;
  const fixedMs = (s: string | undefined): number => {
    if (s === undefined) return 0;
    const d = tryParseDuration(s);
    if (!d) throw new CustosError('ERR_POLICY_INVALID', `policy ${policy.id}: bad duration ${s}`);
    // Sub-period offsets are taken at their shortest so that they never exceed what was checked.
    return durationBoundsMs(d).min;
  };
  let window: CompiledRotationPolicy['window'];
  if (policy.window) {
    const open = timeOfDayMinutes(policy.window.start);
    const close = timeOfDayMinutes(policy.window.end);
    const length = close > open ? close - open : close + 1440 - open;
    const days = new Set((policy.window.days ?? WEEKDAYS).map((d) => WEEKDAYS.indexOf(d)));
    window = { open, length, days };
  }
  const c: CompiledRotationPolicy = {
    policy,
    rotateEvery: parseDuration(policy.rotateEvery),
    jitterMs: fixedMs(policy.jitter),
    prePublishMs: fixedMs(policy.prePublish),
    deactivateAfter: parseDuration(policy.deactivateAfter),
    destroyAfter: parseDuration(policy.destroyAfter),
    pendingWindow: parseDuration(policy.destroyPendingWindow),
    notifyBeforeMs: fixedMs(policy.notifyBefore),
    window,
  };
  compiledPolicies.set(policy, c);
  return c;
}
