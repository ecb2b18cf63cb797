/**
 * PCR selections as tpm2-tools write them (`sha256:0,1,2+sha1:0`) and the PCR value file
 * `tpm2_quote -o FILE -F values` / `tpm2_pcrread -o FILE -F values` produce: the digests
 * concatenated in selection order (banks in the order of the selection, indices ascending within
 * a bank), with no framing, so the file can only be split with the selection in hand.
 */
import { CustosError } from '../../lib/errors.js';
import { tpmAlg, tpmHashByNodeName } from '../../attestation/tpm2/algorithms.js';
import type { PcrBankSelection } from '../../attestation/tpm2/pcr-selection.js';

/** One bank of a PCR selection, by node hash name. */
export interface PcrBank {
  /** `sha1`, `sha256`, `sha384` or `sha512`. */
  readonly bank: string;
  /** Distinct PCR indices, ascending. */
  readonly indices: readonly number[];
}

/** PCR values as API.md sends them: bank → PCR index → lower-case hex. */
export type PcrHexValues = Record<string, Record<string, string>>;

// PC Client TPMs have 24 PCRs (TCG PC Client Platform TPM Profile, §4.6.1).
const MAX_PCR = 23;

function bad(message: string): never {
  throw new CustosError('ERR_BAD_REQUEST', message);
}

/**
 * Parses a tpm2-tools PCR list such as `sha256:0,1,2,3` or `sha1:0,7+sha256:0,7`.
 * @throws ERR_BAD_REQUEST for an unknown bank, an index outside 0–23, a duplicate bank or index,
 * or an empty bank.
 */
export function parsePcrList(text: string): PcrBank[] {
  if (typeof text !== 'string' || text.trim() === '') bad('the PCR list is empty');
  const banks: PcrBank[] = [];
  for (const part of text.split('+')) {
    const m = /^([a-z0-9_]+):([0-9,]+)$/.exec(part.trim());
    if (m === null) bad(`PCR list part "${part}" is not BANK:N,N,…`);
    const bank = m[1]!;
    if (tpmHashByNodeName(bank) === undefined) bad(`unknown PCR bank "${bank}"`);
    if (banks.some((b) => b.bank === bank)) bad(`PCR bank "${bank}" is listed twice`);
    const items = m[2]!.split(',');
    const indices: number[] = [];
    for (const item of items) {
      if (!/^\d{1,2}$/.test(item)) bad(`PCR index "${item}" is not a number from 0 to ${MAX_PCR}`);
      const n = Number(item);
      if (n > MAX_PCR) bad(`PCR index ${n} is above ${MAX_PCR}`);
      if (indices.includes(n)) bad(`PCR ${bank}:${n} is listed twice`);
      indices.push(n);
    }
    banks.push({ bank, indices: indices.sort((a, b) => a - b) });
  }
  return banks;
}

/** Formats a selection back into tpm2-tools syntax. */
export function formatPcrList(banks: readonly PcrBank[]): string {
  return banks.map((b) => `${b.bank}:${b.indices.join(',')}`).join('+');
}

/** Converts the selection a TPMS_ATTEST carries into banks by node hash name. */
export function banksOfSelection(selection: readonly PcrBankSelection[]): PcrBank[] {
  return selection.map((s) => {
    const info = tpmAlg(s.hashAlg, 'pcrSelect.hash');
    if (info.nodeHash === undefined) throw new CustosError('ERR_TPM_UNSUPPORTED_ALG', `PCR bank ${info.name} is not supported.`);
    return { bank: info.nodeHash, indices: [...s.indices] };
  });
}

/**
 * Splits the concatenated PCR values of a `-F values` file by digest size, in selection order.
 * @throws ERR_TPM_MARSHAL when the file is shorter or longer than the selection needs.
 */
export function splitPcrValues(selection: readonly PcrBank[], values: Buffer): PcrHexValues {
  const out: PcrHexValues = {};
  let off = 0;
  for (const { bank, indices } of selection) {
    const hash = tpmHashByNodeName(bank);
    if (hash === undefined) bad(`unknown PCR bank "${bank}"`);
    const entry: Record<string, string> = {};
    for (const i of indices) {
      if (off + hash.digestSize > values.length) {
        throw new CustosError('ERR_TPM_MARSHAL', `the PCR value file is too short for ${formatPcrList(selection)}`, { details: { field: 'pcrs', size: values.length } });
      }
      entry[String(i)] = values.subarray(off, off + hash.digestSize).toString('hex');
      off += hash.digestSize;
    }
    out[bank] = entry;
  }
  if (off !== values.length) {
    throw new CustosError('ERR_TPM_MARSHAL', `the PCR value file has ${values.length - off} bytes beyond ${formatPcrList(selection)}`, { details: { field: 'pcrs', size: values.length } });
  }
  return out;
}

/** True when both selections name the same PCRs of the same banks (order of banks ignored). */
export function sameSelection(a: readonly PcrBank[], b: readonly PcrBank[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((x) => {
    const y = b.find((z) => z.bank === x.bank);
    return y !== undefined && y.indices.length === x.indices.length && y.indices.every((v, i) => v === x.indices[i]);
  });
}
