/**
 * TPMS_ATTEST (TPM 2.0 Library Part 2, §10.12.12) with the quote (TPMS_QUOTE_INFO, §10.12.4) and
 * certify (TPMS_CERTIFY_INFO, §10.12.3) bodies parsed; the other attestation types keep their
 * body as raw bytes.
 * Hand-written: no maintained npm library parses TPM 2.0 structures.
 */
import { TpmReader } from './reader.js';
import { readPcrSelection, type PcrBankSelection } from './pcr-selection.js';

/** TPM_GENERATED_VALUE (Part 2, §6.2). */
export const TPM_GENERATED_VALUE = 0xff544347;

/** TPM_ST attestation structure tags (Part 2, §6.9). */
export const TPM_ST_ATTEST = {
  NV: 0x8014,
  COMMAND_AUDIT: 0x8015,
  SESSION_AUDIT: 0x8016,
  CERTIFY: 0x8017,
  QUOTE: 0x8018,
  TIME: 0x8019,
  CREATION: 0x801a,
  NV_DIGEST: 0x801c,
} as const;

/** TPMS_CLOCK_INFO. */
export interface ClockInfo {
  /** Milliseconds the TPM has been powered since its clock was last set. */
  readonly clock: bigint;
  readonly resetCount: number;
  readonly restartCount: number;
  readonly safe: boolean;
}

/** TPMS_QUOTE_INFO. */
export interface QuoteInfo {
  readonly kind: 'quote';
  readonly pcrSelect: PcrBankSelection[];
  readonly pcrDigest: Buffer;
}

/** TPMS_CERTIFY_INFO. */
export interface CertifyInfo {
  readonly kind: 'certify';
  readonly name: Buffer;
  readonly qualifiedName: Buffer;
}

/** A body custos does not interpret. */
export interface OtherAttestInfo {
  readonly kind: 'other';
  readonly raw: Buffer;
}

/** A parsed TPMS_ATTEST. */
export interface TpmsAttest {
  readonly magic: number;
  readonly type: number;
  readonly qualifiedSigner: Buffer;
  readonly extraData: Buffer;
  readonly clockInfo: ClockInfo;
  readonly firmwareVersion: bigint;
  readonly attested: QuoteInfo | CertifyInfo | OtherAttestInfo;
}

// sizeof(TPMU_NAME) = 2 + 64 (largest digest), sizeof(TPMU_HA) = 64.
const MAX_NAME = 66;
const MAX_DIGEST = 64;

/**
 * Parses TPMS_ATTEST bytes (what `tpm2_quote -m` writes). The magic and type are returned, not
 * judged, so a verifier can report them; the body is parsed for quote and certify.
 * @throws ERR_TPM_MARSHAL on short, over-long or inconsistent data (trailing bytes included);
 * ERR_TPM_UNSUPPORTED_ALG for a PCR bank that is not a known hash.
 */
export function parseTpmsAttest(bytes: Buffer): TpmsAttest {
  const r = new TpmReader(bytes);
  const magic = r.u32('magic');
  const type = r.u16('type');
  const qualifiedSigner = r.tpm2b('qualifiedSigner', MAX_NAME);
  const extraData = r.tpm2b('extraData', MAX_DIGEST);
  const clockInfo: ClockInfo = {
    clock: r.u64('clockInfo.clock'),
    resetCount: r.u32('clockInfo.resetCount'),
    restartCount: r.u32('clockInfo.restartCount'),
    safe: r.yesNo('clockInfo.safe'),
  };
  const firmwareVersion = r.u64('firmwareVersion');
  let attested: TpmsAttest['attested'];
  if (type === TPM_ST_ATTEST.QUOTE) {
    const pcrSelect = readPcrSelection(r, 'attested.quote.pcrSelect');
    const pcrDigest = r.tpm2b('attested.quote.pcrDigest', MAX_DIGEST);
    attested = { kind: 'quote', pcrSelect, pcrDigest };
  } else if (type === TPM_ST_ATTEST.CERTIFY) {
    attested = { kind: 'certify', name: r.tpm2b('attested.certify.name', MAX_NAME), qualifiedName: r.tpm2b('attested.certify.qualifiedName', MAX_NAME) };
  } else {
    attested = { kind: 'other', raw: r.bytes(r.remaining, 'attested') };
  }
  r.end('TPMS_ATTEST');
  return { magic, type, qualifiedSigner, extraData, clockInfo, firmwareVersion, attested };
}
