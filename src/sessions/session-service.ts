/**
 * Attested sessions for enclaves (API.md, sessions): TPM evidence bound to an ephemeral key in,
 * a short-lived HSM-signed token bound to that key and an HPKE-sealed session key out.
 *
 * Order of checks in {@link SessionService.issue}, and what each does to the nonce:
 * 1. The ephemeral JWK, the wire form of the evidence, the host's existence and the session
 *    policy (host + audience) are checked from the request alone. A refusal here leaves the
 *    nonce unspent: no evidence has been looked at, and a client that sent a malformed request
 *    (or asked for the wrong audience) may correct it and use its nonce.
 * 2. From the moment the evidence is looked at, the nonce is spent: HostService.appraise takes it
 *    in its own transaction before any check, so a failing quote, a revoked host or a later HSM
 *    failure all leave it consumed (single use, DESIGN.md "Freshness").
 * 3. The quote must carry SHA-256(nonce ‖ RFC 7638 thumbprint), the host must be governed by the
 *    attestation policy the session policy names, and the appraisal must be affirming; otherwise
 *    ERR_ATTESTATION_FAILED with the failures, no token and no key.
 * 4. Token (signed in the HSM, no software fallback) and session key (HSM RNG, HPKE-sealed) are
 *    produced, and the session record, the host's appraisal and the audit event are written in
 *    one transaction; nothing is returned if that write fails.
 */
import { randomUUID } from 'node:crypto';
import { decodeProtectedHeader, createLocalJWKSet, jwtVerify, type JWTPayload } from 'jose';
import type { HostService, Appraised, AttestInput, Evidence } from '../hosts/host-service.js';
import { HostService as HostServiceClass, VERIFIER_ID } from '../hosts/host-service.js';
import type { KeyStore } from '../hsm/key-store.js';
import type { Metrics } from '../http/metrics.js';
import type { Clock } from '../lib/clock.js';
import { sha256hex } from '../lib/encoding.js';
import { CustosError, isCustosError } from '../lib/errors.js';
import type { PolicySet } from '../policy/policy-service.js';
import type { SessionRecord } from '../store/records.js';
import type { Store } from '../store/store.js';
import { buildSessionClaims, type SessionClaims } from './claims.js';
import { parseEphemeralJwk, sessionExtraData, type EphemeralKey } from './ephemeral-key.js';
import { sessionKeySealer, SESSION_KEY_BYTES, type SealedSessionKey } from './hpke.js';
import type { JwtIssuer } from './issuer.js';
import { JwksBuilder, type JwkSet } from './jwks.js';
import { resolveSessionPolicy, type ResolvedSessionPolicy } from './policy.js';

/** JOSE `typ` of session tokens (RFC 8725 §3.11: explicit typing keeps them apart from EAR results). */
export const SESSION_TOKEN_TYP = 'custos-session+jwt';

export interface SessionServiceDeps {
  store: Store;
  clock: Clock;
  policies: PolicySet;
  hosts: HostService;
  issuer: JwtIssuer;
  /** The KeyStore whose RNG makes session keys (C_GenerateRandom). */
  hsm: KeyStore;
  /** `iss` of session tokens. */
  issuerName: string;
  /** The key that signs attestation results: also published in the JWKS. */
  resultKey: string;
  metrics?: Metrics;
}

export interface IssueInput extends AttestInput {
  hostId: string;
  ephemeralPublicKey: unknown;
  audience: string;
}

export interface IssuedSession {
  token: string;
  expiresAt: string;
  sessionKey: SealedSessionKey;
  kid: string;
  jti: string;
}

export interface Introspection {
  active: boolean;
  claims?: JWTPayload;
}

const INACTIVE: Introspection = { active: false };

export class SessionService {
  readonly #d: SessionServiceDeps;
  readonly #jwks: JwksBuilder;

  constructor(deps: SessionServiceDeps) {
    this.#d = deps;
    this.#jwks = new JwksBuilder(deps.store, () => this.issuerKeyNames());
  }

  /** Names of the keys that sign tokens custos hands out: every session policy's, and the EAR result key. */
  issuerKeyNames(): string[] {
    return [...new Set([...this.#d.policies.session.map((p) => p.doc.issuerKey), this.#d.resultKey])];
  }

  /** The JWK Set of every issuer key version a token may still carry. */
  jwks(): Promise<JwkSet> {
    return this.#jwks.jwks();
  }

  #count(outcome: string): void {
    this.#d.metrics?.sessions.inc({ outcome });
  }

  /** Refusal before or during appraisal (no appraisal to record): its own transaction; the refusal stands if the write fails. */
  async #auditRefusal(input: IssueInput, e: unknown, details: Record<string, unknown>): Promise<void> {
    const code = isCustosError(e) ? e.code : 'ERR_INTERNAL';
    const outcome = isCustosError(e) && e.status < 500 ? 'denied' : 'failure';
    try {
      await this.#d.store.tx((t) =>
        t.appendAudit({ actor: `host:${input.hostId}`, action: 'session.issue', subject: input.hostId, outcome, details: { ...details, code } }, this.#d.clock.now().toISOString()),
      );
    } catch {
      /* the refusal is returned regardless */
    }
  }

  /** POST /v1/sessions. @throws CustosError with the refusal's code (see the module comment). */
  async issue(input: IssueInput): Promise<IssuedSession> {
    const base: Record<string, unknown> = { audience: typeof input.audience === 'string' ? input.audience : null };
    let appraised: Appraised | null = null;
    let policy: ResolvedSessionPolicy | null = null;
    let ev: Evidence | null = null;
    try {
      const eph = parseEphemeralJwk(input.ephemeralPublicKey);
      base['jkt'] = eph.thumbprint.toString('base64url');
      ev = HostServiceClass.parseEvidence(input.hostId, input);
      base['nonceSha256'] = sha256hex(ev.nonce);
      base['evidenceSha256'] = ev.evidenceSha256;
      const host = await this.#d.store.getHostForAppraisal(input.hostId);
      if (!host) throw new CustosError('ERR_HOST_NOT_FOUND');
      policy = resolveSessionPolicy(this.#d.policies.session, { id: host.id, labels: host.labels }, input.audience);
      base['sessionPolicyId'] = policy.id;
      base['sessionPolicyVersion'] = policy.version;
      // The nonce is consumed inside appraise, before any check of the evidence.
      appraised = await this.#d.hosts.appraise(ev, sessionExtraData(ev.nonce, eph.thumbprint), host);
      this.#requireAffirming(appraised, policy);
      const issued = await this.#mint(input, eph, ev, appraised, policy);
      this.#count('issued');
      return issued;
    } catch (e) {
      const code = isCustosError(e) ? e.code : 'ERR_INTERNAL';
      this.#count(code);
      if (appraised !== null) await this.#recordRefusedAppraisal(appraised, e, base);
      else await this.#auditRefusal(input, e, base);
      throw e;
    }
  }

  #requireAffirming(a: Appraised, policy: ResolvedSessionPolicy): void {
    const failures: { code: string; detail: string }[] = [...a.failures];
    if (a.host.policyId !== policy.attestationPolicy) {
      failures.push({ code: 'ERR_POLICY_MISMATCH', detail: `session policy ${policy.id} requires attestation policy ${policy.attestationPolicy}; the host is governed by ${a.host.policyId}` });
    }
    if (a.status !== 'affirming' || failures.length > 0) {
      throw new CustosError('ERR_ATTESTATION_FAILED', undefined, {
        details: { status: a.status, failures, trustworthinessVector: a.trustworthinessVector, sessionPolicyId: policy.id },
      });
    }
  }

  /** After appraisal, every refusal is written with the appraisal itself (host's last attestation + audit). */
  async #recordRefusedAppraisal(a: Appraised, e: unknown, base: Record<string, unknown>): Promise<void> {
    const code = isCustosError(e) ? e.code : 'ERR_INTERNAL';
    const outcome = isCustosError(e) && e.status < 500 ? 'denied' : 'failure';
    const details = isCustosError(e) && Array.isArray(e.details?.['failures']) ? { refusalFailures: (e.details['failures'] as { code: string }[]).map((f) => f.code) } : {};
    try {
      await this.#d.store.tx((t) => this.#d.hosts.recordAppraisal(t, a, 'session.issue', { ...base, ...details, code }, outcome));
    } catch {
      /* the refusal is returned regardless */
    }
  }

  async #mint(input: IssueInput, eph: EphemeralKey, ev: Evidence, a: Appraised, policy: ResolvedSessionPolicy): Promise<IssuedSession> {
    const now = this.#d.clock.now();
    const jti = randomUUID();
    const claims = buildSessionClaims({
      issuer: this.#d.issuerName, hostId: a.host.id, audience: policy.audience, now, ttlSeconds: policy.tokenTtlSeconds, jti,
      thumbprint: eph.thumbprint, nonce: ev.nonce,
      appraisal: { status: a.status, trustworthinessVector: a.trustworthinessVector, policyId: a.policy.id, policyVersion: a.policy.version, pcrDigest: a.pcrDigestHex },
      verifierId: VERIFIER_ID, disclose: policy.disclose,
    });
    // Three pieces of work that do not depend on each other start in the same turn: the token's
    // signature and the session key (both HSM operations, which the PKCS#11 adapter hands to its
    // workers together) and HPKE's encapsulation (its ECDH runs on the ECDH worker). The seal
    // itself (AES-GCM, this thread) waits only for the key and the HPKE context. As before, a
    // failure of one leaves the others' results unused: nothing is returned or recorded.
    const signing = this.#d.issuer.sign(policy.issuerKey, 'session-token', claims as unknown as Record<string, unknown>, SESSION_TOKEN_TYP);
    signing.catch(() => undefined); // observed below; this only keeps an early throw from leaving it unhandled
    // `eph` was validated by parseEphemeralJwk in issue().
    const sealer = sessionKeySealer(eph, jti);
    sealer.catch(() => undefined); // observed below, as `signing`
    // The session key comes from the HSM's RNG (C_GenerateRandom); it exists in this process only
    // long enough to be sealed, and is never stored or logged.
    const sessionKey = await this.#d.hsm.randomBytes(SESSION_KEY_BYTES);
    let sealed: SealedSessionKey;
    try {
      sealed = await (await sealer).seal(sessionKey);
    } finally {
      sessionKey.fill(0);
    }
    const signed = await signing;
    const expiresAt = new Date(claims.exp * 1000).toISOString();
    const record: SessionRecord = {
      jti, hostId: a.host.id, audience: policy.audience, kid: signed.kid, keyName: signed.keyName, keyVersion: signed.keyVersion,
      cnfJkt: claims.cnf.jkt, issuedAt: new Date(claims.iat * 1000).toISOString(), expiresAt, revokedAt: null,
    };
    const encSha256 = sha256hex(Buffer.from(sealed.enc, 'base64url'));
    await this.#d.store.tx(async (t) => {
      await this.#d.issuer.assertStillActive(t, signed);
      await t.insertSession(record);
      await this.#d.hosts.recordAppraisal(t, a, 'session.issue', {
        jti, encSha256, audience: policy.audience, sessionPolicyId: policy.id, sessionPolicyVersion: policy.version,
        kid: signed.kid, jkt: claims.cnf.jkt, nonceSha256: sha256hex(ev.nonce), expiresAt, hostId: input.hostId,
      }, 'success');
    });
    return { token: signed.token, expiresAt, sessionKey: sealed, kid: signed.kid, jti };
  }

  /**
   * RFC 7662 introspection of a session token. Active only when the JWS verifies against a key
   * version currently in the JWKS, with the right `typ` and issuer, within nbf..exp by the
   * injected clock; the session record exists and matches the token (kid, host, audience, key
   * binding); the host is not revoked; and the issuing key version is still publishable. Anything
   * else, including garbage, is `{active: false}` with nothing more (RFC 7662 §2.2).
   */
  async introspect(token: string): Promise<Introspection> {
    if (typeof token !== 'string' || token.length === 0) return INACTIVE;
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      return INACTIVE;
    }
    if (typeof kid !== 'string') return INACTIVE;
    const published = await this.#jwks.versions();
    const pv = published.find((p) => p.jwk.kid === kid);
    if (!pv) return INACTIVE;
    let payload: JWTPayload;
    try {
      const set = createLocalJWKSet({ keys: [pv.jwk] });
      ({ payload } = await jwtVerify(token, set, {
        issuer: this.#d.issuerName, typ: SESSION_TOKEN_TYP, currentDate: this.#d.clock.now(), algorithms: [pv.jwk.alg],
        requiredClaims: ['jti', 'sub', 'aud', 'exp', 'iat', 'nbf', 'cnf'],
      }));
    } catch {
      return INACTIVE;
    }
    const s = typeof payload.jti === 'string' ? await this.#d.store.getSession(payload.jti) : null;
    if (!s || s.revokedAt !== null) return INACTIVE;
    const claims = payload as unknown as SessionClaims;
    if (s.kid !== kid || s.hostId !== claims.sub || s.audience !== claims.aud || s.cnfJkt !== claims.cnf?.jkt) return INACTIVE;
    if (s.keyName !== pv.version.keyName || s.keyVersion !== pv.version.version) return INACTIVE;
    if (s.expiresAt <= this.#d.clock.now().toISOString()) return INACTIVE;
    const host = await this.#d.store.getHostState(s.hostId);
    if (!host || host.status === 'revoked') return INACTIVE;
    return { active: true, claims: payload };
  }
}
