import type { AuditCheckpoint, AuditEvent, AuditEventBody } from '../audit/chain.js';

/**
 * Rows as the store keeps them. Timestamps are RFC 3339 UTC strings with milliseconds (they sort
 * as text in SQLite and PostgreSQL alike); binary values are base64 text for the same reason.
 */
export type KeyState = 'pre-active' | 'active' | 'deactivated' | 'destroy-scheduled' | 'destroyed' | 'compromised';

/**
 * What custos itself signs with a reserved key. A reserved key signs only custos's own
 * statements: the keys API refuses to sign caller data with it (ERR_KEY_RESERVED), so that nobody
 * holding `keys.use` can make a session token, an attestation result or an audit checkpoint.
 */
export type KeyReservation = 'session-token' | 'attestation-result' | 'audit-checkpoint';

export interface KeyRecord {
  name: string;
  type: string;
  purpose: 'sign' | 'encrypt';
  rotationPolicy: string | null;
  labels: Record<string, string>;
  createdAt: string;
  /** Set once, when custos takes the key for its own signatures; never cleared. */
  reservedFor: KeyReservation | null;
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

/** What a caller records; seq, time and the chain hashes are assigned by the store's append. */
export type AuditEventInput = Omit<AuditEventBody, 'seq' | 'time'>;
/** Stored audit rows are exactly the chain's events and checkpoints (src/audit/chain.ts). */
export type AuditEventRecord = AuditEvent;
export type AuditCheckpointRecord = AuditCheckpoint;

export type HostStatus = 'active' | 'revoked';

export interface HostRecord {
  id: string;
  status: HostStatus;
  /** TPM Name of the AK (nameAlg ‖ digest), hex. Pinned at activation. */
  akName: string;
  /** TPM2B_PUBLIC of the AK, base64. */
  akPublic: string;
  /** The qualifiedSigner its quotes must carry (AK under the EK), hex. */
  akQualifiedName: string;
  /** SHA-256 of the EK SubjectPublicKeyInfo DER, hex. */
  ekPublicHash: string;
  ekCertificateSubject: string | null;
  ekCertificateIssuer: string | null;
  labels: Record<string, string>;
  /** Attestation policy chosen at enrollment. */
  policyId: string;
  enrolledAt: string;
  revokedAt: string | null;
  /** Summary of the last appraisal (status, time, policy). */
  lastAttestation: Record<string, unknown> | null;
  /** Per-AK TPM counters from the last quote that verified, for rollback checks. */
  /** Counters of the newest quote that verified; firmwareVersion as a decimal string (absent in older records). */
  lastClock: { clock: string; resetCount: number; restartCount: number; firmwareVersion?: string } | null;
}

/** A host as an appraisal reads it: everything but the summary of its last attestation. */
export type AppraisalHost = Omit<HostRecord, 'lastAttestation'>;

export interface EnrollmentRecord {
  id: string;
  status: 'pending' | 'activated' | 'failed';
  akPublic: string;
  akName: string;
  akQualifiedName: string;
  ekPublicHash: string;
  ekCertificateSubject: string | null;
  ekCertificateIssuer: string | null;
  policyId: string;
  /** SHA-256 of the credential secret, hex; the secret itself is never stored. */
  secretHash: string;
  labels: Record<string, string>;
  provisioningTokenId: string | null;
  actor: string;
  createdAt: string;
  expiresAt: string;
  hostId: string | null;
}

export interface ProvisioningTokenRecord {
  id: string;
  tokenHash: string;
  createdAt: string;
  createdBy: string;
  expiresAt: string;
  usesLeft: number;
  labels: Record<string, string>;
}

export type NoncePurpose = 'attest' | 'session';

export interface NonceRecord {
  /** SHA-256 of the nonce, hex: the nonce itself is not kept. */
  nonceHash: string;
  hostId: string;
  createdAt: string;
  expiresAt: string;
}

export interface SessionRecord {
  jti: string;
  hostId: string;
  audience: string;
  kid: string;
  /** Issuer key name and version, so destruction of the version ends its tokens. */
  keyName: string;
  keyVersion: number;
  cnfJkt: string;
  issuedAt: string;
  expiresAt: string;
  revokedAt: string | null;
}
