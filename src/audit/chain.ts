import { hash } from 'node:crypto';
import { jcs } from '../lib/jcs.js';

/**
 * The audit hash chain, shared by the writer (the store's append) and the offline verifier.
 *
 * For event n:  hash_n = hex( SHA-256( ascii(prevHash_n) ‖ utf8( JCS(body_n) ) ) )
 * where prevHash_1 = GENESIS_HASH (64 × "0"), prevHash_n = hash_{n-1}, and body_n is the JSON
 * object {seq, time, actor, action, subject, outcome, details} canonicalised by RFC 8785 (JCS).
 * `prevHash` enters as its 64 lowercase hex characters. An auditor can recompute every link with
 * any SHA-256 and any JCS implementation.
 */
export const GENESIS_HASH = '0'.repeat(64);

export interface AuditEventBody {
  seq: number;
  /** RFC 3339 UTC with milliseconds. */
  time: string;
  actor: string;
  action: string;
  subject: string;
  outcome: 'success' | 'failure' | 'denied';
  details: Record<string, unknown>;
}

export interface AuditEvent extends AuditEventBody {
  prevHash: string;
  hash: string;
}

/** The RFC 8785 text of an event body: exactly the seven body fields, whatever else `e` carries. */
export function eventBodyJcs(body: AuditEventBody): string {
  return canonicalEvent(body).canonical;
}

/**
 * The RFC 8785 text of an event body and, separately, of its `details` (what the store keeps).
 * Only `details` goes through the general canonicaliser: the wrapper's members are fixed, so
 * they are written in JCS member order (action, actor, details, outcome, seq, subject, time:
 * sorted by UTF-16 code units) with JSON.stringify for the strings, which is JCS's string form
 * (RFC 8785 §3.2.2.2). A test checks the result against the general canonicaliser.
 */
export function canonicalEvent(body: AuditEventBody): { canonical: string; details: string } {
  if (!Number.isSafeInteger(body.seq)) throw new TypeError('audit seq must be an integer');
  const details = jcs(body.details);
  const q = JSON.stringify;
  return {
    details,
    canonical:
      `{"action":${q(body.action)},"actor":${q(body.actor)},"details":${details},"outcome":${q(body.outcome)},` +
      `"seq":${body.seq},"subject":${q(body.subject)},"time":${q(body.time)}}`,
  };
}

/**
 * The chain hash from the previous hash and the body's canonical text (as {@link eventBodyJcs}
 * returns it, or as an export line carries it verbatim). prevHash is 64 ASCII hex characters, so
 * prepending it to the UTF-8 text is the same as prepending its bytes.
 */
export function computeEventHashFromCanonical(prevHash: string, canonicalBody: string): string {
  // One crypto.hash call, no Hash object: the verifier hashes hundreds of thousands of events a second.
  return hash('sha256', prevHash + canonicalBody, 'hex');
}

/** Computes the chain hash of one event from the previous hash and the event body. */
export function computeEventHash(prevHash: string, body: AuditEventBody): string {
  return computeEventHashFromCanonical(prevHash, eventBodyJcs(body));
}

/** 64 lowercase hex characters (a SHA-256 digest as the chain writes it). */
export function isHashHex(s: unknown): s is string {
  return typeof s === 'string' && s.length === 64 && /^[0-9a-f]{64}$/.test(s);
}

/** A signed checkpoint over the chain head at `seq`. */
export interface AuditCheckpoint {
  seq: number;
  hash: string;
  time: string;
  kid: string;
  /** JOSE algorithm of the audit key version: ES256, ES384, RS256 or PS256. */
  alg: string;
  /**
   * base64 (standard, padded) of the signature over {@link checkpointSigningInput}, in JWS form:
   * raw r‖s for ES256/ES384 (RFC 7518 §3.4), the RSA signature octets for RS256/PS256.
   */
  signature: string;
}

/** The bytes a checkpoint signature covers: JCS({seq, hash, time, kid}). */
export function checkpointSigningInput(cp: Pick<AuditCheckpoint, 'seq' | 'hash' | 'time' | 'kid'>): Buffer {
  return Buffer.from(jcs({ seq: cp.seq, hash: cp.hash, time: cp.time, kid: cp.kid }), 'utf8');
}

/** An audit key version vouched for by the version before it (see endorsementSigningInput). */
export interface AuditKeyEndorsement {
  /** The kid of the version that signed the endorsement. */
  readonly by: string;
  readonly alg: string;
  /** Base64; ECDSA as raw r‖s (JWS), like checkpoints. */
  readonly signature: string;
  /** RFC 3339: when it was signed (a compromise of `by` before then voids it). */
  readonly time: string;
}

/** The public members of a JWK that name the key (RFC 7638's required members), nothing else. */
function publicJwkMembers(jwk: Record<string, unknown>): Record<string, unknown> {
  return jwk['kty'] === 'RSA' ? { kty: 'RSA', n: jwk['n'], e: jwk['e'] } : { kty: jwk['kty'], crv: jwk['crv'], x: jwk['x'], y: jwk['y'] };
}

/**
 * What an audit key version signs to vouch for the next one: JCS({purpose, kid, jwk, by, time}),
 * `jwk` reduced to publicJwkMembers. An auditor who pinned one version can then accept the
 * checkpoints of the versions it endorsed, and of those they endorsed in turn.
 */
export function endorsementSigningInput(e: { kid: string; jwk: Record<string, unknown>; by: string; time: string }): Buffer {
  return Buffer.from(jcs({ purpose: 'custos-audit-key-endorsement', kid: e.kid, jwk: publicJwkMembers(e.jwk), by: e.by, time: e.time }), 'utf8');
}
