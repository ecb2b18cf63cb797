/**
 * The enclave's ephemeral public key (a JWK, EC P-256) and how a quote is bound to it.
 *
 * Accepted members: `kty` ("EC"), `crv` ("P-256"), `x`, `y` (unpadded base64url, exactly 32 bytes
 * each, canonical). Tolerated and dropped: `kid`, `alg`, `use`, `key_ops`, `ext` (what WebCrypto's
 * exportKey("jwk") and common JOSE libraries emit). Everything else is refused: any private or
 * symmetric member (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`) because a client that sends its
 * private key has already lost it, and any unknown member, because silently ignoring key
 * parameters (e.g. `x5c`, `jku`) invites a reader to trust what custos never checked.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { CustosError } from '../lib/errors.js';
import { jcs } from '../lib/jcs.js';

export interface EcP256PublicJwk {
  readonly kty: 'EC';
  readonly crv: 'P-256';
  readonly x: string;
  readonly y: string;
}

export interface EphemeralKey {
  /** Normalised public members only. */
  readonly jwk: EcP256PublicJwk;
  readonly keyObject: KeyObject;
  /** RFC 7638 JWK SHA-256 thumbprint, 32 raw bytes. */
  readonly thumbprint: Buffer;
}

const PRIVATE_MEMBERS = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']);
const REQUIRED_MEMBERS = new Set(['kty', 'crv', 'x', 'y']);
const IGNORED_MEMBERS = new Set(['kid', 'alg', 'use', 'key_ops', 'ext']);

// NIST P-256 (FIPS 186-4 D.1.2.3 / SEC 2 §2.4.2): y² = x³ − 3x + b over GF(p).
const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;

const COORD_B64URL = /^[A-Za-z0-9_-]{43}$/;

function reject(why: string, member?: string): never {
  throw new CustosError('ERR_EPHEMERAL_KEY', `ephemeral public key: ${why}`, {
    details: member === undefined ? { reason: why } : { reason: why, member },
  });
}

function coordinate(value: unknown, member: 'x' | 'y'): { text: string; n: bigint } {
  if (typeof value !== 'string') reject(`${member} must be a string`, member);
  // 32 bytes are exactly 43 unpadded base64url characters; padding, whitespace and the
  // standard alphabet are refused.
  if (!COORD_B64URL.test(value)) reject(`${member} must be 32 bytes of unpadded base64url`, member);
  const bytes = Buffer.from(value, 'base64url');
  // The last character carries 2 unused bits; only the canonical encoding (those bits zero)
  // is accepted, so each key has exactly one textual form.
  if (bytes.length !== 32 || bytes.toString('base64url') !== value) reject(`${member} is not canonical base64url`, member);
  return { text: value, n: BigInt('0x' + bytes.toString('hex')) };
}

function mod(a: bigint): bigint {
  const r = a % P;
  return r < 0n ? r + P : r;
}

function isOnCurve(x: bigint, y: bigint): boolean {
  if (x >= P || y >= P) return false;
  return mod(y * y) === mod(x * x * x - 3n * x + B);
}

/**
 * RFC 7638 thumbprint (SHA-256) of an EC public JWK: the required members crv, kty, x, y in
 * lexicographic order, no whitespace; JCS produces exactly that text for these string members.
 */
export function jwkThumbprint(jwk: EcP256PublicJwk): Buffer {
  return createHash('sha256').update(jcs({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }), 'utf8').digest();
}

/**
 * Validates an ephemeral public JWK: a JSON object with kty "EC", crv "P-256", canonical 32-byte
 * x and y naming a point on the curve (P-256 has cofactor 1, so every such point is in the
 * prime-order group), and no private or unknown members (see the module comment).
 * @throws CustosError ERR_EPHEMERAL_KEY with `details.reason`
 */
export function parseEphemeralJwk(input: unknown): EphemeralKey {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) reject('must be a JSON object');
  const rec = input as Record<string, unknown>;
  for (const name of Object.keys(rec)) {
    if (PRIVATE_MEMBERS.has(name)) reject(`private or secret member "${name}" must not be sent`, name);
    if (!REQUIRED_MEMBERS.has(name) && !IGNORED_MEMBERS.has(name)) reject(`unexpected member "${name}"`, name);
  }
  if (rec['kty'] !== 'EC') reject('kty must be "EC"', 'kty');
  if (rec['crv'] !== 'P-256') reject('crv must be "P-256"', 'crv');
  const x = coordinate(rec['x'], 'x');
  const y = coordinate(rec['y'], 'y');
  if (!isOnCurve(x.n, y.n)) reject('the point is not on the P-256 curve');
  const jwk: EcP256PublicJwk = { kty: 'EC', crv: 'P-256', x: x.text, y: y.text };
  // The point is on the curve (checked above), so the import cannot fail; it costs ~65 µs and the
  // session path never needs it (HPKE takes the raw point), so it is done only when asked for.
  let keyObject: KeyObject | undefined;
  return {
    jwk,
    get keyObject(): KeyObject {
      keyObject ??= createPublicKey({ key: { ...jwk }, format: 'jwk' });
      return keyObject;
    },
    thumbprint: jwkThumbprint(jwk),
  };
}

/**
 * The quote extraData a session request must carry: SHA-256(nonce ‖ thumbprint) (API.md,
 * sessions), binding the TPM quote to both the server's nonce and the ephemeral key.
 * @throws CustosError ERR_BAD_REQUEST when the nonce is empty or the thumbprint is not 32 bytes
 */
export function sessionExtraData(nonce: Buffer, thumbprint: Buffer): Buffer {
  if (!Buffer.isBuffer(nonce) || nonce.length === 0) throw new CustosError('ERR_BAD_REQUEST', 'nonce must not be empty');
  if (!Buffer.isBuffer(thumbprint) || thumbprint.length !== 32) throw new CustosError('ERR_BAD_REQUEST', 'thumbprint must be 32 bytes');
  return createHash('sha256').update(nonce).update(thumbprint).digest();
}
