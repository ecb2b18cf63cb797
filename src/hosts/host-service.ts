import { createHash, randomBytes, randomUUID, timingSafeEqual, type KeyObject } from 'node:crypto';
import { checkAkPublic, checkEkPublic } from '../attestation/ak.js';
import { verifyEkCertificate, type EkVerification, type TrustAnchors } from '../attestation/ek-chain.js';
import { makeCredential } from '../attestation/make-credential.js';
import { akQualifiedNameUnderEk } from '../attestation/qualified-name.js';
import { verifyQuote, type PcrValues, type QuoteCheckName, type QuoteVerdict } from '../attestation/quote.js';
import { objectName, parseTpm2bPublic, tpmPublicToKeyObject, type TpmtPublic } from '../attestation/tpm2/public.js';
import type { Clock } from '../lib/clock.js';
import { fromBase64, fromHex, sha256hex } from '../lib/encoding.js';
import { CustosError, isCustosError } from '../lib/errors.js';
import type { LoadedPolicy } from '../policy/loader.js';
import type { PolicySet } from '../policy/policy-service.js';
import { appraise, buildEarResult, type EarStatus } from '../sessions/claims.js';
import type { JwtIssuer } from '../sessions/issuer.js';
import type { AppraisalHost, EnrollmentRecord, HostRecord, ProvisioningTokenRecord } from '../store/records.js';
import type { Repos, Store } from '../store/store.js';
import { activationTtlMs, nonceTtlMs, resolveAttestationPolicy, type AttestationPolicy } from './attestation-policy.js';

export const VERIFIER_ID = { developer: 'custos', build: 'custos-0.1.0' } as const;

export interface HostServiceDeps {
  store: Store;
  clock: Clock;
  policies: PolicySet;
  anchors: TrustAnchors;
  issuer: JwtIssuer;
  /** iss of attestation results and tokens. */
  issuerName: string;
  /** The custos key that signs attestation results. */
  resultKey: string;
}

export interface EnrollInput {
  ekCertificate?: string;
  ekPublic?: string;
  akPublic: string;
  provisioningToken?: string;
  intermediates?: string[];
  labels?: Record<string, string>;
}

export interface AttestInput {
  nonce: string;
  quote: string;
  signature: string;
  pcrs: Record<string, Record<string, string>>;
}

export interface Evidence {
  hostId: string;
  nonce: Buffer;
  quote: Buffer;
  signature: Buffer;
  pcrs: PcrValues;
  /** SHA-256(quote ‖ signature), hex: what audit events name the evidence by. */
  evidenceSha256: string;
}

export interface Appraised {
  host: AppraisalHost;
  policy: LoadedPolicy<AttestationPolicy>;
  verdict: QuoteVerdict;
  status: EarStatus;
  trustworthinessVector: Record<string, number>;
  failures: { code: string; detail: string }[];
  pcrDigestHex: string;
  evidenceHash: string;
}

export interface HostView {
  hostId: string;
  status: HostRecord['status'];
  akName: string;
  ekCertificateSubject?: string;
  ekCertificateIssuer?: string;
  labels: Record<string, string>;
  policyId: string;
  enrolledAt: string;
  revokedAt?: string;
  lastAttestation?: Record<string, unknown>;
}

export function hostView(h: HostRecord): HostView {
  return {
    hostId: h.id,
    status: h.status,
    akName: h.akName,
    ...(h.ekCertificateSubject ? { ekCertificateSubject: h.ekCertificateSubject } : {}),
    ...(h.ekCertificateIssuer ? { ekCertificateIssuer: h.ekCertificateIssuer } : {}),
    labels: h.labels,
    policyId: h.policyId,
    enrolledAt: h.enrolledAt,
    ...(h.revokedAt ? { revokedAt: h.revokedAt } : {}),
    ...(h.lastAttestation ? { lastAttestation: h.lastAttestation } : {}),
  };
}

const PROVISIONING_TOKEN = /^cpt_[A-Za-z0-9_-]{43}$/;

/**
 * The checks that make a quote the host's own evidence for this request: a TPM-generated quote,
 * signed with an allowed hash by the host's AK (its qualified name), over this request's
 * extraData. The others (PCR selection, digest, reference values, counters, safe) appraise the
 * host from evidence that passed these.
 */
const AUTHENTICITY_CHECKS: ReadonlySet<QuoteCheckName> = new Set(['magic', 'type', 'hashAlg', 'signature', 'signer', 'nonce']);
/** Live nonces one host may hold at once (each attest or session consumes one). */
export const MAX_LIVE_NONCES_PER_HOST = 256;

/** A policy's PCR reference values as bytes, decoded once per loaded policy document. */
const decodedReferences = new WeakMap<AttestationPolicy, Record<string, Buffer[]>>();
function referenceValuesOf(doc: AttestationPolicy): Record<string, Buffer[]> | undefined {
  const refs = doc.pcrs.referenceValues;
  if (!refs) return undefined;
  let out = decodedReferences.get(doc);
  if (!out) {
    out = Object.fromEntries(Object.entries(refs).map(([k, vs]) => [k, vs.map((v) => Buffer.from(v, 'hex'))]));
    decodedReferences.set(doc, out);
  }
  return out;
}

/**
 * Host provisioning and attestation: enrollment (EK chain, AK checks, MakeCredential), credential
 * activation (AK pinned), nonces, and quote appraisal against the host's attestation policy.
 * Every decision is audited with hashes of the evidence, never the evidence secrets.
 */
export class HostService {
  readonly #d: HostServiceDeps;
  readonly #akKeys = new Map<string, { akPub: ReturnType<typeof parseTpm2bPublic>; key: KeyObject }>();

  constructor(deps: HostServiceDeps) {
    this.#d = deps;
  }

  #now(): Date {
    return this.#d.clock.now();
  }

  async #audit(t: Repos, actor: string, action: string, subject: string, outcome: 'success' | 'failure' | 'denied', details: Record<string, unknown>): Promise<void> {
    await t.appendAudit({ actor, action, subject, outcome, details }, this.#now().toISOString());
  }

  /** Records a refusal in its own transaction; the refusal stands even if this write fails. */
  async #auditRefusal(actor: string, action: string, subject: string, e: unknown, details: Record<string, unknown> = {}): Promise<void> {
    const code = isCustosError(e) ? e.code : 'ERR_INTERNAL';
    try {
      await this.#d.store.tx((t) => this.#audit(t, actor, action, subject, 'denied', { ...details, code }));
    } catch {
      /* the refusal is returned regardless */
    }
  }

  async createProvisioningToken(actor: string, input: { ttlSeconds: number; uses: number; labels?: Record<string, string> }): Promise<{ token: string; id: string; expiresAt: string; uses: number }> {
    const token = 'cpt_' + randomBytes(32).toString('base64url');
    const now = this.#now();
    const rec: ProvisioningTokenRecord = {
      id: randomUUID(), tokenHash: sha256hex(token), createdAt: now.toISOString(), createdBy: actor,
      expiresAt: new Date(now.getTime() + input.ttlSeconds * 1000).toISOString(), usesLeft: input.uses, labels: input.labels ?? {},
    };
    await this.#d.store.tx(async (t) => {
      await t.insertProvisioningToken(rec);
      await this.#audit(t, actor, 'provisioning-token.create', rec.id, 'success', { uses: rec.usesLeft, expiresAt: rec.expiresAt, labels: rec.labels });
    });
    return { token, id: rec.id, expiresAt: rec.expiresAt, uses: rec.usesLeft };
  }

  /**
   * Enrollment: checks the EK (certificate chain to a trust anchor, or the policy's EK allowlist
   * with a provisioning token) and the AK, then answers with a credential only the TPM holding
   * that EK can open (TPM 2.0 Part 1 §24). The secret is random, single-use and expires.
   */
  async enroll(actor: string | null, input: EnrollInput): Promise<{ enrollmentId: string; credentialBlob: string; encryptedSecret: string; expiresAt: string; policyId: string }> {
    const subjectForAudit = 'enrollment';
    try {
      return await this.#enroll(actor, input);
    } catch (e) {
      await this.#auditRefusal(actor ?? 'host:unauthenticated', 'host.enroll', subjectForAudit, e, {
        akPublicSha256: typeof input.akPublic === 'string' ? sha256hex(input.akPublic) : null,
      });
      throw e;
    }
  }

  async #enroll(actor: string | null, input: EnrollInput): Promise<{ enrollmentId: string; credentialBlob: string; encryptedSecret: string; expiresAt: string; policyId: string }> {
    const now = this.#now();
    // Who vouches: a provisioning token (consumed only once everything else checked out) or an
    // API principal allowed to enroll.
    if (actor === null && input.provisioningToken === undefined) throw new CustosError('ERR_PROVISIONING_TOKEN', 'a provisioning token is required');
    if (input.provisioningToken !== undefined && !PROVISIONING_TOKEN.test(input.provisioningToken)) throw new CustosError('ERR_PROVISIONING_TOKEN');
    // Unauthenticated callers are turned away before any chain building or RSA work; the token is
    // only used (atomically) once everything else has checked out.
    if (actor === null && !(await this.#d.store.findLiveProvisioningToken(sha256hex(input.provisioningToken!), now.toISOString()))) {
      throw new CustosError('ERR_PROVISIONING_TOKEN');
    }

    if (input.ekPublic === undefined) {
      throw new CustosError('ERR_BAD_REQUEST', 'ekPublic (TPM2B_PUBLIC of the EK) is required: the credential is encrypted to it', { details: { field: 'ekPublic' } });
    }
    const ekPublic: TpmtPublic = parseTpm2bPublic(fromBase64(input.ekPublic, 'ekPublic'));
    checkEkPublic(ekPublic);
    const ak = checkAkPublic(fromBase64(input.akPublic, 'akPublic'));
    const akNameHex = ak.name.toString('hex');

    let ek: EkVerification | null = null;
    if (input.ekCertificate !== undefined) {
      ek = await verifyEkCertificate({
        ekCertDer: fromBase64(input.ekCertificate, 'ekCertificate'),
        intermediates: (input.intermediates ?? []).map((c, i) => fromBase64(c, `intermediates.${i}`)),
        anchors: this.#d.anchors,
        ekPublic,
        now,
      });
    }
    const ekPublicHash = ek?.ekPublicHash ?? sha256hex(tpmPublicToKeyObject(ekPublic).export({ format: 'der', type: 'spki' }));

    const revoked = (await this.#d.store.findHostsByEkPublicHash(ekPublicHash)).filter((h) => h.status === 'revoked');
    const byAk = await this.#d.store.findHostByAkName(akNameHex);
    if (revoked.length > 0 || byAk?.status === 'revoked') throw new CustosError('ERR_HOST_REVOKED', 'this TPM belongs to a revoked host');
    if (byAk) throw new CustosError('ERR_HOST_EXISTS', 'this AK is already enrolled');

    const secret = randomBytes(32);
    const cred = makeCredential(ekPublic, ak.name, secret);
    const id = randomUUID();

    return this.#d.store.tx(async (t) => {
      let token: ProvisioningTokenRecord | null = null;
      if (input.provisioningToken !== undefined) {
        token = await t.consumeProvisioningToken(sha256hex(input.provisioningToken), now.toISOString());
        if (!token) throw new CustosError('ERR_PROVISIONING_TOKEN');
      }
      // Labels come from the operator (provisioning token) or an authenticated caller, never
      // from an unauthenticated host's own say-so.
      const labels = { ...(token?.labels ?? {}), ...(actor !== null ? input.labels ?? {} : {}) };
      const policy = resolveAttestationPolicy(this.#d.policies.attestation, {
        labels, ekIssuer: ek?.issuer ?? null, tpmManufacturer: ek?.tpm.manufacturer ?? null,
      });
      const enrollment = policy.doc.enrollment ?? {};
      if (ek === null) {
        // No EK certificate: only an operator-issued provisioning token plus an explicit
        // allowlist entry admits the EK. An empty allowlist admits nothing.
        if (enrollment.requireEkCertificate !== false) throw new CustosError('ERR_EK_NOT_ALLOWED', `policy ${policy.id} requires an EK certificate`);
        if (token === null) throw new CustosError('ERR_PROVISIONING_TOKEN', 'a TPM without an EK certificate enrolls only with a provisioning token');
        if (!(enrollment.ekAllowlist ?? []).includes(ekPublicHash)) throw new CustosError('ERR_EK_NOT_ALLOWED', 'the EK is not on the allowlist', { details: { ekPublicHash } });
      } else if (enrollment.requireValidChainDates === true && ek.expiredCertificates.length > 0) {
        throw new CustosError('ERR_EK_CERT_CHAIN', 'a certificate of the EK chain is outside its validity period', { details: { certificates: ek.expiredCertificates } });
      }
      const rec: EnrollmentRecord = {
        id, status: 'pending', akPublic: input.akPublic, akName: akNameHex,
        akQualifiedName: akQualifiedNameUnderEk(objectName(ekPublic), ak.name).toString('hex'),
        ekPublicHash, ekCertificateSubject: ek?.subject ?? null, ekCertificateIssuer: ek?.issuer ?? null, policyId: policy.id,
        secretHash: sha256hex(secret), labels, provisioningTokenId: token?.id ?? null,
        actor: actor ?? `provisioning-token:${token!.id}`, createdAt: now.toISOString(),
        expiresAt: new Date(now.getTime() + activationTtlMs(policy.doc)).toISOString(), hostId: null,
      };
      await t.insertEnrollment(rec);
      await this.#audit(t, rec.actor, 'host.enroll', id, 'success', {
        akName: akNameHex, ekPublicHash, ekCertificateSubject: rec.ekCertificateSubject, ekCertificateIssuer: rec.ekCertificateIssuer,
        expiredChainCertificates: ek?.expiredCertificates ?? [], policyId: policy.id, policyVersion: policy.version, labels,
      });
      return {
        enrollmentId: id,
        credentialBlob: cred.credentialBlob.toString('base64'),
        encryptedSecret: cred.encryptedSecret.toString('base64'),
        expiresAt: rec.expiresAt,
        policyId: policy.id,
      };
    });
  }

  /** Credential activation: the secret proves the AK lives in the TPM of the EK; the host is registered. */
  async activate(enrollmentId: string, secretB64: string): Promise<{ hostId: string; akName: string }> {
    const secret = fromBase64(secretB64, 'secret');
    const now = this.#now().toISOString();
    let failure: CustosError | null = null;
    const result = await this.#d.store.tx(async (t) => {
      const e = await t.getEnrollment(enrollmentId);
      if (!e) throw new CustosError('ERR_ENROLLMENT_NOT_FOUND');
      if (e.status !== 'pending') {
        failure = new CustosError('ERR_ENROLLMENT_USED');
        await this.#audit(t, `enrollment:${e.id}`, 'host.activate', e.id, 'denied', { code: failure.code, status: e.status });
        return null;
      }
      if (e.expiresAt <= now) {
        failure = new CustosError('ERR_ENROLLMENT_NOT_FOUND', 'the enrollment has expired');
        await t.updateEnrollment(e.id, { status: 'failed' });
        await this.#audit(t, `enrollment:${e.id}`, 'host.activate', e.id, 'denied', { code: 'ERR_ENROLLMENT_EXPIRED' });
        return null;
      }
      const given = createHash('sha256').update(secret).digest();
      if (!timingSafeEqual(given, Buffer.from(e.secretHash, 'hex'))) {
        // Single use: a wrong secret burns the enrollment, the host must enroll again.
        failure = new CustosError('ERR_ACTIVATION_FAILED');
        await t.updateEnrollment(e.id, { status: 'failed' });
        await this.#audit(t, `enrollment:${e.id}`, 'host.activate', e.id, 'denied', { code: failure.code, akName: e.akName });
        return null;
      }
      if (await t.findHostByAkName(e.akName)) throw new CustosError('ERR_HOST_EXISTS');
      // A host revoked while this enrollment of the same EK was pending: it does not come back.
      if ((await t.findHostsByEkPublicHash(e.ekPublicHash)).some((h) => h.status === 'revoked')) {
        failure = new CustosError('ERR_HOST_REVOKED', 'this TPM belongs to a revoked host');
        await t.updateEnrollment(e.id, { status: 'failed' });
        await this.#audit(t, `enrollment:${e.id}`, 'host.activate', e.id, 'denied', { code: failure.code, akName: e.akName, ekPublicHash: e.ekPublicHash });
        return null;
      }
      const hostId = randomUUID();
      const host: HostRecord = {
        id: hostId, status: 'active', akName: e.akName, akPublic: e.akPublic, akQualifiedName: e.akQualifiedName,
        ekPublicHash: e.ekPublicHash, ekCertificateSubject: e.ekCertificateSubject, ekCertificateIssuer: e.ekCertificateIssuer,
        labels: e.labels, policyId: e.policyId, enrolledAt: now, revokedAt: null, lastAttestation: null, lastClock: null,
      };
      await t.insertHost(host);
      await t.updateEnrollment(e.id, { status: 'activated', hostId });
      await this.#audit(t, `host:${hostId}`, 'host.activate', hostId, 'success', { enrollmentId: e.id, akName: e.akName, ekPublicHash: e.ekPublicHash, policyId: e.policyId });
      return { hostId, akName: e.akName };
    });
    if (failure) throw failure;
    return result!;
  }

  async list(): Promise<HostView[]> {
    return (await this.#d.store.listHosts()).map(hostView);
  }

  async get(hostId: string): Promise<HostView> {
    return hostView(await this.#host(hostId));
  }

  async #host(hostId: string): Promise<HostRecord> {
    const h = await this.#d.store.getHost(hostId);
    if (!h) throw new CustosError('ERR_HOST_NOT_FOUND');
    return h;
  }

  /**
   * Revokes a host: it can no longer attest or get sessions, and its EK cannot enroll again. A
   * TPM has other EKs (RSA and ECC, low and high range), and a revoked host that kept its
   * provisioning token could enroll with one of those: `revokeProvisioningToken` also uses up
   * every use left of the token the host enrolled with (a fleet's shared token included — the
   * operator then issues a new one). The answer names that token either way.
   */
  async revoke(actor: string, hostId: string, reason?: string, opts: { revokeProvisioningToken?: boolean } = {}): Promise<HostView & { provisioningTokenId?: string; provisioningTokenRevoked?: boolean }> {
    return this.#d.store.tx(async (t) => {
      const h = await t.getHost(hostId);
      if (!h) throw new CustosError('ERR_HOST_NOT_FOUND');
      const tokenId = (await t.findEnrollmentOfHost(hostId))?.provisioningTokenId ?? null;
      const token = tokenId === null ? {} : { provisioningTokenId: tokenId };
      let exhausted = false;
      if (opts.revokeProvisioningToken === true && tokenId !== null) exhausted = (await t.exhaustProvisioningToken(tokenId)) === 1;
      const tokenOutcome = opts.revokeProvisioningToken === true && tokenId !== null ? { provisioningTokenRevoked: exhausted } : {};
      if (h.status === 'revoked') {
        if (exhausted) await this.#audit(t, actor, 'provisioning-token.revoke', tokenId!, 'success', { hostId });
        return { ...hostView(h), ...token, ...tokenOutcome };
      }
      const now = this.#now().toISOString();
      await t.updateHost(hostId, { status: 'revoked', revokedAt: now });
      await this.#audit(t, actor, 'host.revoke', hostId, 'success', { akName: h.akName, ...(reason ? { reason } : {}), ...token, ...tokenOutcome });
      return { ...hostView({ ...h, status: 'revoked', revokedAt: now }), ...token, ...tokenOutcome };
    });
  }

  /** A fresh nonce for one host: 32 random bytes, single use, TTL from the host's policy. */
  async challenge(hostId: string): Promise<{ nonce: string; expiresAt: string }> {
    const h = await this.#d.store.getHostState(hostId);
    if (!h) throw new CustosError('ERR_HOST_NOT_FOUND');
    if (h.status === 'revoked') throw new CustosError('ERR_HOST_REVOKED');
    const policy = this.#policyOf(h);
    const nonce = randomBytes(32);
    const now = this.#now();
    const expiresAt = new Date(now.getTime() + nonceTtlMs(policy.doc)).toISOString();
    // Challenges are unauthenticated: bound how many live nonces one host can hold, so that
    // nobody can grow the nonce table without limit by asking on a host's behalf. At the bound
    // the oldest goes, rather than the request: refusing would let anyone lock a host out of
    // attestation with a few requests a second (host ids are no secret: tokens carry them as
    // `sub`), where evicting makes them outpace the host's own quote round trip with hundreds.
    await this.#d.store.tx(async (t) => {
      const live = await t.countLiveNonces(hostId, now.toISOString());
      if (live >= MAX_LIVE_NONCES_PER_HOST) await t.evictOldestNonces(hostId, now.toISOString(), live - MAX_LIVE_NONCES_PER_HOST + 1);
      await t.insertNonce({ nonceHash: sha256hex(nonce), hostId, createdAt: now.toISOString(), expiresAt });
    });
    return { nonce: nonce.toString('base64'), expiresAt };
  }

  #policyOf(h: Pick<HostRecord, 'policyId'>): LoadedPolicy<AttestationPolicy> {
    const p = this.#d.policies.attestationById(h.policyId);
    if (!p) throw new CustosError('ERR_POLICY_NOT_FOUND', `attestation policy ${h.policyId} of this host is no longer loaded`);
    return p;
  }

  /** Parses the wire form of evidence (base64 fields, hex PCR values) into bytes. */
  static parseEvidence(hostId: string, input: AttestInput): Evidence {
    const pcrs: Record<string, Record<string, Buffer>> = {};
    for (const [bank, values] of Object.entries(input.pcrs)) {
      pcrs[bank] = {};
      for (const [idx, hex] of Object.entries(values)) {
        if (!/^(?:[0-9]|1[0-9]|2[0-3])$/.test(idx)) throw new CustosError('ERR_BAD_REQUEST', `pcrs.${bank}.${idx}: not a PCR index`, { details: { field: `pcrs.${bank}.${idx}` } });
        pcrs[bank]![idx] = fromHex(hex, `pcrs.${bank}.${idx}`);
      }
    }
    const nonce = fromBase64(input.nonce, 'nonce');
    const quote = fromBase64(input.quote, 'quote');
    const signature = fromBase64(input.signature, 'signature');
    return {
      hostId,
      nonce,
      quote,
      signature,
      pcrs,
      evidenceSha256: createHash('sha256').update(quote).update(signature).digest('hex'),
    };
  }

  /**
   * Consumes the nonce (atomically, even when what follows fails) and appraises the quote
   * against the host's policy. `extraData` is what the quote must carry: the nonce itself for
   * attest, SHA-256(nonce ‖ thumbprint) for sessions. Request-level refusals (unknown, expired or
   * foreign nonce, revoked host, malformed structures) throw; check failures are in the verdict.
   */
  async appraise(ev: Evidence, extraData: Buffer, host?: AppraisalHost): Promise<Appraised> {
    // A host record the caller just read may be passed in; recordAppraisal re-reads it in its
    // transaction, so a revocation in between is still caught before anything is issued.
    const h = host?.id === ev.hostId ? host : await this.#host(ev.hostId);
    const nonceHash = sha256hex(ev.nonce);
    const taken = await this.#d.store.tx((t) => t.takeNonce(nonceHash));
    if (!taken || taken.hostId !== ev.hostId) throw new CustosError('ERR_NONCE_UNKNOWN');
    if (taken.expiresAt <= this.#now().toISOString()) throw new CustosError('ERR_NONCE_EXPIRED');
    if (h.status === 'revoked') throw new CustosError('ERR_HOST_REVOKED');
    const policy = this.#policyOf(h);
    // The AK's name is the digest of its public area, so a parsed area and key found under the
    // name are those of the bytes the host record carries.
    let ak = this.#akKeys.get(h.akName);
    if (!ak) {
      const akPub = parseTpm2bPublic(Buffer.from(h.akPublic, 'base64'));
      ak = { akPub, key: tpmPublicToKeyObject(akPub) };
      this.#akKeys.set(h.akName, ak);
    }
    const { akPub, key } = ak;
    const refs = referenceValuesOf(policy.doc);
    const verdict = verifyQuote({
      akPublic: akPub,
      akKey: key,
      quote: ev.quote,
      signature: ev.signature,
      pcrs: ev.pcrs,
      expectedExtraData: extraData,
      requiredSelection: { bank: policy.doc.pcrs.bank, indices: policy.doc.pcrs.indices },
      ...(refs ? { referenceValues: refs } : {}),
      ...(h.lastClock
        ? { previous: { clock: BigInt(h.lastClock.clock), resetCount: h.lastClock.resetCount, restartCount: h.lastClock.restartCount, ...(h.lastClock.firmwareVersion ? { firmwareVersion: BigInt(h.lastClock.firmwareVersion) } : {}) } }
        : {}),
      expectedQualifiedSigner: Buffer.from(h.akQualifiedName, 'hex'),
      allowSha1: policy.doc.allowSha1 === true,
    });
    // Evidence the host's AK did not make for this nonce says nothing about the host: anyone may
    // ask for a nonce and post a quote (or replay an old one). It is refused as a request — the
    // caller audits it, the host's record is left alone and no result is signed — and the answer
    // names only these checks, never the PCR checks, which would tell an anonymous caller which
    // values the reference values accept.
    if (!verdict.ok) {
      const unproven = verdict.checks.filter((c) => !c.ok && AUTHENTICITY_CHECKS.has(c.name));
      if (unproven.length > 0) {
        throw new CustosError(unproven[0]!.code, undefined, { details: { failures: unproven.map((c) => ({ code: c.code, detail: c.detail ?? c.name })) } });
      }
    }
    const failures = verdict.failures.map((f) => ({ code: f.code, detail: f.detail }));
    const a = appraise(failures);
    return {
      host: h,
      policy,
      verdict,
      status: a.status === 'none' ? 'contraindicated' : a.status,
      trustworthinessVector: a.trustworthinessVector as Record<string, number>,
      failures,
      pcrDigestHex: verdict.parsed.pcrDigest.toString('hex'),
      evidenceHash: ev.evidenceSha256,
    };
  }

  /**
   * Records the outcome of an appraisal on the host (counters only from a quote that verified).
   * `outcome` overrides the audit outcome derived from the verdict (a caller that refuses a
   * verified quote for its own reasons records `denied`).
   */
  async recordAppraisal(t: Repos, a: Appraised, action: string, extra: Record<string, unknown> = {}, outcome?: 'success' | 'failure' | 'denied'): Promise<void> {
    const now = this.#now().toISOString();
    const summary = { status: a.status, time: now, policyId: a.policy.id, policyVersion: a.policy.version, pcrDigest: a.pcrDigestHex };
    const c = a.verdict.parsed.counters;
    // Counters only move forward: two appraisals of one host may commit out of order, and the
    // stored counters must stay those of the newest quote that verified.
    const fresh = await t.getHostState(a.host.id);
    const recorded = outcome ?? (a.verdict.ok ? 'success' : 'failure');
    // Revoked while its evidence was being appraised: nothing is recorded as success for it
    // (a refusal is still written).
    if (!fresh || (fresh.status === 'revoked' && recorded === 'success')) throw new CustosError('ERR_HOST_REVOKED');
    const current = fresh.lastClock;
    const newer = current === null || c.resetCount > current.resetCount || (c.resetCount === current.resetCount && (c.restartCount > current.restartCount || (c.restartCount === current.restartCount && c.clock > BigInt(current.clock))));
    await t.updateHost(a.host.id, {
      lastAttestation: summary,
      ...(a.verdict.ok && newer ? { lastClock: { clock: c.clock.toString(), resetCount: c.resetCount, restartCount: c.restartCount, ...(c.firmwareVersion !== undefined ? { firmwareVersion: c.firmwareVersion.toString() } : {}) } } : {}),
    });
    await this.#audit(t, `host:${a.host.id}`, action, a.host.id, recorded, {
      verdict: a.status, failures: a.failures.map((f) => f.code), evidenceSha256: a.evidenceHash, akName: a.host.akName,
      pcrDigest: a.pcrDigestHex, policyId: a.policy.id, policyVersion: a.policy.version, ...extra,
    });
  }

  /** POST /v1/hosts/{id}/attest: appraisal with extraData = nonce, answered with a signed EAR. */
  async attest(hostId: string, input: AttestInput): Promise<{ status: EarStatus; result: string; failures: { code: string; detail: string }[] }> {
    let ev: Evidence | null = null;
    try {
      ev = HostService.parseEvidence(hostId, input);
      const a = await this.appraise(ev, ev.nonce);
      const now = this.#now();
      const ear = buildEarResult({
        issuer: this.#d.issuerName, hostId, now, nonce: ev.nonce, verifierId: VERIFIER_ID, ttlSeconds: 300,
        appraisal: { status: a.status, trustworthinessVector: a.trustworthinessVector, policyId: a.policy.id, policyVersion: a.policy.version, pcrDigest: a.pcrDigestHex },
      });
      const signed = await this.#d.issuer.sign(this.#d.resultKey, 'attestation-result', ear as unknown as Record<string, unknown>, 'application/eat+jwt');
      await this.#d.store.tx(async (t) => {
        await this.#d.issuer.assertStillActive(t, signed);
        await this.recordAppraisal(t, a, 'host.attest', { nonceSha256: sha256hex(ev!.nonce), resultKid: signed.kid });
      });
      return { status: a.status, result: signed.token, failures: a.failures };
    } catch (e) {
      if (isCustosError(e) && e.status < 500) {
        await this.#auditRefusal(`host:${hostId}`, 'host.attest', hostId, e, ev ? { nonceSha256: sha256hex(ev.nonce), evidenceSha256: ev.evidenceSha256 } : {});
      }
      throw e;
    }
  }
}
