/**
 * Rotation planning over 100k keys: `planRotations` for the steps due now (what the executor asks
 * for on every tick), plus a 30-day horizon plan (GET /v1/rotation/plan?days=30) over the same
 * keys. Keys are spread over the example policies' kinds, at every point of their cycle.
 */
import { performance } from 'node:perf_hooks';
import type { AutomaticRotationPolicy, RotationPolicy } from '../src/policy/rotation-policy.js';
import { planRotations } from '../src/rotation/planner.js';
import type { KeyVersionInfo, KeyWithVersions } from '../src/rotation/types.js';

const DAY = 86_400_000;

export interface PlanBenchResult {
  keys: number;
  /** Milliseconds for the due plan over every key. */
  ms: number;
  steps: number;
  /** Milliseconds for a 30-day horizon plan over every key. */
  horizonMs: number;
  horizonSteps: number;
}

function benchPolicies(): RotationPolicy[] {
  const base = { version: 1, destroyPendingWindow: 'P14D', deactivateAfter: 'P30D', destroyAfter: 'P44D' } as const;
  const auto: AutomaticRotationPolicy[] = [
    { ...base, id: 'issuer', selector: { names: ['issuer-*'], purposes: ['sign'] }, rotateEvery: 'P90D', prePublish: 'P7D', jitter: 'PT1H', window: { start: '02:00', end: '04:00', days: ['mon', 'tue', 'wed', 'thu'] }, maxVersions: 4 },
    { ...base, id: 'data', selector: { types: ['aes-256'] }, rotateEvery: 'P1Y', deactivateAfter: 'P1Y', destroyAfter: 'P1Y45D', destroyPendingWindow: 'P30D', window: { start: '01:00', end: '05:00' }, maxVersions: 5 },
    { ...base, id: 'tenant', selector: { names: ['tenant-*'], labels: { tier: 'gold' } }, rotateEvery: 'P1M', prePublish: 'P2D', jitter: 'PT6H' },
  ];
  return [...auto, { id: 'manual', version: 1, manual: true, selector: { names: ['partner-*'] } }];
}

/** 100k keys in every state of their cycle (some with a pre-active, deactivated or pending version). */
export function benchKeys(n: number, now: Date): KeyWithVersions[] {
  const keys: KeyWithVersions[] = [];
  const t = now.getTime();
  for (let i = 0; i < n; i++) {
    const created = new Date(t - (i % 700) * DAY - (i % 24) * 3_600_000);
    const kind = i % 10;
    const versions: KeyVersionInfo[] = [];
    if (i % 4 === 0) versions.push({ version: 1, state: 'destroy-scheduled', createdAt: created, activatedAt: created, deactivatedAt: new Date(t - 40 * DAY), destroyAt: new Date(t + (i % 20) * DAY - 5 * DAY) });
    if (i % 3 === 0) versions.push({ version: 2, state: 'deactivated', createdAt: created, activatedAt: created, deactivatedAt: new Date(t - (i % 50) * DAY) });
    const activatedAt = new Date(Math.max(created.getTime(), t - (i % 120) * DAY));
    versions.push({ version: 3, state: 'active', createdAt: activatedAt, activatedAt });
    if (i % 7 === 0) versions.push({ version: 4, state: 'pre-active', createdAt: new Date(t - (i % 9) * DAY) });
    if (kind < 5) keys.push({ name: `issuer-${i}`, type: 'ec-p256', purpose: 'sign', createdAt: created, versions });
    else if (kind < 8) keys.push({ name: `data-${i}`, type: 'aes-256', purpose: 'encrypt', createdAt: created, versions });
    else if (kind < 9) keys.push({ name: `tenant-${i}`, type: 'ec-p384', purpose: 'sign', labels: { tier: 'gold' }, createdAt: created, versions });
    else keys.push({ name: `partner-${i}`, type: 'rsa-3072', purpose: 'sign', createdAt: created, versions });
  }
  return keys;
}

export async function planBench(n = 100_000): Promise<PlanBenchResult> {
  const now = new Date(Date.UTC(2026, 5, 1, 12));
  const policies = benchPolicies();
  const keys = benchKeys(n, now);
  // Warm the JIT on a slice, then measure the whole set.
  planRotations(policies, keys.slice(0, Math.min(n, 5000)), now);
  planRotations(policies, keys.slice(0, Math.min(n, 2000)), now, { until: new Date(now.getTime() + 30 * DAY) });
  let t = performance.now();
  const steps = planRotations(policies, keys, now);
  const ms = performance.now() - t;
  t = performance.now();
  const horizon = planRotations(policies, keys, now, { until: new Date(now.getTime() + 30 * DAY) });
  const horizonMs = performance.now() - t;
  return { keys: keys.length, ms: Math.round(ms * 10) / 10, steps: steps.length, horizonMs: Math.round(horizonMs * 10) / 10, horizonSteps: horizon.length };
}
