/**
 * TPML_PCR_SELECTION / TPMS_PCR_SELECTION (TPM 2.0 Library Part 2, §10.6.2 and §10.9.7).
 * Hand-written: no maintained npm library parses TPM 2.0 structures.
 */
import { tpmAlg, tpmDigestSize } from './algorithms.js';
import type { CustosError } from '../../lib/errors.js';
import { TpmReader, TpmWriter, marshalError } from './reader.js';

/** One bank of a PCR selection: the hash algorithm and the selected PCR indices, ascending. */
export interface PcrBankSelection {
  /** TPM_ALG_ID of the bank. */
  readonly hashAlg: number;
  /** Selected PCR indices in ascending order (bit i of byte j = PCR 8j+i). */
  readonly indices: readonly number[];
  /** sizeofSelect as sent (bytes of the bitmap). */
  readonly sizeofSelect: number;
}

// Part 2, §10.6.2: PCR_SELECT_MAX bytes; a TPM with up to 256 PCRs would need 32. HASH_COUNT
// bounds the list; 16 is far above any TPM's number of banks.
const PCR_SELECT_MAX = 32;
const MAX_BANKS = 16;

/**
 * Reads a TPML_PCR_SELECTION.
 * @throws ERR_TPM_MARSHAL (count or sizes out of range, short data), ERR_TPM_UNSUPPORTED_ALG for
 * a bank that is not a known hash.
 */
export function readPcrSelection(r: TpmReader, field = 'pcrSelect'): PcrBankSelection[] {
  // Field names are built only for an error: this runs once per quote verification.
  const short = (at: string, n: number): CustosError => marshalError(at, `needs ${n} bytes, ${r.remaining} left`);
  if (r.remaining < 4) throw short(`${field}.count`, 4);
  const count = r.u32(field);
  if (count > MAX_BANKS) throw marshalError(`${field}.count`, `${count} banks`);
  const out: PcrBankSelection[] = [];
  for (let i = 0; i < count; i++) {
    if (r.remaining < 3) throw short(`${field}[${i}]`, 3);
    const hashAlg = r.u16(field);
    if (tpmDigestSize(hashAlg) === undefined) {
      tpmAlg(hashAlg, `${field}[${i}].hash`);
      throw marshalError(`${field}[${i}].hash`, 'not a hash algorithm');
    }
    const sizeofSelect = r.u8(field);
    if (sizeofSelect > PCR_SELECT_MAX) throw marshalError(`${field}[${i}].sizeofSelect`, `${sizeofSelect} bytes`);
    if (r.remaining < sizeofSelect) throw short(`${field}[${i}].pcrSelect`, sizeofSelect);
    const indices: number[] = [];
    for (let b = 0; b < sizeofSelect; b++) {
      const byte = r.u8(field);
      for (let bit = 0; bit < 8; bit++) if ((byte >> bit) & 1) indices.push(b * 8 + bit);
    }
    out.push({ hashAlg, indices, sizeofSelect });
  }
  return out;
}

/**
 * Parses a TPML_PCR_SELECTION that fills `bytes` exactly.
 * @throws ERR_TPM_MARSHAL, ERR_TPM_UNSUPPORTED_ALG.
 */
export function parsePcrSelection(bytes: Buffer): PcrBankSelection[] {
  const r = new TpmReader(bytes);
  const s = readPcrSelection(r);
  r.end('TPML_PCR_SELECTION');
  return s;
}

/** Marshals a TPML_PCR_SELECTION (sizeofSelect at least 3, as TPMs use for 24 PCRs). */
export function writePcrSelection(sel: ReadonlyArray<{ hashAlg: number; indices: readonly number[] }>): Buffer {
  const w = new TpmWriter().u32(sel.length);
  for (const s of sel) {
    const max = s.indices.reduce((a, b) => Math.max(a, b), 0);
    const size = Math.max(3, Math.floor(max / 8) + 1);
    const bitmap = Buffer.alloc(size);
    for (const i of s.indices) bitmap[i >> 3]! |= 1 << (i & 7);
    w.u16(s.hashAlg).u8(size).bytes(bitmap);
  }
  return w.toBuffer();
}
