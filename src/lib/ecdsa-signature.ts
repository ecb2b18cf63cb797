/**
 * The one place where ECDSA signatures change form.
 *
 * Two encodings meet in custos: the fixed-size raw form r‖s (PKCS#11 CKM_ECDSA output, JOSE
 * ES256/ES384 per RFC 7518 §3.4, WebCrypto, node's `ieee-p1363`) and the DER form
 * `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 3279 §2.2.3, X.509, node's default).
 * Both directions are strict: DER must be the unique DER encoding (X.690 §8.3.2 minimal INTEGERs,
 * §10.1 definite minimal lengths), with nothing after it, and r and s must lie in [1, n-1], so
 * that a signature has exactly one accepted encoding and malleated encodings are refused.
 * Hand-written because node:crypto converts only implicitly inside sign/verify and exposes no
 * strict parser.
 */
import { CustosError } from './errors.js';

export type EcdsaCurve = 'P-256' | 'P-384';

interface CurveParams {
  /** Bytes of one scalar (r or s) in the raw form. */
  readonly size: number;
  /** The group order n, big-endian in `size` bytes (fixed-size scalars compare as numbers byte-wise). */
  readonly n: Buffer;
}

const CURVES: Readonly<Record<EcdsaCurve, CurveParams>> = {
  // SEC 2 v2 §2.4.2 (secp256r1) and §2.5.1 (secp384r1).
  'P-256': { size: 32, n: Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex') },
  'P-384': {
    size: 48,
    n: Buffer.from('ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973', 'hex'),
  },
};

function curveParams(curve: EcdsaCurve): CurveParams {
  const p = (CURVES as Record<string, CurveParams | undefined>)[curve];
  if (!p) throw new CustosError('ERR_SIGNATURE_FORMAT', `unsupported ECDSA curve ${String(curve)}`);
  return p;
}

/** Size in bytes of the raw r‖s form on a curve (64 for P-256, 96 for P-384). */
export function ecdsaRawSignatureBytes(curve: EcdsaCurve): number {
  return curveParams(curve).size * 2;
}

function fail(reason: string): never {
  throw new CustosError('ERR_SIGNATURE_FORMAT', `malformed ECDSA signature: ${reason}`);
}

/** `scalar` is exactly `p.size` bytes, big-endian: it must lie in [1, n-1]. */
function checkScalar(scalar: Buffer, p: CurveParams, name: string): void {
  let zero = true;
  for (let i = 0; i < scalar.length; i++) {
    if (scalar[i] !== 0) {
      zero = false;
      break;
    }
  }
  if (zero) fail(`${name} is zero`);
  if (Buffer.compare(scalar, p.n) >= 0) fail(`${name} is not below the group order`);
}

/**
 * Checks a raw r‖s signature: exact size for the curve, r and s in [1, n-1].
 * @throws CustosError ERR_SIGNATURE_FORMAT
 */
export function checkRawEcdsaSignature(raw: Buffer, curve: EcdsaCurve): void {
  const p = curveParams(curve);
  if (!Buffer.isBuffer(raw) || raw.length !== p.size * 2) fail(`raw signature must be ${p.size * 2} bytes for ${curve}`);
  checkScalar(raw.subarray(0, p.size), p, 'r');
  checkScalar(raw.subarray(p.size), p, 's');
}

/**
 * Where the minimal DER INTEGER content of a non-negative big-endian magnitude starts, and
 * whether it needs a 0x00 in front (X.690 §8.3.2: no leading zero octets; a set high bit would
 * read as negative in two's complement).
 */
function derInteger(magnitude: Buffer): { from: number; pad: number; len: number } {
  let from = 0;
  while (from < magnitude.length - 1 && magnitude[from] === 0) from++;
  const pad = (magnitude[from] as number) & 0x80 ? 1 : 0;
  return { from, pad, len: pad + magnitude.length - from };
}

/**
 * Converts raw r‖s (JOSE / PKCS#11 form) to the DER `ECDSA-Sig-Value`, written into one buffer.
 * @throws CustosError ERR_SIGNATURE_FORMAT on a wrong size or r/s outside [1, n-1]
 */
export function ecdsaRawToDer(raw: Buffer, curve: EcdsaCurve): Buffer {
  checkRawEcdsaSignature(raw, curve);
  const size = curveParams(curve).size;
  const r = raw.subarray(0, size);
  const s = raw.subarray(size);
  const ri = derInteger(r);
  const si = derInteger(s);
  // Each INTEGER is at most 49 content bytes (P-384), so its length is one octet; the SEQUENCE
  // body is at most 102 bytes: short form below 128, else 0x81 and one octet.
  const body = 2 + ri.len + 2 + si.len;
  const head = body < 0x80 ? 2 : 3;
  const out = Buffer.alloc(head + body);
  let at = 0;
  out[at++] = 0x30;
  if (head === 3) out[at++] = 0x81;
  out[at++] = body;
  for (const [m, i] of [[r, ri], [s, si]] as const) {
    out[at++] = 0x02;
    out[at++] = i.len;
    if (i.pad) out[at++] = 0;
    at += m.copy(out, at, i.from);
  }
  return out;
}

/** Reads a definite DER length at `at`; returns the length and where the content starts. */
function readLength(der: Buffer, at: number): { len: number; start: number } {
  const first = der[at];
  if (first === undefined) fail('truncated length');
  if (first < 0x80) return { len: first, start: at + 1 };
  // X.690 §8.1.3.5: 0x80 is the indefinite form, which DER forbids (§10.1).
  const count = first & 0x7f;
  if (count === 0) fail('indefinite length');
  if (count > 2) fail('length too long');
  if (at + 1 + count > der.length) fail('truncated length');
  let len = 0;
  for (let i = 0; i < count; i++) len = len * 256 + (der[at + 1 + i] as number);
  // DER lengths use the fewest octets: long form only for >= 128, no leading zero octet.
  if (len < 0x80 || (count === 2 && len <= 0xff)) fail('non-minimal length');
  return { len, start: at + 1 + count };
}

function readInteger(der: Buffer, at: number, p: CurveParams, name: string): { value: Buffer; next: number } {
  if (der[at] !== 0x02) fail(`${name} is not an INTEGER`);
  const { len, start } = readLength(der, at + 1);
  const end = start + len;
  if (len === 0) fail(`${name} is empty`);
  if (end > der.length) fail(`${name} is truncated`);
  const content = der.subarray(start, end);
  const b0 = content[0] as number;
  if (b0 & 0x80) fail(`${name} is negative`);
  if (b0 === 0 && content.length > 1 && !((content[1] as number) & 0x80)) fail(`${name} is not minimally encoded`);
  const magnitude = b0 === 0 ? content.subarray(1) : content;
  if (magnitude.length > p.size) fail(`${name} is too large for the curve`);
  const out = Buffer.alloc(p.size);
  magnitude.copy(out, p.size - magnitude.length);
  checkScalar(out, p, name);
  return { value: out, next: end };
}

/**
 * Parses a DER `ECDSA-Sig-Value` strictly and returns raw r‖s of the curve's fixed size.
 * Rejects BER variants (long or indefinite lengths where DER needs short ones, non-minimal or
 * negative INTEGERs), trailing bytes, and r/s that are zero, too large or not below n.
 * @throws CustosError ERR_SIGNATURE_FORMAT
 */
export function ecdsaDerToRaw(der: Buffer, curve: EcdsaCurve): Buffer {
  const p = curveParams(curve);
  if (!Buffer.isBuffer(der) || der.length < 8) fail('too short');
  if (der[0] !== 0x30) fail('not a SEQUENCE');
  const { len, start } = readLength(der, 1);
  if (start + len !== der.length) fail(start + len > der.length ? 'truncated SEQUENCE' : 'trailing bytes after the SEQUENCE');
  const r = readInteger(der, start, p, 'r');
  const s = readInteger(der, r.next, p, 's');
  if (s.next !== der.length) fail('extra data inside the SEQUENCE');
  return Buffer.concat([r.value, s.value]);
}
