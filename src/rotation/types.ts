/**
 * The shapes the rotation planner reads and writes. They mirror the key metadata of the API
 * (`GET /v1/keys/{name}`), reduced to what a schedule depends on.
 */
import type { KeyPurpose, KeyType } from '../hsm/key-types.js';

/** Key version states, as DESIGN.md "Key lifecycle" (KMIP-style). */
export type KeyVersionState = 'pre-active' | 'active' | 'deactivated' | 'destroy-scheduled' | 'destroyed' | 'compromised';

export interface KeyVersionInfo {
  readonly version: number;
  readonly state: KeyVersionState;
  readonly createdAt: Date;
  readonly activatedAt?: Date | undefined;
  readonly deactivatedAt?: Date | undefined;
  readonly destroyAt?: Date | undefined;
}

export interface KeyWithVersions {
  readonly name: string;
  readonly type: KeyType;
  readonly purpose: KeyPurpose;
  readonly labels?: Readonly<Record<string, string>> | undefined;
  /** A policy id, or `manual`; when set it overrides selector matching. */
  readonly rotationPolicy?: string | undefined;
  readonly createdAt: Date;
  readonly versions: readonly KeyVersionInfo[];
}

export type PlanAction = 'create-pre-active' | 'activate' | 'deactivate' | 'schedule-destroy' | 'destroy' | 'create-active';

export interface PlanStep {
  readonly key: string;
  /** The version acted on; absent for the `create-*` actions (the executor assigns the number). */
  readonly version?: number | undefined;
  readonly action: PlanAction;
  readonly dueAt: Date;
  /** Human-readable why, for plans, reports and audit details. */
  readonly reason: string;
  readonly policyId: string;
  /**
   * `activate`: the version that the same step deactivates (the swap is one atomic step, so the
   * key never has zero or two active versions between steps).
   */
  readonly supersedes?: number | undefined;
  /** `schedule-destroy`: when the destruction becomes due (cancellable until then). */
  readonly destroyAt?: Date | undefined;
}
