/**
 * Compact JWS (RFC 7515 §7.1) whose signature comes from an external signer: the HSM through the
 * KeyStore port. The header and claims are serialised with RFC 8785 (JCS), so the same claims
 * always give the same bytes, and the JOSE signature forms are those of RFC 7518 §3 (ECDSA as raw
 * r‖s, RSA as the PKCS#1 v1.5 or PSS signature octets). Verification is left to standard JOSE
 * libraries (jose), which is the point: relying parties use their own.
 */
import { createHash } from 'node:crypto';
import { checkRawEcdsaSignature, type EcdsaCurve } from '../lib/ecdsa-signature.js';
import { CustosError } from '../lib/errors.js';
import { jcs } from '../lib/jcs.js';
import type { KeyStore } from '../hsm/key-store.js';
import { keyTypeInfo, type HashName, type KeyType, type SignScheme } from '../hsm/key-types.js';

export type JwsAlg = 'ES256' | 'ES384' | 'RS256' | 'PS256';

export interface JwsHeader {
  readonly alg: JwsAlg;
  readonly kid: string;
  readonly typ?: string;
}

/** Produces the JOSE signature bytes over the JWS signing input (ASCII `b64(header).b64(payload)`). */
export type JwsSigner = (signingInput: Buffer) => Promise<Buffer>;

/** A signer bound to one HSM key; `alg` is what the header must say. */
export type HsmJwsSigner = JwsSigner & { readonly alg: JwsAlg };

interface AlgInfo {
  readonly hash: HashName;
  readonly scheme: SignScheme;
  /** ECDSA: the curve the key must be on, and the fixed raw signature size. */
  readonly curve?: EcdsaCurve;
}

// RFC 7518 §3.1: the "alg" values custos issues.
const ALGS: Readonly<Record<JwsAlg, AlgInfo>> = {
  ES256: { hash: 'sha256', scheme: 'ecdsa', curve: 'P-256' },
  ES384: { hash: 'sha384', scheme: 'ecdsa', curve: 'P-384' },
  RS256: { hash: 'sha256', scheme: 'rsa-pkcs1' },
  PS256: { hash: 'sha256', scheme: 'rsa-pss' },
};

function algInfo(alg: string): AlgInfo {
  const a = (ALGS as Record<string, AlgInfo | undefined>)[alg];
  if (!a) throw new CustosError('ERR_KEY_TYPE', `unsupported JWS algorithm ${alg}`);
  return a;
}

/**
 * The JWS algorithm for a key type: the key-type table's default (ES256 for ec-p256, ES384 for
 * ec-p384, RS256 for RSA), or PS256 for an RSA key when asked.
 * @throws CustosError ERR_KEY_TYPE when the key cannot sign with that algorithm
 */
export function jwsAlgFor(keyType: KeyType, requested?: JwsAlg): JwsAlg {
  let info;
  try {
    info = keyTypeInfo(keyType);
  } catch (cause) {
    throw new CustosError('ERR_KEY_TYPE', `unknown key type ${String(keyType)}`, { cause });
  }
  if (!info.jwsAlg || !info.purposes.includes('sign')) throw new CustosError('ERR_KEY_TYPE', `a ${keyType} key does not sign JWS`);
  const alg = (requested ?? info.jwsAlg) as JwsAlg;
  const a = algInfo(alg);
  const fits = info.kind === 'ec' ? a.curve === info.curve : info.kind === 'rsa' && a.scheme !== 'ecdsa';
  if (!fits) throw new CustosError('ERR_KEY_TYPE', `a ${keyType} key cannot sign ${alg}`);
  return alg;
}

const b64u = (b: Buffer): string => b.toString('base64url');

/**
 * Builds and signs a compact JWS. Header members are exactly alg, kid and (when given) typ; the
 * payload is the JCS form of `claims`. For ES256/ES384 the signer's output must be a well-formed
 * raw r‖s of the curve's size, so a signer returning DER (or garbage) fails here rather than
 * producing a token no one can verify.
 * @throws CustosError ERR_BAD_REQUEST (empty kid, claims not a JSON object), ERR_KEY_TYPE (alg),
 *   ERR_SIGNATURE_FORMAT (malformed ECDSA signature), or whatever the signer throws
 */
export async function signJwt(input: { readonly header: JwsHeader; readonly claims: Record<string, unknown> }, signer: JwsSigner): Promise<string> {
  const { header, claims } = input;
  const a = algInfo(header.alg);
  if (typeof header.kid !== 'string' || header.kid === '') throw new CustosError('ERR_BAD_REQUEST', 'the JWS header needs a kid');
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) {
    throw new CustosError('ERR_BAD_REQUEST', 'JWT claims must be a JSON object');
  }
  const h: Record<string, string> = { alg: header.alg, kid: header.kid };
  if (header.typ !== undefined) h['typ'] = header.typ;
  let payload: string;
  try {
    payload = jcs(claims);
  } catch (cause) {
    throw new CustosError('ERR_BAD_REQUEST', 'JWT claims are not representable as JSON', { cause });
  }
  const signingInput = `${b64u(Buffer.from(jcs(h), 'utf8'))}.${b64u(Buffer.from(payload, 'utf8'))}`;
  const signature = await signer(Buffer.from(signingInput, 'ascii'));
  if (!Buffer.isBuffer(signature) || signature.length === 0) throw new CustosError('ERR_SIGNATURE_FORMAT', 'the signer returned no signature');
  if (a.curve) checkRawEcdsaSignature(signature, a.curve);
  return `${signingInput}.${b64u(signature)}`;
}

/**
 * A JWS signer over an HSM key: hashes the signing input with the algorithm's hash and has the
 * KeyStore sign the digest (C_Sign). The port already returns JOSE form: raw r‖s for ECDSA (checked
 * for size and range here), the signature octets for RSA PKCS#1 v1.5 (RS256) and PSS with MGF1 and
 * salt = hash length (PS256, RFC 7518 §3.5).
 * @throws CustosError ERR_KEY_TYPE when the key type cannot sign the algorithm; at signing time,
 *   the KeyStore's errors (ERR_HSM_*) and ERR_SIGNATURE_FORMAT
 */
export function makeHsmJwsSigner(keyStore: KeyStore, keyId: string, keyType: KeyType, alg?: JwsAlg): HsmJwsSigner {
  const chosen = jwsAlgFor(keyType, alg);
  const a = algInfo(chosen);
  const signer = async (signingInput: Buffer): Promise<Buffer> => {
    const digest = createHash(a.hash).update(signingInput).digest();
    const sig = await keyStore.sign(keyId, a.scheme, a.hash, digest);
    if (a.curve) checkRawEcdsaSignature(sig, a.curve);
    return sig;
  };
  return Object.assign(signer, { alg: chosen });
}
