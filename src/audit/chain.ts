import { createHash } from 'node:crypto';
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

/** Computes the chain hash of one event from the previous hash and the event body. */
export function computeEventHash(prevHash: string, body: AuditEventBody): string {
  const canonical = jcs({
    seq: body.seq,
    time: body.time,
    actor: body.actor,
    action: body.action,
    subject: body.subject,
    outcome: body.outcome,
    details: body.details,
  });
  return createHash('sha256').update(prevHash, 'latin1').update(canonical, 'utf8').digest('hex');
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
