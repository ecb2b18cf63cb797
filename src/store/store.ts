import type {
  ApiTokenRecord,
  EnrollmentRecord,
  AppraisalHost,
  HostRecord,
  NonceRecord,
  ProvisioningTokenRecord,
  SessionRecord,
  AuditCheckpointRecord,
  AuditEventInput,
  AuditEventRecord,
  HsmIntentRecord,
  KeyRecord,
  KeyReservation,
  KeyState,
  KeyVersionRecord,
} from './records.js';

/**
 * The store port. One interface of small repositories; adapters (SQLite now, PostgreSQL later)
 * implement every method with portable SQL. Several processes may share one database: anything
 * that must be consistent across processes (audit chain head, nonce consumption, version
 * allocation, the single active version) is enforced by the database inside `tx`, never by
 * process memory.
 */
export interface Repos {
  // keys
  insertKey(k: KeyRecord): Promise<void>;
  getKey(name: string): Promise<KeyRecord | null>;
  listKeys(): Promise<KeyRecord[]>;
  /** Keys reserved for any of these uses (one index lookup). */
  listReservedKeys(usages: readonly KeyReservation[]): Promise<KeyRecord[]>;
  /** Marks an unreserved key as reserved for `usage`; false when it is missing or already reserved. */
  reserveKey(name: string, usage: KeyReservation): Promise<boolean>;
  /** Reserves the next version number of a key (atomic per key). */
  allocateVersion(keyName: string): Promise<number>;
  insertVersion(v: KeyVersionRecord): Promise<void>;
  updateVersion(keyName: string, version: number, patch: Partial<Omit<KeyVersionRecord, 'keyName' | 'version'>>): Promise<void>;
  listVersions(keyName: string): Promise<KeyVersionRecord[]>;
  /** Only the state of a version (the re-check inside a key use's transaction); null if there is no such version. */
  getVersionState(keyName: string, version: number): Promise<KeyState | null>;
  /** A version's state and its key's reservation (the re-check inside a key use's transaction); null if there is no such version. */
  getUseState(keyName: string, version: number): Promise<{ state: KeyState; reservedFor: KeyReservation | null } | null>;
  listAllVersions(): Promise<KeyVersionRecord[]>;
  /** Counts one AES-GCM encryption with a version; false (nothing counted) once `limit` is reached. */
  countEncryption(keyName: string, version: number, limit: number): Promise<boolean>;
  getVersionByHsmId(hsmId: string): Promise<KeyVersionRecord | null>;
  // hsm journal
  insertIntent(i: HsmIntentRecord): Promise<void>;
  deleteIntent(id: string): Promise<void>;
  listIntents(): Promise<HsmIntentRecord[]>;
  // api tokens
  insertApiToken(t: ApiTokenRecord): Promise<void>;
  findApiTokenByHash(tokenHash: string): Promise<ApiTokenRecord | null>;
  listApiTokens(): Promise<ApiTokenRecord[]>;
  revokeApiToken(id: string, at: string): Promise<boolean>;
  // audit
  /** Appends one event to the hash chain; seq, time, prevHash and hash are assigned here. */
  appendAudit(e: AuditEventInput, time: string): Promise<AuditEventRecord>;
  listAudit(afterSeq: number, limit: number): Promise<AuditEventRecord[]>;
  /** Whether any audit event of `action` names `subject` (a scan: for rare checks only). */
  hasAuditEvent(subject: string, action: string): Promise<boolean>;
  lastAudit(): Promise<AuditEventRecord | null>;
  insertCheckpoint(c: AuditCheckpointRecord): Promise<void>;
  listCheckpoints(afterSeq: number, limit: number): Promise<AuditCheckpointRecord[]>;
  lastCheckpoint(): Promise<AuditCheckpointRecord | null>;
  // hosts and enrollment
  insertHost(h: HostRecord): Promise<void>;
  getHost(id: string): Promise<HostRecord | null>;
  /** A host without its last-attestation summary (what an appraisal needs); null if there is no such host. */
  getHostForAppraisal(id: string): Promise<AppraisalHost | null>;
  /** Only what a request re-checks of a host (status, policy, counters); null if there is no such host. */
  getHostState(id: string): Promise<Pick<HostRecord, 'status' | 'policyId' | 'lastClock'> | null>;
  listHosts(): Promise<HostRecord[]>;
  findHostByAkName(akName: string): Promise<HostRecord | null>;
  findHostsByEkPublicHash(ekPublicHash: string): Promise<HostRecord[]>;
  updateHost(id: string, patch: Partial<Omit<HostRecord, 'id'>>): Promise<void>;
  insertEnrollment(e: EnrollmentRecord): Promise<void>;
  getEnrollment(id: string): Promise<EnrollmentRecord | null>;
  updateEnrollment(id: string, patch: Partial<Omit<EnrollmentRecord, 'id'>>): Promise<void>;
  /** The enrollment that registered a host, or null (a host enrolled before enrollments were kept). */
  findEnrollmentOfHost(hostId: string): Promise<EnrollmentRecord | null>;
  insertProvisioningToken(t: ProvisioningTokenRecord): Promise<void>;
  /** A token that is live now (not expired, uses left), without using it; null otherwise. */
  findLiveProvisioningToken(tokenHash: string, now: string): Promise<ProvisioningTokenRecord | null>;
  /** Atomically uses one use of a live token; null when unknown, expired or used up. */
  consumeProvisioningToken(tokenHash: string, now: string): Promise<ProvisioningTokenRecord | null>;
  /** Uses up every use left of a provisioning token; 1 if it had any, else 0. */
  exhaustProvisioningToken(id: string): Promise<number>;
  // nonces: single use, consumed atomically by whichever process sees them first
  insertNonce(n: NonceRecord): Promise<void>;
  /** Deletes and returns the nonce row (whatever its host or expiry), or null when unknown. */
  takeNonce(nonceHash: string): Promise<NonceRecord | null>;
  deleteExpiredNonces(now: string): Promise<number>;
  /** Deletes the `count` oldest live nonces of a host; how many went. */
  evictOldestNonces(hostId: string, now: string, count: number): Promise<number>;
  /** Nonces of a host that are still live at `now`. */
  countLiveNonces(hostId: string, now: string): Promise<number>;
  // sessions
  insertSession(s: SessionRecord): Promise<void>;
  getSession(jti: string): Promise<SessionRecord | null>;
  // leases (one rotation scheduler per deployment)
  /** Takes or renews the named lease for `holder` until `until`; false when another holder has it. */
  acquireLease(name: string, holder: string, now: string, until: string): Promise<boolean>;
  releaseLease(name: string, holder: string): Promise<void>;
  // generic single-row state (counters, markers)
  getMeta(key: string): Promise<string | null>;
  setMeta(key: string, value: string): Promise<void>;
}

export interface Store extends Repos {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * Runs `fn` in one write transaction (all or nothing). `fn` must only await store calls: no HSM
   * or network I/O inside a transaction.
   */
  tx<T>(fn: (t: Repos) => Promise<T>): Promise<T>;
  /** Cheap reachability probe for /readyz. */
  health(): Promise<{ ok: true } | { ok: false; reason: string }>;
  close(): Promise<void>;
}
