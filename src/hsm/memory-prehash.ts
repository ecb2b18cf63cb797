import { createECDH, createHash, constants, privateEncrypt, publicDecrypt, randomBytes, type KeyObject } from 'node:crypto';
import { HASH_BYTES, type HashName } from './key-types.js';

/**
 * Signing a caller-computed digest for the in-memory KeyStore. Hand-written because node:crypto
 * only signs messages (it always hashes first) and no maintained dependency of custos signs an
 * ECDSA or RSA-PSS pre-hash; the PKCS#11 adapter gets this from the HSM (CKM_ECDSA,
 * CKM_RSA_PKCS_PSS). Test fake only: not constant-time, not for production keys.
 */

interface Curve { name: string; p: bigint; n: bigint; a: bigint; gx: bigint; gy: bigint; size: number }

// SEC 2 v2 §2.4.2 (secp256r1) and §2.5.1 (secp384r1).
const CURVES: Record<'P-256' | 'P-384', Curve> = {
  'P-256': {
    name: 'prime256v1',
    p: 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
    n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    a: 0xffffffff00000001000000000000000000000000fffffffffffffffffffffffcn,
    gx: 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n,
    gy: 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n,
    size: 32,
  },
  'P-384': {
    name: 'secp384r1',
    p: 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffffn,
    n: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
    a: 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000fffffffcn,
    gx: 0xaa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7n,
    gy: 0x3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5fn,
    size: 48,
  },
};

const toBig = (b: Buffer): bigint => (b.length === 0 ? 0n : BigInt(`0x${b.toString('hex')}`));
const toBuf = (v: bigint, len: number): Buffer => Buffer.from(v.toString(16).padStart(len * 2, '0'), 'hex');
const mod = (a: bigint, m: bigint): bigint => ((a % m) + m) % m;
function modPow(b: bigint, e: bigint, m: bigint): bigint {
  let r = 1n;
  b = mod(b, m);
  while (e > 0n) {
    if (e & 1n) r = (r * b) % m;
    b = (b * b) % m;
    e >>= 1n;
  }
  return r;
}
const inv = (a: bigint, m: bigint): bigint => modPow(a, m - 2n, m);

type Point = { x: bigint; y: bigint } | null;

function add(c: Curve, P: Point, Q: Point): Point {
  if (!P) return Q;
  if (!Q) return P;
  if (P.x === Q.x && mod(P.y + Q.y, c.p) === 0n) return null;
  const l = P.x === Q.x && P.y === Q.y ? mod((3n * P.x * P.x + c.a) * inv(2n * P.y, c.p), c.p) : mod((Q.y - P.y) * inv(mod(Q.x - P.x, c.p), c.p), c.p);
  const x = mod(l * l - P.x - Q.x, c.p);
  return { x, y: mod(l * (P.x - x) - P.y, c.p) };
}
function mul(c: Curve, k: bigint, P: Point): Point {
  let R: Point = null;
  for (let Q = P; k > 0n; k >>= 1n, Q = add(c, Q, Q)) if (k & 1n) R = add(c, R, Q);
  return R;
}
// FIPS 186-5 §6.4.1 step 4: leftmost min(N, outlen) bits of the hash.
function digestInt(c: Curve, digest: Buffer): bigint {
  const z = toBig(digest.subarray(0, Math.min(digest.length, c.size)));
  return z;
}

/** ECDSA over a digest (FIPS 186-5 §6.4.1), raw r‖s. `d` is the private scalar from the JWK. */
export function ecdsaSignDigest(curve: 'P-256' | 'P-384', d: Buffer, digest: Buffer): Buffer {
  const c = CURVES[curve];
  const z = digestInt(c, digest);
  const x = toBig(d);
  for (;;) {
    const k = mod(toBig(randomBytes(c.size + 8)), c.n - 1n) + 1n;
    // k·G through OpenSSL's ECDH: the public key of scalar k is k·G.
    const ecdh = createECDH(c.name);
    ecdh.setPrivateKey(toBuf(k, c.size));
    const R = ecdh.getPublicKey();
    const r = mod(toBig(R.subarray(1, 1 + c.size)), c.n);
    if (r === 0n) continue;
    const s = mod(inv(k, c.n) * (z + r * x), c.n);
    if (s === 0n) continue;
    return Buffer.concat([toBuf(r, c.size), toBuf(s, c.size)]);
  }
}

/** ECDSA verification over a digest (FIPS 186-5 §6.4.2) of raw r‖s against the public point. */
export function ecdsaVerifyDigest(curve: 'P-256' | 'P-384', qx: Buffer, qy: Buffer, digest: Buffer, sig: Buffer): boolean {
  const c = CURVES[curve];
  if (sig.length !== 2 * c.size) return false;
  const r = toBig(sig.subarray(0, c.size));
  const s = toBig(sig.subarray(c.size));
  if (r <= 0n || r >= c.n || s <= 0n || s >= c.n) return false;
  const w = inv(s, c.n);
  const z = digestInt(c, digest);
  const X = add(c, mul(c, mod(z * w, c.n), { x: c.gx, y: c.gy }), mul(c, mod(r * w, c.n), { x: toBig(qx), y: toBig(qy) }));
  return X !== null && mod(X.x, c.n) === r;
}

function mgf1(hash: HashName, seed: Buffer, len: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; out.length * HASH_BYTES[hash] < len; i++) {
    const ctr = Buffer.alloc(4);
    ctr.writeUInt32BE(i);
    out.push(createHash(hash).update(seed).update(ctr).digest());
  }
  return Buffer.concat(out).subarray(0, len);
}

function modBits(key: KeyObject): number {
  return key.asymmetricKeyDetails?.modulusLength ?? 0;
}

/** RSASSA-PSS over a digest (RFC 8017 §8.1.1, EMSA-PSS-ENCODE §9.1.1), MGF1 same hash, sLen = hLen. */
export function pssSignDigest(key: KeyObject, hash: HashName, mHash: Buffer): Buffer {
  const hLen = HASH_BYTES[hash];
  const emBits = modBits(key) - 1;
  const emLen = Math.ceil(emBits / 8);
  const salt = randomBytes(hLen);
  const H = createHash(hash).update(Buffer.alloc(8)).update(mHash).update(salt).digest();
  const db = Buffer.concat([Buffer.alloc(emLen - 2 * hLen - 2), Buffer.from([1]), salt]);
  const masked = mgf1(hash, H, emLen - hLen - 1);
  for (let i = 0; i < db.length; i++) masked[i] = (masked[i] as number) ^ (db[i] as number);
  masked[0] = (masked[0] as number) & (0xff >> (8 * emLen - emBits));
  const em = Buffer.concat([masked, H, Buffer.from([0xbc])]);
  const k = Math.ceil(modBits(key) / 8);
  return privateEncrypt({ key, padding: constants.RSA_NO_PADDING }, Buffer.concat([Buffer.alloc(k - em.length), em]));
}

/** RSASSA-PSS verification over a digest (RFC 8017 §8.1.2, EMSA-PSS-VERIFY §9.1.2). */
export function pssVerifyDigest(key: KeyObject, hash: HashName, mHash: Buffer, sig: Buffer): boolean {
  const hLen = HASH_BYTES[hash];
  const emBits = modBits(key) - 1;
  const emLen = Math.ceil(emBits / 8);
  const k = Math.ceil(modBits(key) / 8);
  if (sig.length !== k) return false;
  const full = publicDecrypt({ key, padding: constants.RSA_NO_PADDING }, sig);
  const em = full.subarray(full.length - emLen);
  if (full.subarray(0, full.length - emLen).some((b) => b !== 0)) return false;
  if (em[em.length - 1] !== 0xbc) return false;
  const masked = em.subarray(0, emLen - hLen - 1);
  const H = em.subarray(emLen - hLen - 1, emLen - 1);
  if (((masked[0] as number) & ~(0xff >> (8 * emLen - emBits)) & 0xff) !== 0) return false;
  const db = mgf1(hash, H, emLen - hLen - 1);
  for (let i = 0; i < db.length; i++) db[i] = (db[i] as number) ^ (masked[i] as number);
  db[0] = (db[0] as number) & (0xff >> (8 * emLen - emBits));
  const ps = emLen - 2 * hLen - 2;
  if (db.subarray(0, ps).some((b) => b !== 0) || db[ps] !== 1) return false;
  const salt = db.subarray(db.length - hLen);
  return createHash(hash).update(Buffer.alloc(8)).update(mHash).update(salt).digest().equals(H);
}
