import { createPublicKey, hash as oneShotHash, randomBytes, randomUUID, verify as cryptoVerify, constants as cryptoConstants, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { KeyStore } from '../hsm/key-store.js';
import { HASH_BYTES, isKeyType, keyTypeInfo, type HashName, type KeyType, type KeyTypeInfo, type SignScheme } from '../hsm/key-types.js';
import type { Clock } from '../lib/clock.js';
import { ecdsaDerToRaw, ecdsaRawToDer } from '../lib/ecdsa-signature.js';
import { fromBase64 } from '../lib/encoding.js';
import { CustosError } from '../lib/errors.js';
import { failpoint } from '../lib/failpoint.js';
import type { AuditEventInput, KeyRecord, KeyReservation, KeyState, KeyVersionRecord } from '../store/records.js';
import type { Repos, Store } from '../store/store.js';
import { resolvePolicyForKey, type RotationPolicy } from '../policy/rotation-policy.js';

export const KEY_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** JOSE names of the signature algorithms a key type allows; the first one is the default. */
const SIGN_ALGORITHMS: Record<'ec' | 'rsa', Record<string, { scheme: SignScheme; hash: HashName }>> = {
  ec: {},
  rsa: {
    RS256: { scheme: 'rsa-pkcs1', hash: 'sha256' },
    PS256: { scheme: 'rsa-pss', hash: 'sha256' },
    RS384: { scheme: 'rsa-pkcs1', hash: 'sha384' },
    PS384: { scheme: 'rsa-pss', hash: 'sha384' },
    RS512: { scheme: 'rsa-pkcs1', hash: 'sha512' },
    PS512: { scheme: 'rsa-pss', hash: 'sha512' },
  },
};

export interface ResolvedAlgorithm {
  name: string;
  scheme: SignScheme;
  hash: HashName;
}

/** Resolves the JOSE algorithm requested for a key type (default: the type's own). */
export function resolveSignAlgorithm(info: KeyTypeInfo, requested?: string): ResolvedAlgorithm {
  if (info.kind === 'ec') {
    const name = info.jwsAlg!;
    if (requested !== undefined && requested !== name) throw new CustosError('ERR_BAD_REQUEST', `algorithm must be ${name} for ${info.type}`, { details: { field: 'algorithm' } });
    return { name, scheme: 'ecdsa', hash: info.hash };
  }
  if (info.kind === 'rsa') {
    const name = requested ?? info.jwsAlg!;
    const a = SIGN_ALGORITHMS.rsa[name];
    if (!a) throw new CustosError('ERR_BAD_REQUEST', `algorithm ${name} is not one of ${Object.keys(SIGN_ALGORITHMS.rsa).join(', ')}`, { details: { field: 'algorithm' } });
    return { name, ...a };
  }
  throw new CustosError('ERR_KEY_PURPOSE', 'this key does not sign');
}

export interface KeyVersionView {
  version: number;
  state: KeyState;
  kid: string;
  createdAt: string;
  activatedAt?: string;
  deactivatedAt?: string;
  destroyAt?: string;
  destroyedAt?: string;
  compromisedAt?: string;
  pkcs11Uri: string;
}

export interface KeyView {
  name: string;
  type: string;
  purpose: 'sign' | 'encrypt';
  rotationPolicy: string | null;
  /** The policy that governs the key now (its own, or the one whose selector matches), or manual. */
  governingPolicy: string | null;
  labels: Record<string, string>;
  createdAt: string;
  versions: KeyVersionView[];
}

export function versionView(v: KeyVersionRecord): KeyVersionView {
  return {
    version: v.version,
    state: v.state,
    kid: v.kid,
    createdAt: v.createdAt,
    ...(v.activatedAt ? { activatedAt: v.activatedAt } : {}),
    ...(v.deactivatedAt ? { deactivatedAt: v.deactivatedAt } : {}),
    ...(v.destroyAt ? { destroyAt: v.destroyAt } : {}),
    ...(v.destroyedAt ? { destroyedAt: v.destroyedAt } : {}),
    ...(v.compromisedAt ? { compromisedAt: v.compromisedAt } : {}),
    pkcs11Uri: v.pkcs11Uri,
  };
}

export function kidOf(name: string, version: number): string {
  return `${name}.v${version}`;
}

/** States in which a version may still verify signatures or decrypt. */
const VERIFY_STATES: ReadonlySet<KeyState> = new Set(['pre-active', 'active', 'deactivated', 'compromised']);
const SIGN_STATES: ReadonlySet<KeyState> = new Set(['active']);
/** Longest time a key use may rely on a cached key state before re-reading it. */
const USE_CACHE_MS = 1000;
const DECRYPT_STATES: ReadonlySet<KeyState> = new Set(['active', 'deactivated', 'compromised']);

export interface KeyServiceDeps {
  store: Store;
  hsm: KeyStore;
  clock: Clock;
  /** Loaded rotation policies: every key must be governed by exactly one, or be manual. */
  rotationPolicies?: () => readonly RotationPolicy[];
  /** Encryptions one AES-GCM version may make (default GCM_INVOCATION_LIMIT; tests lower it). */
  gcmInvocationLimit?: number;
}

/**
 * AES-GCM with random 96-bit IVs: NIST SP 800-38D §8.3 allows at most 2^32 invocations per key.
 * Each encryption is counted in its audit transaction, and a version refuses to encrypt once the
 * count reaches the limit less a margin for encryptions under way in other requests or processes
 * (they are counted after the HSM made them). The key must then be rotated.
 */
export const GCM_INVOCATION_LIMIT = 2 ** 32 - 2 ** 24;

export interface CreateKeyInput {
  name: string;
  type: string;
  purpose: string;
  rotationPolicy?: string;
  labels?: Record<string, string>;
}

export type SignInput = { data: string; digest?: undefined } | { digest: string; data?: undefined };

/** Most inputs one sign-batch request may carry. */
export const SIGN_BATCH_MAX = 256;

/**
 * Named, versioned keys whose private or secret material lives only in the HSM. Every mutating
 * call and every key use appends an audit event in the same store transaction as its state
 * change; when the append fails, the operation fails and its result is not released.
 */
export class KeyService {
  readonly #d: KeyServiceDeps;
  readonly #publicKeys = new Map<string, KeyObject>();

  constructor(deps: KeyServiceDeps) {
    this.#d = deps;
  }

  #now(): string {
    return this.#d.clock.now().toISOString();
  }

  async #audit(t: Repos, e: AuditEventInput): Promise<void> {
    await t.appendAudit(e, this.#now());
  }

  async list(): Promise<KeyView[]> {
    const keys = await this.#d.store.listKeys();
    const all = await this.#d.store.listAllVersions();
    return keys.map((k) => this.#view(k, all.filter((v) => v.keyName === k.name)));
  }

  async get(name: string): Promise<KeyView> {
    const k = await this.#key(name);
    return this.#view(k, await this.#d.store.listVersions(name));
  }

  #view(k: KeyRecord, versions: KeyVersionRecord[]): KeyView {
    return { ...k, governingPolicy: this.#governing(k), versions: versions.map(versionView) };
  }

  #governing(k: KeyRecord): string | null {
    const policies = this.#d.rotationPolicies?.();
    if (!policies) return k.rotationPolicy;
    try {
      const p = resolvePolicyForKey(policies, {
        name: k.name, type: k.type as KeyType, purpose: k.purpose, labels: k.labels,
        rotationPolicy: k.rotationPolicy ?? undefined, createdAt: new Date(k.createdAt), versions: [],
      });
      return p === 'manual' ? 'manual' : p.id;
    } catch {
      return null;
    }
  }

  async #key(name: string): Promise<KeyRecord> {
    const k = await this.#d.store.getKey(name);
    if (!k) throw new CustosError('ERR_KEY_NOT_FOUND', `no key named ${name}`);
    return k;
  }

  async #version(name: string, version: number): Promise<KeyVersionRecord> {
    const v = (await this.#d.store.listVersions(name)).find((x) => x.version === version);
    if (!v) throw new CustosError('ERR_KEY_VERSION_NOT_FOUND', `key ${name} has no version ${version}`);
    return v;
  }


  /**
   * Key uses (sign, verify, encrypt, decrypt, token issuance) look keys up through a cache that
   * lives at most USE_CACHE_MS and is dropped on every local change of the key. It is only a
   * hint: the audit transaction of each use re-reads the version's state and refuses to release
   * the result if another process changed it meanwhile (see #commitUse).
   */
  readonly #useCache = new Map<string, { key: KeyRecord; versions: KeyVersionRecord[]; until: number }>();

  async #forUse(name: string): Promise<{ key: KeyRecord; versions: KeyVersionRecord[] }> {
    const now = Date.now();
    const hit = this.#useCache.get(name);
    if (hit && hit.until > now) return hit;
    const key = await this.#key(name);
    const versions = await this.#d.store.listVersions(name);
    if (this.#useCache.size > 10_000) this.#useCache.clear();
    this.#useCache.set(name, { key, versions, until: now + USE_CACHE_MS });
    return { key, versions };
  }

  #forget(name: string): void {
    this.#useCache.delete(name);
  }

  /**
   * Records key uses (one audit event each), in the same transaction as a fresh check that the
   * version still allows them (and, for signatures, that the key has not been reserved since it
   * was looked up).
   */
  async #commitUse(name: string, v: KeyVersionRecord, allowed: ReadonlySet<KeyState>, op: string, e: AuditEventInput | readonly AuditEventInput[], also?: (t: Repos) => Promise<void>): Promise<void> {
    await this.#d.store.tx(async (t) => {
      const use = await t.getUseState(name, v.version);
      const state = use?.state ?? null;
      if (op === 'sign' && use?.reservedFor) {
        this.#forget(name);
        throw new CustosError('ERR_KEY_RESERVED', `key ${name} signs only custos's own ${use.reservedFor}s`, { details: { reservedFor: use.reservedFor } });
      }
      if (state === null || !allowed.has(state)) {
        this.#forget(name);
        if (state === 'destroyed') throw new CustosError('ERR_KEY_DESTROYED', `version ${v.version} was destroyed`);
        throw new CustosError('ERR_KEY_STATE', `version ${v.version} is ${state ?? 'gone'} and cannot ${op}`, { details: { state } });
      }
      if (also) await also(t);
      for (const x of Array.isArray(e) ? (e as readonly AuditEventInput[]) : [e as AuditEventInput]) await this.#audit(t, x);
    });
  }

  /** The active version record of a key (internal: carries the HSM id). */
  async activeVersion(name: string): Promise<{ key: KeyRecord; version: KeyVersionRecord }> {
    const { key, versions } = await this.#forUse(name);
    const version = versions.find((x) => x.state === 'active');
    if (!version) throw new CustosError('ERR_KEY_NO_ACTIVE_VERSION', `key ${name} has no active version`);
    return { key, version };
  }

  /** Every version record of a key (internal: carries the HSM ids). */
  async versionRecords(name: string): Promise<KeyVersionRecord[]> {
    return this.#d.store.listVersions(name);
  }

  /**
   * The key the service itself signs with (session tokens, attestation results, audit
   * checkpoints), reserved for that use: created when it does not exist yet, and taken over when
   * an administrator made it beforehand through the keys API. Concurrent callers in several
   * processes converge: a lost creation race reads the winner's key.
   *
   * A reserved key never signs caller data (see #signer). An existing key is taken over only if
   * it has never done so: a signature it made through the keys API could be the signature of a
   * forged token. A key reserved for another use is refused too (a session token must not pass
   * for an attestation result or a checkpoint).
   */
  async ensureKey(actor: string, name: string, type: KeyType, purpose: 'sign' | 'encrypt', reservedFor: KeyReservation): Promise<KeyRecord> {
    const refused = this.#refusedReservations.get(name);
    if (refused && refused.usage === reservedFor && refused.until > Date.now()) throw refused.error;
    const existing = await this.#d.store.getKey(name);
    if (existing?.reservedFor === reservedFor) return existing;
    if (existing) return this.#reserve(actor, existing, reservedFor);
    let policy: string | undefined;
    try {
      this.#checkGoverned({ name, type, purpose }, type);
    } catch (e) {
      // A service key no policy selects is kept, rotated by hand; the key shows it.
      if (!(e instanceof CustosError && e.code === 'ERR_ROTATION_POLICY')) throw e;
      policy = 'manual';
    }
    const k = await this.#createIfMissing(actor, { name, type, purpose, ...(policy ? { rotationPolicy: policy } : {}) }, reservedFor);
    return k.reservedFor === reservedFor ? k : this.#reserve(actor, k, reservedFor);
  }

  /**
   * An ordinary key (not reserved) made unless one of that name exists, for set-up scripts and
   * several processes starting at once: the loser of a creation race reads the winner's key.
   */
  async createIfMissing(actor: string, input: CreateKeyInput): Promise<KeyRecord> {
    return this.#createIfMissing(actor, input, null);
  }

  async #createIfMissing(actor: string, input: CreateKeyInput, reservedFor: KeyReservation | null): Promise<KeyRecord> {
    try {
      await this.#create(actor, input, reservedFor);
    } catch (e) {
      if (!(e instanceof CustosError && (e.code === 'ERR_KEY_EXISTS' || e.code === 'ERR_CONFLICT'))) throw e;
    }
    return this.#key(input.name);
  }

  /**
   * Take-overs refused lately, by key name, for a minute: a key named by mistake would otherwise
   * cost a scan of the audit log on every request that needs it (every session, every checkpoint
   * attempt) until the configuration is mended.
   */
  readonly #refusedReservations = new Map<string, { usage: KeyReservation; error: CustosError; until: number }>();

  /** Takes over an existing key for custos's own signatures (ensureKey), or says why not. */
  async #reserve(actor: string, k: KeyRecord, usage: KeyReservation): Promise<KeyRecord> {
    const refuse = (why: string): never => {
      const error = new CustosError('ERR_KEY_RESERVED', `key ${k.name} cannot sign ${usage}s: ${why}`, { details: { key: k.name, usage, reservedFor: k.reservedFor } });
      this.#refusedReservations.set(k.name, { usage, error, until: Date.now() + 60_000 });
      throw error;
    };
    if (k.reservedFor !== null) refuse(`it is reserved for ${k.reservedFor}s`);
    if (k.purpose !== 'sign') refuse(`it is an ${k.purpose} key`);
    await this.#d.store.tx(async (t) => {
      if (await t.hasAuditEvent(k.name, 'key.sign')) refuse('it has signed data through the keys API; name a new key');
      if (!(await t.reserveKey(k.name, usage))) {
        const now = await t.getKey(k.name);
        if (now?.reservedFor !== usage) refuse(now ? `it is reserved for ${now.reservedFor}s` : 'it is gone');
        return;
      }
      await this.#audit(t, { actor, action: 'key.reserve', subject: k.name, outcome: 'success', details: { reservedFor: usage } });
    });
    this.#forget(k.name);
    return { ...k, reservedFor: usage };
  }

  /**
   * Every key has exactly one governing rotation policy or is explicitly manual: a named policy
   * must be loaded, and without one exactly one policy's selector must match.
   */
  #checkGoverned(input: CreateKeyInput, type: KeyType): void {
    const policies = this.#d.rotationPolicies?.();
    if (!policies) return;
    try {
      resolvePolicyForKey(policies, {
        name: input.name, type, purpose: input.purpose as 'sign' | 'encrypt', labels: input.labels ?? {},
        rotationPolicy: input.rotationPolicy, createdAt: this.#d.clock.now(), versions: [],
      });
    } catch (e) {
      if (e instanceof CustosError) throw new CustosError('ERR_ROTATION_POLICY', e.message, { cause: e, details: e.details ?? {} });
      throw e;
    }
  }

  /** Creates a key with version 1 active. */
  async create(actor: string, input: CreateKeyInput): Promise<KeyView> {
    return this.#create(actor, input, null);
  }

  async #create(actor: string, input: CreateKeyInput, reservedFor: KeyReservation | null): Promise<KeyView> {
    if (!KEY_NAME_PATTERN.test(input.name)) throw new CustosError('ERR_BAD_REQUEST', 'name must match ^[a-z0-9][a-z0-9_-]{0,62}$', { details: { field: 'name' } });
    if (!isKeyType(input.type)) throw new CustosError('ERR_KEY_TYPE', `type must be one of ec-p256, ec-p384, rsa-2048, rsa-3072, aes-256`);
    const info = keyTypeInfo(input.type);
    if (input.purpose !== 'sign' && input.purpose !== 'encrypt') throw new CustosError('ERR_BAD_REQUEST', 'purpose must be sign or encrypt', { details: { field: 'purpose' } });
    if (!info.purposes.includes(input.purpose)) throw new CustosError('ERR_KEY_PURPOSE', `a ${info.type} key cannot be used to ${input.purpose}`);
    if (await this.#d.store.getKey(input.name)) throw new CustosError('ERR_KEY_EXISTS', `key ${input.name} exists`);
    this.#checkGoverned(input, info.type);
    const now = this.#now();
    const record: KeyRecord = {
      name: input.name,
      type: info.type,
      purpose: input.purpose,
      rotationPolicy: input.rotationPolicy ?? null,
      labels: input.labels ?? {},
      createdAt: now,
      reservedFor,
    };
    const v = await this.#generateVersion(actor, record, 1, 'active', async (t, version) => {
      await t.insertKey(record);
      await t.allocateVersion(record.name);
      await t.insertVersion(version);
      await this.#audit(t, {
        actor, action: 'key.create', subject: record.name, outcome: 'success',
        details: { type: record.type, purpose: record.purpose, version: 1, kid: version.kid, hsmId: version.hsmId, rotationPolicy: record.rotationPolicy, ...(reservedFor ? { reservedFor } : {}) },
      });
    });
    return this.#view(record, [v]);
  }

  /**
   * Manual rotation: a new version becomes active, the previous active one is deactivated
   * (verify/decrypt only). The new HSM object is journaled before it is created, so a crash
   * between the HSM call and the store commit leaves a record the reconciler acts on.
   */
  async rotate(actor: string, name: string, reason?: string): Promise<KeyVersionView> {
    const k = await this.#key(name);
    // A version already published (pre-active) is the one relying parties know: promote it.
    const pre = (await this.#d.store.listVersions(name)).find((x) => x.state === 'pre-active');
    if (pre) return this.activateVersion(actor, name, pre.version, 'key.rotate', reason ? { reason } : {});
    return this.createVersion(actor, k.name, 'active', 'key.rotate', reason ? { reason } : {});
  }

  /**
   * Generates a new version in the HSM and records it as `active` (the previous active version is
   * deactivated in the same transaction) or `pre-active` (published for verification only).
   */
  async createVersion(actor: string, name: string, state: 'active' | 'pre-active', action: string, details: Record<string, unknown> = {}): Promise<KeyVersionView> {
    const k = await this.#key(name);
    const version = await this.#d.store.tx((t) => t.allocateVersion(name));
    const v = await this.#generateVersion(actor, k, version, state, async (t, nv) => {
      let previous: number | null = null;
      if (state === 'active') {
        const current = (await t.listVersions(name)).find((x) => x.state === 'active');
        if (current) await t.updateVersion(name, current.version, { state: 'deactivated', deactivatedAt: nv.createdAt });
        previous = current?.version ?? null;
      }
      await t.insertVersion(nv);
      await this.#audit(t, {
        actor, action, subject: name, outcome: 'success',
        details: { version: nv.version, state, kid: nv.kid, hsmId: nv.hsmId, previousVersion: previous, ...details },
      });
    });
    return versionView(v);
  }

  /** pre-active → active; the current active version (if any) is deactivated atomically. */
  async activateVersion(actor: string, name: string, version: number, action = 'key.activate', details: Record<string, unknown> = {}): Promise<KeyVersionView> {
    return this.#d.store.tx(async (t) => {
      const versions = await t.listVersions(name);
      const v = versions.find((x) => x.version === version);
      if (!v) throw new CustosError('ERR_KEY_VERSION_NOT_FOUND');
      if (v.state === 'active') return versionView(v);
      if (v.state !== 'pre-active') throw new CustosError('ERR_KEY_STATE', `version ${version} is ${v.state}`, { details: { state: v.state } });
      const now = this.#now();
      const current = versions.find((x) => x.state === 'active');
      if (current) await t.updateVersion(name, current.version, { state: 'deactivated', deactivatedAt: now });
      await t.updateVersion(name, version, { state: 'active', activatedAt: now });
      failpoint('activate.inside-transaction');
      await this.#audit(t, { actor, action, subject: name, outcome: 'success', details: { version, kid: v.kid, previousVersion: current?.version ?? null, ...details } });
      return versionView({ ...v, state: 'active', activatedAt: now });
    }).finally(() => this.#forget(name));
  }

  /**
   * Moves a version between lifecycle states inside one transaction, checking the transition is
   * allowed (DESIGN.md key lifecycle). Destruction itself goes through {@link destroyVersion}.
   */
  async transition(
    actor: string,
    name: string,
    version: number,
    to: 'deactivated' | 'destroy-scheduled' | 'compromised',
    opts: { action: string; destroyAt?: Date; details?: Record<string, unknown>; from?: KeyState },
  ): Promise<KeyVersionView> {
    return this.#d.store.tx(async (t) => {
      const v = (await t.listVersions(name)).find((x) => x.version === version);
      if (!v) throw new CustosError('ERR_KEY_VERSION_NOT_FOUND');
      if (opts.from !== undefined && v.state !== opts.from && v.state !== to) {
        throw new CustosError('ERR_KEY_STATE', `version ${version} is ${v.state}, not ${opts.from}`, { details: { state: v.state } });
      }
      if (v.state === to) return versionView(v);
      const allowed: Record<typeof to, KeyState[]> = {
        deactivated: ['active', 'destroy-scheduled'],
        'destroy-scheduled': ['deactivated', 'compromised', 'pre-active'],
        compromised: ['pre-active', 'active', 'deactivated', 'destroy-scheduled'],
      };
      if (!allowed[to].includes(v.state)) throw new CustosError('ERR_KEY_STATE', `version ${version} is ${v.state} and cannot become ${to}`, { details: { state: v.state } });
      const now = this.#now();
      const patch: Partial<KeyVersionRecord> = { state: to };
      if (to === 'deactivated' && v.state === 'active') patch.deactivatedAt = now;
      if (to === 'deactivated' && v.state === 'destroy-scheduled') patch.destroyAt = null;
      if (to === 'destroy-scheduled') {
        if (!opts.destroyAt) throw new CustosError('ERR_INTERNAL', 'destroyAt is required');
        patch.destroyAt = opts.destroyAt.toISOString();
        if (v.state === 'pre-active' || v.state === 'active') patch.deactivatedAt = now;
      }
      if (to === 'compromised') patch.compromisedAt = now;
      await t.updateVersion(name, version, patch);
      await this.#audit(t, { actor, action: opts.action, subject: name, outcome: 'success', details: { version, from: v.state, to, ...(patch.destroyAt ? { destroyAt: patch.destroyAt } : {}), ...opts.details } });
      return versionView({ ...v, ...patch } as KeyVersionRecord);
    }).finally(() => this.#forget(name));
  }

  /**
   * Destroys the HSM objects of a version whose destruction is due, journaled so that a crash
   * between the HSM call and the store update is finished by the reconciler. Metadata and the
   * audit trail stay; the version answers ERR_KEY_DESTROYED from then on.
   */
  async destroyVersion(actor: string, name: string, version: number, action = 'key.destroy'): Promise<KeyVersionView> {
    const v = await this.#version(name, version);
    if (v.state === 'destroyed') return versionView(v);
    if (v.state !== 'destroy-scheduled') throw new CustosError('ERR_KEY_STATE', `version ${version} is ${v.state}; only a scheduled destruction can be carried out`);
    if (v.destroyAt && v.destroyAt > this.#now()) throw new CustosError('ERR_KEY_STATE', `version ${version} is not due for destruction before ${v.destroyAt}`);
    const intentId = randomBytes(12).toString('hex');
    await this.#d.store.tx((t) => t.insertIntent({ id: intentId, op: 'destroy', hsmId: v.hsmId, keyName: name, version, actor, createdAt: this.#now() }));
    failpoint('destroy.after-intent');
    await this.#d.hsm.destroy(v.hsmId);
    failpoint('destroy.after-hsm');
    this.#publicKeys.delete(v.hsmId);
    return this.#d.store.tx(async (t) => {
      const now = this.#now();
      await t.updateVersion(name, version, { state: 'destroyed', destroyedAt: now });
      await t.deleteIntent(intentId);
      await this.#audit(t, { actor, action, subject: name, outcome: 'success', details: { version, kid: v.kid, hsmId: v.hsmId } });
      return versionView({ ...v, state: 'destroyed', destroyedAt: now });
    }).finally(() => this.#forget(name));
  }

  /**
   * Marks a version compromised (from any live state). A compromised active version is replaced
   * at once by a new active version; it stays usable for verify/decrypt only, and leaves JWKS.
   */
  async compromise(actor: string, name: string, version: number, reason?: string): Promise<{ compromised: KeyVersionView; replacement?: KeyVersionView }> {
    const before = await this.#version(name, version);
    if (before.state === 'destroyed') throw new CustosError('ERR_KEY_DESTROYED');
    const wasActive = before.state === 'active';
    const compromised = await this.transition(actor, name, version, 'compromised', { action: 'key.compromise', details: reason ? { reason } : {} });
    if (!wasActive) return { compromised };
    const replacement = await this.createVersion(actor, name, 'active', 'key.rotate', { reason: `version ${version} compromised` });
    return { compromised, replacement };
  }

  /** destroy-scheduled → deactivated, within the pending window; audited. */
  async cancelDestroy(actor: string, name: string, version: number): Promise<KeyVersionView> {
    const v = await this.#version(name, version);
    // Only a scheduled destruction can be cancelled; cancelling twice answers the same; any
    // other state (active above all) is refused and left as it is.
    if (v.state === 'deactivated') return versionView(v);
    if (v.state !== 'destroy-scheduled') throw new CustosError('ERR_KEY_STATE', `version ${version} is ${v.state}; only a scheduled destruction can be cancelled`, { details: { state: v.state } });
    return this.transition(actor, name, version, 'deactivated', { action: 'key.destroy-cancelled', from: 'destroy-scheduled' });
  }

  /**
   * Creates the HSM object of a new version under a journaled intent, then commits the version
   * with `commit` in one transaction. On a failed commit the object is destroyed again.
   */
  async #generateVersion(
    actor: string,
    k: KeyRecord,
    version: number,
    state: KeyState,
    commit: (t: Repos, v: KeyVersionRecord) => Promise<void>,
  ): Promise<KeyVersionRecord> {
    const info = keyTypeInfo(k.type);
    const hsmId = randomBytes(16).toString('hex');
    const intentId = randomBytes(12).toString('hex');
    await this.#d.store.tx((t) =>
      t.insertIntent({ id: intentId, op: 'generate', hsmId, keyName: k.name, version, actor, createdAt: this.#now() }),
    );
    failpoint('generate.after-intent');
    const spec = { id: hsmId, label: `custos:${k.name}:v${version}`, type: info.type as KeyType };
    const obj = info.kind === 'aes' ? await this.#d.hsm.generateSecretKey(spec) : await this.#d.hsm.generateKeyPair(spec);
    failpoint('generate.after-hsm');
    const publicKey = info.kind === 'aes' ? null : (await this.#d.hsm.getPublicKey(hsmId)).toString('base64');
    const now = this.#now();
    const v: KeyVersionRecord = {
      keyName: k.name, version, state, kid: kidOf(k.name, version), hsmId,
      pkcs11Uri: obj.uri,
      publicKey, createdAt: now,
      activatedAt: state === 'active' ? now : null,
      deactivatedAt: null, destroyAt: null, destroyedAt: null, compromisedAt: null,
    };
    try {
      await this.#d.store.tx(async (t) => {
        await commit(t, v);
        await t.deleteIntent(intentId);
      });
      this.#forget(k.name);
      failpoint('generate.after-commit');
    } catch (e) {
      // The version never became visible: remove its HSM object, then the intent. If the HSM is
      // unreachable now, the intent stays and the reconciler finishes the job later.
      try {
        await this.#d.hsm.destroy(hsmId);
        await this.#d.store.tx((t) => t.deleteIntent(intentId));
      } catch {
        /* left to the reconciler */
      }
      throw e;
    }
    return v;
  }

  /** PEM and JWK of an asymmetric version (any state but destroyed). */
  async publicKey(name: string, version: number): Promise<{ pem: string; jwk: JsonWebKey & { kid: string; alg?: string; use: string } }> {
    const k = await this.#key(name);
    if (keyTypeInfo(k.type).kind === 'aes') throw new CustosError('ERR_KEY_PURPOSE', 'symmetric keys have no public key');
    const v = await this.#version(name, version);
    if (v.state === 'destroyed') throw new CustosError('ERR_KEY_DESTROYED');
    const ko = this.#publicKeyObject(v);
    const info = keyTypeInfo(k.type);
    return {
      pem: ko.export({ format: 'pem', type: 'spki' }) as string,
      jwk: { ...(ko.export({ format: 'jwk' }) as JsonWebKey), kid: v.kid, ...(info.jwsAlg ? { alg: info.jwsAlg } : {}), use: 'sig' },
    };
  }

  #publicKeyObject(v: KeyVersionRecord): KeyObject {
    let ko = this.#publicKeys.get(v.hsmId);
    if (!ko) {
      if (!v.publicKey) throw new CustosError('ERR_KEY_PURPOSE', 'symmetric keys have no public key');
      ko = createPublicKey({ key: Buffer.from(v.publicKey, 'base64'), format: 'der', type: 'spki' });
      this.#publicKeys.set(v.hsmId, ko);
    }
    return ko;
  }

  #digestOf(input: SignInput, hash: HashName): { digest: Buffer; inputHash: string } {
    if (input.digest !== undefined) {
      const digest = fromBase64(input.digest, 'digest');
      if (digest.length !== HASH_BYTES[hash]) {
        throw new CustosError('ERR_BAD_DIGEST_LENGTH', `digest must be ${HASH_BYTES[hash]} bytes (${hash})`, { details: { expected: HASH_BYTES[hash], got: digest.length } });
      }
      return { digest, inputHash: oneShotHash('sha256', digest, 'hex') };
    }
    const data = fromBase64(input.data!, 'data');
    return { digest: oneShotHash(hash, data, 'buffer'), inputHash: oneShotHash('sha256', data, 'hex') };
  }

  /** The version that signs for a sign request (active, or the named one if active) and the algorithm. */
  async #signer(name: string, version: number | undefined, algorithm: string | undefined) {
    const { key: k, versions } = await this.#forUse(name);
    const info = keyTypeInfo(k.type);
    if (k.purpose !== 'sign') throw new CustosError('ERR_KEY_PURPOSE', `key ${name} is an ${k.purpose} key`);
    // Reserved keys sign only what custos itself issues (JwtIssuer, the audit checkpointer sign
    // through the KeyStore): a caller's digest could be that of a forged token or checkpoint.
    if (k.reservedFor !== null) throw new CustosError('ERR_KEY_RESERVED', `key ${name} signs only custos's own ${k.reservedFor}s`, { details: { reservedFor: k.reservedFor } });
    const alg = resolveSignAlgorithm(info, algorithm);
    const v = pick(name, versions, version);
    this.#requireState(v, SIGN_STATES, 'sign');
    return { info, alg, v };
  }

  /** Signs with the active version (or a named version that is active). ECDSA signatures are DER. */
  async sign(actor: string, name: string, input: SignInput & { version?: number; algorithm?: string }): Promise<{ signature: string; version: number; kid: string; algorithm: string }> {
    const { info, alg, v } = await this.#signer(name, input.version, input.algorithm);
    const { digest, inputHash } = this.#digestOf(input, alg.hash);
    const raw = await this.#d.hsm.sign(v.hsmId, alg.scheme, alg.hash, digest);
    const signature = alg.scheme === 'ecdsa' ? ecdsaRawToDer(raw, info.curve!) : raw;
    await this.#commitUse(name, v, SIGN_STATES, 'sign', { actor, action: 'key.sign', subject: name, outcome: 'success', details: { version: v.version, algorithm: alg.name, inputSha256: inputHash } });
    return { signature: signature.toString('base64'), version: v.version, kid: v.kid, algorithm: alg.name };
  }

  /**
   * Signs up to SIGN_BATCH_MAX inputs with one version and one algorithm: one request, one key
   * lookup and one audit transaction for the lot, each signature still made in the HSM and audited
   * as its own `key.sign` event (with its index and the batch id). All or nothing: an invalid
   * input (named by its index) fails the batch before anything is signed, and a failed HSM
   * operation or a version that changed state meanwhile releases no signature.
   */
  async signBatch(
    actor: string,
    name: string,
    input: { items: readonly SignInput[]; version?: number; algorithm?: string },
  ): Promise<{ signatures: string[]; version: number; kid: string; algorithm: string }> {
    const n = input.items.length;
    if (n < 1 || n > SIGN_BATCH_MAX) throw new CustosError('ERR_BAD_REQUEST', `a batch holds 1 to ${SIGN_BATCH_MAX} inputs`, { details: { max: SIGN_BATCH_MAX, got: n } });
    const { info, alg, v } = await this.#signer(name, input.version, input.algorithm);
    const prepared = input.items.map((item, index) => {
      try {
        return this.#digestOf(item, alg.hash);
      } catch (e) {
        if (e instanceof CustosError) throw new CustosError(e.code, `batch[${index}]: ${e.message}`, { details: { ...e.details, index } });
        throw e;
      }
    });
    const raws = await Promise.all(prepared.map((p) => this.#d.hsm.sign(v.hsmId, alg.scheme, alg.hash, p.digest)));
    const signatures = raws.map((raw) => (alg.scheme === 'ecdsa' ? ecdsaRawToDer(raw, info.curve!) : raw).toString('base64'));
    const batchId = randomUUID();
    await this.#commitUse(
      name,
      v,
      SIGN_STATES,
      'sign',
      prepared.map((p, index) => ({
        actor,
        action: 'key.sign',
        subject: name,
        outcome: 'success' as const,
        details: { version: v.version, algorithm: alg.name, inputSha256: p.inputHash, batch: { id: batchId, index, size: n } },
      })),
    );
    return { signatures, version: v.version, kid: v.kid, algorithm: alg.name };
  }

  /**
   * Verifies with the public key of a version (named, or every verifiable version newest first).
   * Public-key verification needs no HSM; it is done with node:crypto on the recorded key.
   */
  async verify(actor: string, name: string, input: SignInput & { signature: string; version?: number; algorithm?: string }): Promise<{ valid: boolean; version?: number; kid?: string; state?: KeyState }> {
    const { key: k, versions } = await this.#forUse(name);
    const info = keyTypeInfo(k.type);
    if (k.purpose !== 'sign') throw new CustosError('ERR_KEY_PURPOSE', `key ${name} is an ${k.purpose} key`);
    const alg = resolveSignAlgorithm(info, input.algorithm);
    const signature = fromBase64(input.signature, 'signature');
    const { digest, inputHash } = this.#digestOf(input, alg.hash);
    const data = input.data !== undefined ? fromBase64(input.data, 'data') : null;
    let candidates: KeyVersionRecord[];
    if (input.version !== undefined) {
      const v = pick(name, versions, input.version);
      this.#requireState(v, VERIFY_STATES, 'verify');
      candidates = [v];
    } else {
      // A compromised version vouches for nothing unless asked for by number: whoever stole it
      // can make signatures that verify.
      candidates = versions.filter((v) => VERIFY_STATES.has(v.state) && v.state !== 'compromised').sort((a, b) => b.version - a.version);
    }
    // Data is verified in software against the recorded public key; a bare digest can only be
    // verified by a PKCS#11 C_Verify (node:crypto has no pre-hashed ECDSA/PSS verify).
    const rawSig = info.kind === 'ec' ? ecdsaDerToRaw(signature, info.curve!) : signature;
    let hit: KeyVersionRecord | undefined;
    for (const v of candidates) {
      const ok = data !== null
        ? verifyData(this.#publicKeyObject(v), alg, data, signature)
        : await this.#d.hsm.verify(v.hsmId, alg.scheme, alg.hash, digest, rawSig);
      if (ok) {
        hit = v;
        break;
      }
    }
    const event: AuditEventInput = {
      actor, action: 'key.verify', subject: name, outcome: 'success',
      details: { version: hit?.version ?? input.version ?? null, algorithm: alg.name, valid: hit !== undefined, inputSha256: inputHash },
    };
    if (hit) await this.#commitUse(name, hit, VERIFY_STATES, 'verify', event);
    else await this.#d.store.tx((t) => this.#audit(t, event));
    return hit ? { valid: true, version: hit.version, kid: hit.kid, state: hit.state } : { valid: false };
  }

  /** AES-256-GCM in the HSM with the active version: `custos:v<N>:<base64(iv‖ct‖tag)>`. */
  async encrypt(actor: string, name: string, input: { plaintext: string; aad?: string }): Promise<{ ciphertext: string; version: number; kid: string }> {
    const { key: k, versions } = await this.#forUse(name);
    if (k.purpose !== 'encrypt') throw new CustosError('ERR_KEY_PURPOSE', `key ${name} is a ${k.purpose} key`);
    const plaintext = fromBase64(input.plaintext, 'plaintext');
    const aad = input.aad === undefined ? Buffer.alloc(0) : fromBase64(input.aad, 'aad');
    const v = pick(name, versions, undefined);
    const { iv, ciphertext } = await this.#d.hsm.encrypt(v.hsmId, plaintext, aad);
    const out = `custos:v${v.version}:${Buffer.concat([iv, ciphertext]).toString('base64')}`;
    await this.#commitUse(name, v, SIGN_STATES, 'encrypt', { actor, action: 'key.encrypt', subject: name, outcome: 'success', details: { version: v.version, plaintextBytes: plaintext.length, aadBytes: aad.length } }, async (t) => {
      if (!(await t.countEncryption(name, v.version, this.#d.gcmInvocationLimit ?? GCM_INVOCATION_LIMIT))) {
        throw new CustosError('ERR_KEY_STATE', `version ${v.version} has made as many AES-GCM encryptions as a key may (NIST SP 800-38D); rotate the key`, { details: { reason: 'invocation-limit', version: v.version } });
      }
    });
    return { ciphertext: out, version: v.version, kid: v.kid };
  }

  async decrypt(actor: string, name: string, input: { ciphertext: string; aad?: string }): Promise<{ plaintext: string; version: number }> {
    const { key: k, versions } = await this.#forUse(name);
    if (k.purpose !== 'encrypt') throw new CustosError('ERR_KEY_PURPOSE', `key ${name} is a ${k.purpose} key`);
    const m = /^custos:v([1-9][0-9]{0,8}):([A-Za-z0-9+/=]+)$/.exec(typeof input.ciphertext === 'string' ? input.ciphertext : '');
    if (!m) throw new CustosError('ERR_CIPHERTEXT_FORMAT', 'ciphertext must be custos:v<N>:<base64>');
    const blob = fromBase64(m[2]!, 'ciphertext', 'ERR_CIPHERTEXT_FORMAT');
    if (blob.length < 12 + 16) throw new CustosError('ERR_CIPHERTEXT_FORMAT', 'ciphertext is too short');
    const aad = input.aad === undefined ? Buffer.alloc(0) : fromBase64(input.aad, 'aad');
    const v = pick(name, versions, Number(m[1]));
    this.#requireState(v, DECRYPT_STATES, 'decrypt');
    let plaintext: Buffer;
    try {
      plaintext = await this.#d.hsm.decrypt(v.hsmId, blob.subarray(0, 12), blob.subarray(12), aad);
    } catch (e) {
      if (e instanceof CustosError && e.code === 'ERR_DECRYPT') {
        await this.#d.store.tx((t) =>
          this.#audit(t, { actor, action: 'key.decrypt', subject: name, outcome: 'failure', details: { version: v.version, reason: 'ERR_DECRYPT' } }),
        );
        // The public message says what failed, not how the HSM reported it.
        throw new CustosError('ERR_DECRYPT', undefined, { cause: e });
      }
      throw e;
    }
    await this.#commitUse(name, v, DECRYPT_STATES, 'decrypt', { actor, action: 'key.decrypt', subject: name, outcome: 'success', details: { version: v.version, plaintextBytes: plaintext.length } });
    return { plaintext: plaintext.toString('base64'), version: v.version };
  }

  #requireState(v: KeyVersionRecord, allowed: ReadonlySet<KeyState>, op: string): void {
    if (v.state === 'destroyed') throw new CustosError('ERR_KEY_DESTROYED', `version ${v.version} was destroyed`);
    if (!allowed.has(v.state)) throw new CustosError('ERR_KEY_STATE', `version ${v.version} is ${v.state} and cannot ${op}`, { details: { state: v.state } });
  }
}

/** A named version, or the active one when none is named (from a version list). */
function pick(name: string, versions: readonly KeyVersionRecord[], version: number | undefined): KeyVersionRecord {
  if (version === undefined) {
    const a = versions.find((x) => x.state === 'active');
    if (!a) throw new CustosError('ERR_KEY_NO_ACTIVE_VERSION', `key ${name} has no active version`);
    return a;
  }
  const v = versions.find((x) => x.version === version);
  if (!v) throw new CustosError('ERR_KEY_VERSION_NOT_FOUND', `key ${name} has no version ${version}`);
  return v;
}

function verifyData(key: KeyObject, alg: ResolvedAlgorithm, data: Buffer, signature: Buffer): boolean {
  if (alg.scheme === 'ecdsa') return cryptoVerify(alg.hash, data, { key, dsaEncoding: 'der' }, signature);
  if (alg.scheme === 'rsa-pss') {
    return cryptoVerify(alg.hash, data, { key, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: HASH_BYTES[alg.hash] }, signature);
  }
  return cryptoVerify(alg.hash, data, { key, padding: cryptoConstants.RSA_PKCS1_PADDING }, signature);
}
