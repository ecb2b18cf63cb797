/**
 * Rows as the store keeps them. Timestamps are RFC 3339 UTC strings with milliseconds (they sort
 * as text in SQLite and PostgreSQL alike); binary values are base64 text for the same reason.
 */
export type KeyState = 'pre-active' | 'active' | 'deactivated' | 'destroy-scheduled' | 'destroyed' | 'compromised';

export interface KeyRecord {
  name: string;
  type: string;
  purpose: 'sign' | 'encrypt';
  rotationPolicy: string | null;
  labels: Record<string, string>;
  createdAt: string;
}

export interface KeyVersionRecord {
  keyName: string;
  version: number;
  state: KeyState;
  kid: string;
  /** Hex CKA_ID of the HSM objects. */
  hsmId: string;
  pkcs11Uri: string;
  /** SubjectPublicKeyInfo DER, base64 (asymmetric keys). */
  publicKey: string | null;
  createdAt: string;
  activatedAt: string | null;
  deactivatedAt: string | null;
  destroyAt: string | null;
  destroyedAt: string | null;
  compromisedAt: string | null;
}

/** A journal entry written before an HSM object is created or destroyed, removed after. */
export interface HsmIntentRecord {
  id: string;
  op: 'generate' | 'destroy';
  hsmId: string;
  keyName: string;
  version: number;
  actor: string;
  createdAt: string;
}

export type Role = 'admin' | 'operator' | 'auditor' | 'provisioner' | 'user';

export interface ApiTokenRecord {
  id: string;
  name: string;
  role: Role;
  /** SHA-256 of the token secret, hex. The secret itself is never stored. */
  tokenHash: string;
  createdAt: string;
  createdBy: string;
  expiresAt: string | null;
  revokedAt: string | null;
}

export interface AuditEventInput {
  actor: string;
  action: string;
  subject: string;
  outcome: 'success' | 'failure' | 'denied';
  details: Record<string, unknown>;
}

export interface AuditEventRecord extends AuditEventInput {
  seq: number;
  time: string;
  prevHash: string;
  hash: string;
}

export interface AuditCheckpointRecord {
  seq: number;
  hash: string;
  time: string;
  kid: string;
  alg: string;
  signature: string;
}
