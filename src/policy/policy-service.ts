import { ATTESTATION_POLICY_SCHEMA, checkAttestationPolicy, type AttestationPolicy } from '../hosts/attestation-policy.js';
import { checkSessionPolicy, checkSessionPolicySet, SESSION_POLICY_SCHEMA, type SessionPolicy } from '../sessions/policy.js';
import type { LoadedPolicy, PolicyKind } from './loader.js';
import { loadRegisteredPolicies, registerPolicyKind } from './registry.js';
import { checkRotationPolicy, checkRotationPolicySet, ROTATION_POLICY_SCHEMA, type RotationPolicy } from './rotation-policy.js';

/** Registers the schema and checks of every policy kind custos knows (idempotent). */
export function registerAllPolicyKinds(): void {
  registerPolicyKind<RotationPolicy>('rotation', ROTATION_POLICY_SCHEMA, checkRotationPolicy, checkRotationPolicySet);
  registerPolicyKind<AttestationPolicy>('attestation', ATTESTATION_POLICY_SCHEMA, checkAttestationPolicy);
  registerPolicyKind<SessionPolicy>('session', SESSION_POLICY_SCHEMA, checkSessionPolicy, checkSessionPolicySet);
}

export interface PolicySummary {
  kind: PolicyKind;
  id: string;
  version: string | number;
  file: string;
  sha256: string;
}

/**
 * Every policy loaded from the policy folder at start-up. Loading is all or nothing: one invalid
 * file stops start-up with its file, line and reason (PolicyError), so custos never runs on a
 * partly understood policy set.
 */
export class PolicySet {
  constructor(
    readonly root: string,
    readonly rotation: readonly LoadedPolicy<RotationPolicy>[],
    readonly attestation: readonly LoadedPolicy<AttestationPolicy>[],
    readonly session: readonly LoadedPolicy<SessionPolicy>[],
  ) {}

  static load(root: string): PolicySet {
    registerAllPolicyKinds();
    return new PolicySet(
      root,
      loadRegisteredPolicies<RotationPolicy>(root, 'rotation'),
      loadRegisteredPolicies<AttestationPolicy>(root, 'attestation'),
      loadRegisteredPolicies<SessionPolicy>(root, 'session'),
    );
  }

  list(): PolicySummary[] {
    const all = [...this.rotation, ...this.attestation, ...this.session] as LoadedPolicy<unknown>[];
    return all.map((p) => ({ kind: p.kind, id: p.id, version: p.version, file: p.file, sha256: p.sha256 }));
  }

  attestationById(id: string): LoadedPolicy<AttestationPolicy> | undefined {
    return this.attestation.find((p) => p.id === id);
  }
}
