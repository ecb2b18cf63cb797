/**
 * `custos rotation report`: what a security team reviews — steps the scheduler should already have
 * done, key versions used past their cryptoperiod, destructions coming up (cancellable until they
 * happen), and rotations inside a policy's `notifyBefore`. Pure, like the planner.
 */
import type { KeyPurpose, KeyType } from '../hsm/key-types.js';
import { KEY_TYPES } from '../hsm/key-types.js';
import { compileRotationPolicy, resolvePolicyForKey, type RotationPolicy } from '../policy/rotation-policy.js';
import { addDurationMs, parseDuration } from './durations.js';
import { nextRotationAt, planRotationsDetailed, type UnresolvedKey } from './planner.js';
import type { KeyVersionState, KeyWithVersions, PlanAction } from './types.js';

/**
 * Cryptoperiods, in one place. Source: NIST SP 800-57 Part 1 Revision 5, "Recommendation for Key
 * Management: Part 1 – General" (May 2020), §5.3.6 "Cryptoperiod Recommendations for Specific Key
 * Types" and Table 1 "Suggested cryptoperiods for key types":
 * - private signature key: originator-usage period (OUP) 1 to 3 years (§5.3.6 item 1);
 * - public signature-verification key: several years, depending on key size (item 2) — no fixed
 *   limit, so not flagged here;
 * - symmetric data-encryption key: OUP up to 2 years; recipient-usage period (RUP) up to 3 years
 *   beyond the end of the OUP (item 6 and Table 1), i.e. decrypting for at most OUP + 3 years.
 * `originatorUsage` bounds how long a version may stay `active` (applying protection);
 * `totalUsage` bounds how long after activation a version may still process (verify/decrypt)
 * while its private or secret half exists.
 */
export interface CryptoperiodRule {
  readonly keyClass: 'private-signature' | 'symmetric-data-encryption';
  readonly originatorUsage: string;
  readonly totalUsage?: string;
  readonly citation: string;
}

const NIST = 'NIST SP 800-57 Part 1 Rev. 5, §5.3.6 and Table 1';

export const CRYPTOPERIODS: Readonly<Record<'sign' | 'encrypt', CryptoperiodRule>> = {
  sign: { keyClass: 'private-signature', originatorUsage: 'P3Y', citation: `${NIST} (private signature key: 1–3 years)` },
  encrypt: {
    keyClass: 'symmetric-data-encryption',
    originatorUsage: 'P2Y',
    totalUsage: 'P5Y',
    citation: `${NIST} (symmetric data-encryption key: originator usage up to 2 years, recipient usage up to 3 years beyond)`,
  },
};

/** The cryptoperiod rule for a key type and purpose. */
export function cryptoperiodFor(type: KeyType, purpose: KeyPurpose): CryptoperiodRule {
  // AES keys only encrypt and EC/RSA keys only sign (../hsm/key-types.ts); the purpose decides.
  return CRYPTOPERIODS[KEY_TYPES[type].purposes.includes(purpose) ? purpose : KEY_TYPES[type].purposes[0]!];
}

export interface OverdueStep {
  readonly key: string;
  readonly version?: number;
  readonly action: PlanAction;
  readonly dueAt: Date;
  readonly overdueMs: number;
  readonly policyId: string;
  readonly reason: string;
}

export interface PastCryptoperiod {
  readonly key: string;
  readonly version: number;
  readonly state: KeyVersionState;
  readonly type: KeyType;
  readonly purpose: KeyPurpose;
  /** `originator` (still applying protection) or `total` (still able to process). */
  readonly period: 'originator' | 'total';
  readonly limit: string;
  readonly since: Date;
  readonly exceededAt: Date;
  readonly citation: string;
}

export interface UpcomingDestruction {
  readonly key: string;
  readonly version: number;
  readonly destroyAt: Date;
  /** True when already `destroy-scheduled` (cancellable now); false when the plan will schedule it. */
  readonly scheduled: boolean;
  readonly policyId?: string;
}

export interface UpcomingRotation {
  readonly key: string;
  readonly at: Date;
  readonly policyId: string;
  readonly notifyBefore: string;
}

export interface RotationReport {
  readonly generatedAt: Date;
  readonly overdue: OverdueStep[];
  readonly pastCryptoperiod: PastCryptoperiod[];
  readonly upcomingDestructions: UpcomingDestruction[];
  readonly upcomingRotations: UpcomingRotation[];
  /** Keys no policy governs, or several do. */
  readonly unresolved: UnresolvedKey[];
}

export interface RotationReportOptions {
  /** A due step counts as overdue once it is this late (ISO 8601 duration, default PT1H). */
  readonly grace?: string;
  /** How far ahead to list destructions (default P30D). */
  readonly horizon?: string;
}

/** Build the report at `now`. */
export function rotationReport(
  policies: readonly RotationPolicy[],
  keys: readonly KeyWithVersions[],
  now: Date,
  options: RotationReportOptions = {},
): RotationReport {
  const t = now.getTime();
  const graceMs = addDurationMs(t, parseDuration(options.grace ?? 'PT1H')) - t;
  const until = addDurationMs(t, parseDuration(options.horizon ?? 'P30D'));

  const due = planRotationsDetailed(policies, keys, now);
  const overdue: OverdueStep[] = due.steps
    .filter((s) => t - s.dueAt.getTime() >= graceMs)
    .map((s) => ({
      key: s.key,
      ...(s.version === undefined ? {} : { version: s.version }),
      action: s.action,
      dueAt: s.dueAt,
      overdueMs: t - s.dueAt.getTime(),
      policyId: s.policyId,
      reason: s.reason,
    }));

  const pastCryptoperiod: PastCryptoperiod[] = [];
  const upcomingDestructions: UpcomingDestruction[] = [];
  const upcomingRotations: UpcomingRotation[] = [];
  for (const key of keys) {
    const rule = cryptoperiodFor(key.type, key.purpose);
    const oup = parseDuration(rule.originatorUsage);
    const total = rule.totalUsage === undefined ? undefined : parseDuration(rule.totalUsage);
    for (const v of key.versions) {
      if (v.state === 'destroy-scheduled' && v.destroyAt && v.destroyAt.getTime() <= until) {
        upcomingDestructions.push({ key: key.name, version: v.version, destroyAt: v.destroyAt, scheduled: true });
      }
      const since = v.activatedAt;
      if (!since) continue;
      if (v.state === 'active') {
        const end = addDurationMs(since.getTime(), oup);
        if (end <= t) {
          pastCryptoperiod.push({ key: key.name, version: v.version, state: v.state, type: key.type, purpose: key.purpose, period: 'originator', limit: rule.originatorUsage, since, exceededAt: new Date(end), citation: rule.citation });
        }
      } else if (total && (v.state === 'deactivated' || v.state === 'compromised')) {
        const end = addDurationMs(since.getTime(), total);
        if (end <= t) {
          pastCryptoperiod.push({ key: key.name, version: v.version, state: v.state, type: key.type, purpose: key.purpose, period: 'total', limit: rule.totalUsage!, since, exceededAt: new Date(end), citation: rule.citation });
        }
      }
    }
    let policy;
    try {
      policy = resolvePolicyForKey(policies, key);
    } catch {
      continue;
    }
    if (policy === 'manual' || policy.notifyBefore === undefined) continue;
    const active = key.versions.find((v) => v.state === 'active');
    if (!active) continue;
    const next = nextRotationAt(policy, key, active.activatedAt ?? active.createdAt);
    if (next && next.getTime() - t <= compileRotationPolicy(policy).notifyBeforeMs && next.getTime() > t) {
      upcomingRotations.push({ key: key.name, at: next, policyId: policy.id, notifyBefore: policy.notifyBefore });
    }
  }

  // Destructions the plan will schedule within the horizon (not cancellable yet: not scheduled).
  const ahead = planRotationsDetailed(policies, keys, now, { until: new Date(until) });
  for (const s of ahead.steps) {
    if (s.action === 'schedule-destroy' && s.destroyAt && s.destroyAt.getTime() <= until && s.version !== undefined) {
      upcomingDestructions.push({ key: s.key, version: s.version, destroyAt: s.destroyAt, scheduled: false, policyId: s.policyId });
    }
  }
  upcomingDestructions.sort((a, b) => a.destroyAt.getTime() - b.destroyAt.getTime() || (a.key < b.key ? -1 : a.key > b.key ? 1 : a.version - b.version));
  pastCryptoperiod.sort((a, b) => a.exceededAt.getTime() - b.exceededAt.getTime());
  upcomingRotations.sort((a, b) => a.at.getTime() - b.at.getTime());
  return { generatedAt: now, overdue, pastCryptoperiod, upcomingDestructions, upcomingRotations, unresolved: due.unresolved };
}
