import { randomUUID } from 'node:crypto';
import type { KeyStore } from '../hsm/key-store.js';
import type { KeyType } from '../hsm/key-types.js';
import type { KeyService } from '../keys/key-service.js';
import type { Clock } from '../lib/clock.js';
import { isCustosError } from '../lib/errors.js';
import { failpoint } from '../lib/failpoint.js';
import type { Logger } from '../lib/logger.js';
import type { Metrics } from '../http/metrics.js';
import type { PolicySet } from '../policy/policy-service.js';
import type { KeyVersionRecord } from '../store/records.js';
import type { Store } from '../store/store.js';
import { planRotationsDetailed, type RotationPlan } from './planner.js';
import { rotationReport, type RotationReport } from './report.js';
import type { KeyWithVersions, PlanStep } from './types.js';

export const SCHEDULER_LEASE = 'rotation-scheduler';
const SYSTEM_ACTOR = 'system:scheduler';

export interface RotationServiceDeps {
  store: Store;
  hsm: KeyStore;
  keys: KeyService;
  clock: Clock;
  policies: PolicySet;
  log: Logger;
  metrics: Metrics;
  /** Journal entries younger than this may belong to an operation still running elsewhere. */
  reconcileGraceMs: number;
  /** Steps applied per tick at most (the rest wait for the next tick). */
  maxStepsPerTick?: number;
}

export interface ReconcileReport {
  /** HSM objects created under an intent whose version never committed: destroyed. */
  orphansDestroyed: string[];
  /** Destructions that reached the HSM but not the store: completed. */
  destructionsCompleted: string[];
  /** Intents whose operation had no HSM effect: dropped. */
  intentsDropped: string[];
  /** Live versions whose HSM object is missing: cannot be repaired, reported. */
  missingObjects: string[];
  /** custos-labelled objects no version or intent accounts for (another deployment?): reported. */
  unaccounted: string[];
}

/** Store rows → the planner's view of keys (pure data, dates parsed). */
export function toPlannerKeys(keys: { name: string; type: string; purpose: 'sign' | 'encrypt'; labels: Record<string, string>; rotationPolicy: string | null; createdAt: string }[], versions: KeyVersionRecord[]): KeyWithVersions[] {
  const byKey = new Map<string, KeyVersionRecord[]>();
  for (const v of versions) {
    const list = byKey.get(v.keyName);
    if (list) list.push(v);
    else byKey.set(v.keyName, [v]);
  }
  const d = (s: string | null) => (s === null ? undefined : new Date(s));
  return keys.map((k) => ({
    name: k.name,
    type: k.type as KeyType,
    purpose: k.purpose,
    labels: k.labels,
    rotationPolicy: k.rotationPolicy ?? undefined,
    createdAt: new Date(k.createdAt),
    versions: (byKey.get(k.name) ?? []).map((v) => ({
      version: v.version, state: v.state, createdAt: new Date(v.createdAt),
      activatedAt: d(v.activatedAt), deactivatedAt: d(v.deactivatedAt), destroyAt: d(v.destroyAt),
    })),
  }));
}

/**
 * Carries out rotation policies: plans (pure, from policies + key states + now) and applies due
 * steps one at a time, planning again after each, so every step is applied against the state it
 * was planned for. Each step is idempotent and journaled (intent → HSM object → state change);
 * the reconciler finishes or undoes whatever a crash interrupted. Only the holder of the
 * scheduler lease in the store applies steps, so one scheduler runs per deployment.
 */
export class RotationService {
  readonly #d: RotationServiceDeps;
  readonly holder = `scheduler:${randomUUID()}`;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<unknown> | null = null;
  #failures = 0;

  constructor(deps: RotationServiceDeps) {
    this.#d = deps;
  }

  async #plannerKeys(): Promise<KeyWithVersions[]> {
    const [keys, versions] = await Promise.all([this.#d.store.listKeys(), this.#d.store.listAllVersions()]);
    return toPlannerKeys(keys, versions);
  }

  /** Every step due from now until now + days (for GET /v1/rotation/plan and `custos rotation plan`). */
  async plan(days: number): Promise<RotationPlan> {
    const now = this.#d.clock.now();
    const until = new Date(now.getTime() + days * 86_400_000);
    return planRotationsDetailed(this.#d.policies.rotation.map((p) => p.doc), await this.#plannerKeys(), now, { until });
  }

  /** Overdue steps, versions past their NIST SP 800-57 cryptoperiod, upcoming destructions. */
  async report(): Promise<RotationReport> {
    return rotationReport(this.#d.policies.rotation.map((p) => p.doc), await this.#plannerKeys(), this.#d.clock.now());
  }

  /** Reconciles the store's journal with the HSM (objects found by CKA_ID). Idempotent. */
  async reconcile(): Promise<ReconcileReport> {
    const report: ReconcileReport = { orphansDestroyed: [], destructionsCompleted: [], intentsDropped: [], missingObjects: [], unaccounted: [] };
    const now = this.#d.clock.now();
    const intents = await this.#d.store.listIntents();
    for (const i of intents) {
      if (now.getTime() - Date.parse(i.createdAt) < this.#d.reconcileGraceMs) continue;
      const version = await this.#d.store.getVersionByHsmId(i.hsmId);
      const label = `${i.keyName} v${i.version} (${i.hsmId})`;
      if (i.op === 'generate') {
        if (version) {
          // The version committed; only the intent's removal was lost.
          await this.#d.store.tx((t) => t.deleteIntent(i.id));
          report.intentsDropped.push(label);
          continue;
        }
        const obj = await this.#d.hsm.findKey(i.hsmId);
        if (obj) await this.#d.hsm.destroy(i.hsmId);
        await this.#d.store.tx(async (t) => {
          await t.deleteIntent(i.id);
          await t.appendAudit({ actor: 'system:reconciler', action: 'hsm.reconcile', subject: i.keyName, outcome: 'success', details: { intent: 'generate', version: i.version, hsmId: i.hsmId, objectFound: obj !== null, action: obj ? 'orphan destroyed' : 'intent dropped' } }, now.toISOString());
        });
        (obj ? report.orphansDestroyed : report.intentsDropped).push(label);
      } else {
        await this.#d.hsm.destroy(i.hsmId);
        await this.#d.store.tx(async (t) => {
          if (version && version.state !== 'destroyed') await t.updateVersion(i.keyName, i.version, { state: 'destroyed', destroyedAt: now.toISOString() });
          await t.deleteIntent(i.id);
          await t.appendAudit({ actor: 'system:reconciler', action: 'hsm.reconcile', subject: i.keyName, outcome: 'success', details: { intent: 'destroy', version: i.version, hsmId: i.hsmId, action: 'destruction completed' } }, now.toISOString());
        });
        report.destructionsCompleted.push(label);
      }
    }
    // The objects the versions name are expected: a module whose view lags looks again for them.
    // The versions are read again after the objects (as before): a version destroyed or created
    // while the objects were listed is then judged on its state after the listing.
    const expected = (await this.#d.store.listAllVersions()).filter((v) => v.state !== 'destroyed').map((v) => v.hsmId);
    const objects = await this.#d.hsm.listKeys(expected);
    const objectIds = new Set(objects.map((o) => o.id));
    const versions = await this.#d.store.listAllVersions();
    const known = new Set(versions.map((v) => v.hsmId));
    const pending = new Set((await this.#d.store.listIntents()).map((i) => i.hsmId));
    for (const v of versions) {
      if (v.state !== 'destroyed' && !objectIds.has(v.hsmId) && !pending.has(v.hsmId)) report.missingObjects.push(`${v.keyName} v${v.version} (${v.hsmId})`);
    }
    for (const o of objects) {
      if (!known.has(o.id) && !pending.has(o.id) && o.label.startsWith('custos:')) report.unaccounted.push(`${o.label} (${o.id})`);
    }
    if (report.missingObjects.length > 0) this.#d.log.error({ missing: report.missingObjects }, 'key versions whose HSM objects are missing');
    if (report.unaccounted.length > 0) this.#d.log.warn({ objects: report.unaccounted }, 'custos-labelled HSM objects that no version or journal entry accounts for');
    return report;
  }

  /** Applies one due step. Each kind of step is idempotent against the state it was planned on. */
  async applyStep(s: PlanStep): Promise<void> {
    const details = { policyId: s.policyId, reason: s.reason, dueAt: s.dueAt.toISOString() };
    switch (s.action) {
      case 'create-pre-active':
        await this.#d.keys.createVersion(SYSTEM_ACTOR, s.key, 'pre-active', 'rotation.create-pre-active', details);
        break;
      case 'create-active':
        await this.#d.keys.createVersion(SYSTEM_ACTOR, s.key, 'active', 'rotation.create-active', details);
        break;
      case 'activate':
        await this.#d.keys.activateVersion(SYSTEM_ACTOR, s.key, s.version!, 'rotation.activate', details);
        break;
      case 'deactivate':
        await this.#d.keys.transition(SYSTEM_ACTOR, s.key, s.version!, 'deactivated', { action: 'rotation.deactivate', details });
        break;
      case 'schedule-destroy':
        await this.#d.keys.transition(SYSTEM_ACTOR, s.key, s.version!, 'destroy-scheduled', { action: 'rotation.schedule-destroy', destroyAt: s.destroyAt ?? s.dueAt, details });
        break;
      case 'destroy':
        await this.#d.keys.destroyVersion(SYSTEM_ACTOR, s.key, s.version!, 'rotation.destroy');
        break;
    }
    this.#d.metrics.rotationSteps.inc({ action: s.action });
  }

  /**
   * One scheduler tick: take or renew the lease, reconcile, then apply due steps one by one,
   * planning again after each. Returns the steps applied (empty when another process holds the
   * lease). A failing step stops the tick; it is retried on a later tick with backoff.
   */
  async tick(): Promise<PlanStep[]> {
    const now = this.#d.clock.now();
    const leaseMs = Math.max(30_000, this.#d.reconcileGraceMs);
    const held = await this.#d.store.tx((t) => t.acquireLease(SCHEDULER_LEASE, this.holder, now.toISOString(), new Date(now.getTime() + leaseMs).toISOString()));
    if (!held) return [];
    await this.reconcile();
    const applied: PlanStep[] = [];
    const policies = this.#d.policies.rotation.map((p) => p.doc);
    const max = this.#d.maxStepsPerTick ?? 1000;
    while (applied.length < max) {
      const { steps } = planRotationsDetailed(policies, await this.#plannerKeys(), this.#d.clock.now());
      const next = steps[0];
      if (!next) break;
      try {
        await this.applyStep(next);
      } catch (e) {
        this.#failures++;
        this.#d.metrics.rotationFailures.inc({ action: next.action });
        this.#d.log.error({ key: next.key, action: next.action, code: isCustosError(e) ? e.code : 'ERR_INTERNAL', err: e }, 'rotation step failed');
        try {
          await this.#d.store.tx((t) => t.appendAudit({ actor: SYSTEM_ACTOR, action: `rotation.${next.action}`, subject: next.key, outcome: 'failure', details: { version: next.version ?? null, code: isCustosError(e) ? e.code : 'ERR_INTERNAL', policyId: next.policyId } }, this.#d.clock.now().toISOString()));
        } catch {
          /* the failure is logged and counted already */
        }
        throw e;
      }
      applied.push(next);
      failpoint('rotation.after-step');
    }
    this.#failures = 0;
    return applied;
  }

  /** Runs ticks every `intervalMs`, backing off exponentially (to 32×) after failures. */
  start(intervalMs: number): void {
    const schedule = () => {
      const delay = intervalMs * Math.min(32, 2 ** this.#failures);
      this.#timer = setTimeout(run, delay);
      this.#timer.unref();
    };
    const run = () => {
      this.#running = this.tick()
        .catch(() => undefined)
        .finally(() => {
          this.#running = null;
          if (this.#timer !== null) schedule();
        });
    };
    this.#timer = setTimeout(run, 0);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#running;
    try {
      await this.#d.store.tx((t) => t.releaseLease(SCHEDULER_LEASE, this.holder));
    } catch (e) {
      if (!isCustosError(e)) throw e;
    }
  }
}
