/**
 * A software stand-in for a TPM's attestation key, for tests and the benchmark only (never
 * imported from src/): it produces TPM2B_PUBLIC, TPMS_ATTEST quote and TPMT_SIGNATURE bytes in
 * the wire forms custos accepts from a real TPM, so quotes can be made in-process at rates swtpm
 * cannot reach.
 *
 * Hand-written TPM 2.0 marshalling (Part 2 §12.2.4 TPMT_PUBLIC, §10.12.8 TPMS_ATTEST, §11.3.4
 * TPMT_SIGNATURE): no maintained library produces these structures.
 */
import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { TPM_ALG, tpmHash } from '../../src/attestation/tpm2/algorithms.js';
import { objectName, parseTpm2bPublic } from '../../src/attestation/tpm2/public.js';
import { writeTpmtSignature } from '../../src/attestation/tpm2/signature.js';

const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const tpm2b = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);

/** fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign */
export const SOFT_AK_ATTRIBUTES = 0x00050072;
/** TPM_GENERATED_VALUE (Part 2 §6.2). */
const TPM_GENERATED = 0xff544347;
/** TPM_ST_ATTEST_QUOTE (Part 2 §6.9). */
const TPM_ST_ATTEST_QUOTE = 0x8018;
const SHA256 = tpmHash(TPM_ALG.SHA256);

export type SoftAkKind = 'ecc' | 'rsa';

/** A quote as the HTTP API takes it (base64 quote and signature, hex PCR values). */
export interface SoftQuote {
  quote: string;
  signature: string;
  pcrs: { sha256: Record<string, string> };
}

/** A software AK: ECC P-256 (ECDSA-SHA256) or RSA-2048 (RSASSA-SHA256), restricted signing key. */
export class SoftAk {
  readonly kind: SoftAkKind;
  readonly privateKey: KeyObject;
  readonly tpm2bPublic: Buffer;
  readonly name: Buffer;
  /** qualifiedSigner reported in quotes: stands for H(H(parent) ‖ Name), fixed per AK. */
  readonly qualifiedName: Buffer;
  #clock = 1000n;

  constructor(kind: SoftAkKind = 'ecc') {
    this.kind = kind;
    let tpmtPublic: Buffer;
    if (kind === 'ecc') {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      this.privateKey = privateKey;
      const jwk = publicKey.export({ format: 'jwk' });
      tpmtPublic = Buffer.concat([
        u16(TPM_ALG.ECC), u16(TPM_ALG.SHA256), u32(SOFT_AK_ATTRIBUTES), tpm2b(Buffer.alloc(0)),
        // symmetric NULL, scheme ECDSA-SHA256, curve NIST P-256 (0x0003), kdf NULL
        u16(TPM_ALG.NULL), u16(TPM_ALG.ECDSA), u16(TPM_ALG.SHA256), u16(0x0003), u16(TPM_ALG.NULL),
        tpm2b(Buffer.from(jwk.x!, 'base64url')), tpm2b(Buffer.from(jwk.y!, 'base64url')),
      ]);
    } else {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 65537 });
      this.privateKey = privateKey;
      const jwk = publicKey.export({ format: 'jwk' });
      tpmtPublic = Buffer.concat([
        u16(TPM_ALG.RSA), u16(TPM_ALG.SHA256), u32(SOFT_AK_ATTRIBUTES), tpm2b(Buffer.alloc(0)),
        // symmetric NULL, scheme RSASSA-SHA256, 2048 bits, exponent 0 (= 65537)
        u16(TPM_ALG.NULL), u16(TPM_ALG.RSASSA), u16(TPM_ALG.SHA256), u16(2048), u32(0),
        tpm2b(Buffer.from(jwk.n!, 'base64url')),
      ]);
    }
    this.tpm2bPublic = tpm2b(tpmtPublic);
    this.name = objectName(parseTpm2bPublic(this.tpm2bPublic));
    this.qualifiedName = Buffer.concat([u16(TPM_ALG.SHA256), createHash('sha256').update('soft-ek').update(this.name).digest()]);
  }

  /** Moves the clock forward to `to` (never back): quotes made elsewhere with this AK's key went that far. */
  advanceClock(to: bigint): void {
    if (to > this.#clock) this.#clock = to;
  }

  /** A TPM2_Quote over PCRs 0..n-1 of the SHA-256 bank with the given values (n ≤ 8). */
  quote(extraData: Buffer, pcrs: readonly Buffer[]): SoftQuote {
    this.#clock += 10n;
    // TPMS_CLOCK_INFO: clock, resetCount, restartCount, safe; then firmwareVersion (UINT64).
    const clockInfo = Buffer.alloc(17 + 8);
    clockInfo.writeBigUInt64BE(this.#clock, 0);
    clockInfo.writeUInt32BE(1, 8);
    clockInfo.writeUInt32BE(0, 12);
    clockInfo.writeUInt8(1, 16);
    let bitmap = 0;
    for (let i = 0; i < pcrs.length; i++) bitmap |= 1 << i;
    const selection = Buffer.concat([u32(1), u16(TPM_ALG.SHA256), Buffer.from([3, bitmap, 0, 0])]);
    const digest = createHash('sha256').update(Buffer.concat(pcrs as Buffer[])).digest();
    const quote = Buffer.concat([u32(TPM_GENERATED), u16(TPM_ST_ATTEST_QUOTE), tpm2b(this.qualifiedName), tpm2b(extraData), clockInfo, selection, tpm2b(digest)]);
    let signature: Buffer;
    if (this.kind === 'ecc') {
      const raw = sign('sha256', quote, { key: this.privateKey, dsaEncoding: 'ieee-p1363' });
      signature = writeTpmtSignature({ sigAlg: TPM_ALG.ECDSA, hash: SHA256, r: raw.subarray(0, 32), s: raw.subarray(32) });
    } else {
      signature = writeTpmtSignature({ sigAlg: TPM_ALG.RSASSA, hash: SHA256, sig: sign('sha256', quote, this.privateKey) });
    }
    return {
      quote: quote.toString('base64'),
      signature: signature.toString('base64'),
      pcrs: { sha256: Object.fromEntries(pcrs.map((p, i) => [String(i), p.toString('hex')])) },
    };
  }
}
