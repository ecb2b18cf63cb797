/**
 * TPM 2.0 quote verification (TPM2_Quote, Part 3 §18.4): a TPMS_ATTEST signed by a pinned AK,
 * checked against a nonce, a required PCR selection, the PCR values sent with it, optional
 * reference values and the counters of the last good quote. Every check has its own error code
 * and every failed check is reported, not only the first.
 *
 * Hand-written with node:crypto: no maintained npm library verifies TPM 2.0 quotes.
 */
import { KeyObject, hash as oneShotHash, timingSafeEqual, verify as cryptoVerify } from 'node:crypto';
import { CustosError, type ErrorCode } from '../lib/errors.js';
import { TPM_ALG, tpmAlg, tpmDigestSize, tpmHashByNodeName, type TpmHashInfo } from './tpm2/algorithms.js';
import { TPM_GENERATED_VALUE, TPM_ST_ATTEST, parseTpmsAttest, type TpmsAttest } from './tpm2/attest.js';
import type { PcrBankSelection } from './tpm2/pcr-selection.js';
import { parseTpmtSignature, toNodeVerify, type TpmtSignature } from './tpm2/signature.js';
import { tpmPublicToKeyObject, type TpmtPublic } from './tpm2/public.js';
import type { AkPublic } from './ak.js';

/** PCR values by bank (`sha1`, `sha256`, `sha384`, `sha512`) and PCR index. */
export type PcrValues = Readonly<Record<string, Readonly<Record<string | number, Buffer>>>>;

/** The per-AK counters of the last quote that verified. */
export interface QuoteCounters {
  readonly clock: bigint;
  readonly resetCount: number;
  readonly restartCount: number;
  /** TPMS_ATTEST firmwareVersion: the TPM's firmware, which an update raises (absent in records older than the check). */
  readonly firmwareVersion?: bigint;
}

/** Input of {@link verifyQuote}. */
export interface VerifyQuoteInput {
  /**
   * The enrolled AK: from checkAkPublic (its KeyObject is reused), a parsed TPMT_PUBLIC, or a
   * bare public KeyObject (e.g. from PEM; the signer check then needs expectedQualifiedSigner to
   * compare names, else it only checks the qualifiedSigner is a well-formed Name).
   */
  readonly akPublic: AkPublic | TpmtPublic | KeyObject;
  /** A pre-built public key for the AK; overrides the one in `akPublic`. */
  readonly akKey?: KeyObject;
  /** TPMS_ATTEST bytes (`tpm2_quote -m`). */
  readonly quote: Buffer;
  /** TPMT_SIGNATURE bytes (`tpm2_quote -s`). */
  readonly signature: Buffer;
  /** PCR values sent with the quote. */
  readonly pcrs: PcrValues;
  /** The nonce (or nonce-derived value) the quote's extraData must equal. */
  readonly expectedExtraData: Buffer;
  /** The quote must cover exactly these PCRs of this bank, nothing more. */
  readonly requiredSelection: { readonly bank: string; readonly indices: readonly number[] };
  /** Allowed values per PCR index of the required bank (several allowed per PCR). */
  readonly referenceValues?: Readonly<Record<string | number, readonly Buffer[]>>;
  /** Counters of the last good quote by this AK. */
  readonly previous?: QuoteCounters;
  /** qualifiedSigner recorded at enrollment (see akQualifiedNameUnderEk). */
  readonly expectedQualifiedSigner?: Buffer;
  /** Accept SHA-1 signatures and SHA-1 PCR banks (default false). */
  readonly allowSha1?: boolean;
}

/** Names of the individual checks, in the order they are reported. */
export type QuoteCheckName =
  | 'magic'
  | 'type'
  | 'hashAlg'
  | 'signature'
  | 'signer'
  | 'nonce'
  | 'pcrSelection'
  | 'pcrDigest'
  | 'pcrPolicy'
  | 'clock'
  | 'safe';

/** One check's outcome. */
export interface QuoteCheck {
  readonly name: QuoteCheckName;
  readonly ok: boolean;
  /** Error code the check fails with. */
  readonly code: ErrorCode;
  /** Why it failed, or what was checked (never secret). */
  readonly detail?: string;
  /** false when the check did not apply (e.g. no reference values given). */
  readonly applied: boolean;
}

/** A failed check. */
export interface QuoteFailure {
  readonly code: ErrorCode;
  readonly detail: string;
}

/** The parsed, public facts of the quote. */
export interface ParsedQuote extends Pick<TpmsAttest, 'magic' | 'type' | 'qualifiedSigner' | 'extraData' | 'clockInfo' | 'firmwareVersion'> {
  readonly pcrDigest: Buffer;
  /** Quoted selection: bank (node hash name or TPM alg name) and indices. */
  readonly selection: ReadonlyArray<{ readonly bank: string; readonly indices: readonly number[] }>;
  /** Signature scheme (RSASSA, RSAPSS, ECDSA) and hash. */
  readonly signatureAlg: string;
  readonly signatureHash: string;
  /** Counters to store as `previous` once the quote is accepted. */
  readonly counters: QuoteCounters;
}

/** Result of {@link verifyQuote}. */
export interface QuoteVerdict {
  readonly ok: boolean;
  readonly failures: readonly QuoteFailure[];
  readonly checks: readonly QuoteCheck[];
  readonly parsed: ParsedQuote;
}

// Bank name and digest size per TPM hash id, from the constant algorithm table.
const banks = new Map<number, { readonly bank: string; readonly size: number }>();
function bankOf(hashAlg: number): { readonly bank: string; readonly size: number } {
  let b = banks.get(hashAlg);
  if (b === undefined) {
    b = { bank: bankName(hashAlg), size: tpmAlg(hashAlg).digestSize! };
    banks.set(hashAlg, b);
  }
  return b;
}

function bankName(hashAlg: number): string {
  const info = tpmAlg(hashAlg);
  return info.nodeHash ?? info.name.toLowerCase();
}

// Bank name → hash row, memoized: tpmHashByNodeName scans the algorithm table on every call and
// verifyQuote asks once per quote (a few µs of a ~20 µs RSA verification). The table is constant.
const hashByBank = new Map<string, TpmHashInfo | undefined>();
function hashOfBank(bank: string): TpmHashInfo | undefined {
  if (!hashByBank.has(bank)) hashByBank.set(bank, tpmHashByNodeName(bank));
  return hashByBank.get(bank);
}

const CHECK_CODES: Readonly<Record<QuoteCheckName, ErrorCode>> = {
  magic: 'ERR_QUOTE_MAGIC',
  type: 'ERR_QUOTE_TYPE',
  hashAlg: 'ERR_QUOTE_HASH_ALG',
  signature: 'ERR_QUOTE_SIGNATURE',
  signer: 'ERR_QUOTE_SIGNER',
  nonce: 'ERR_QUOTE_NONCE_MISMATCH',
  pcrSelection: 'ERR_QUOTE_PCR_SELECTION',
  pcrDigest: 'ERR_QUOTE_PCR_DIGEST',
  pcrPolicy: 'ERR_QUOTE_PCR_POLICY',
  clock: 'ERR_QUOTE_CLOCK_ROLLBACK',
  safe: 'ERR_QUOTE_NOT_SAFE',
};

// A passed check is the same value every time: one frozen object per check name.
const PASS = Object.fromEntries(
  (Object.keys(CHECK_CODES) as QuoteCheckName[]).map((name) => [name, Object.freeze({ name, code: CHECK_CODES[name], ok: true, applied: true })]),
) as Readonly<Record<QuoteCheckName, QuoteCheck>>;

// Checks that pass because they do not apply to this call.
const NOT_APPLIED = {
  pcrPolicy: Object.freeze({ name: 'pcrPolicy', code: CHECK_CODES.pcrPolicy, ok: true, applied: false, detail: 'no reference values' }),
  clock: Object.freeze({ name: 'clock', code: CHECK_CODES.clock, ok: true, applied: false, detail: 'no previous quote' }),
} as const satisfies Record<string, QuoteCheck>;

const NO_FAILURES: readonly QuoteFailure[] = Object.freeze([]);
// The four all-passed check lists, by whether reference values (2) and a previous quote (1) applied.
const ALL_PASSED: (readonly QuoteCheck[])[] = [];
function allPassed(pcrPolicy: QuoteCheck, clock: QuoteCheck): readonly QuoteCheck[] {
  const i = (pcrPolicy.applied ? 2 : 0) + (clock.applied ? 1 : 0);
  return (ALL_PASSED[i] ??= Object.freeze([PASS.magic, PASS.type, PASS.hashAlg, PASS.signature, PASS.signer, PASS.nonce, PASS.pcrSelection, PASS.pcrDigest, pcrPolicy, clock, PASS.safe]));
}

function fail(name: QuoteCheckName, detail: string): QuoteCheck {
  return { name, code: CHECK_CODES[name], ok: false, applied: true, detail };
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function isAkPublic(v: AkPublic | TpmtPublic | KeyObject): v is AkPublic {
  return (v as AkPublic).key !== undefined && (v as AkPublic).public !== undefined;
}

function isKeyObject(v: AkPublic | TpmtPublic | KeyObject): v is KeyObject {
  return v instanceof KeyObject;
}

// The required selection usually comes from a loaded policy, the same array on every call.
const sortedCache = new WeakMap<readonly number[], readonly number[]>();
function sortedIndices(indices: readonly number[]): readonly number[] {
  let v = sortedCache.get(indices);
  if (v === undefined) {
    v = [...new Set(indices)].sort((a, b) => a - b);
    sortedCache.set(indices, v);
  }
  return v;
}

function sameIndices(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A PCR's value in one bank's values, keyed by number or by decimal string. */
function pcrValue(bank: PcrValues[string] | undefined, index: number): Buffer | undefined {
  return bank === undefined ? undefined : (bank[index] ?? bank[String(index)]);
}

/**
 * Verifies a quote. Checks, each with its own code:
 * magic = TPM_GENERATED_VALUE (ERR_QUOTE_MAGIC); type = TPM_ST_ATTEST_QUOTE (ERR_QUOTE_TYPE);
 * no SHA-1 signature or PCR bank unless allowed (ERR_QUOTE_HASH_ALG); signature valid with the AK
 * (ERR_QUOTE_SIGNATURE); qualifiedSigner equal to the enrolled one when given, else of the AK's
 * nameAlg and size — the valid signature by the pinned AK is what binds the quote to the AK
 * (ERR_QUOTE_SIGNER); extraData equal to `expectedExtraData` in constant time
 * (ERR_QUOTE_NONCE_MISMATCH); selection exactly the required one (ERR_QUOTE_PCR_SELECTION);
 * pcrDigest = H_sigHash(values in selection order) (ERR_QUOTE_PCR_DIGEST); each referenced PCR
 * among its reference values (ERR_QUOTE_PCR_POLICY, detail names the PCR); counters and firmware
 * version not behind `previous` (ERR_QUOTE_CLOCK_ROLLBACK); clockInfo.safe set (ERR_QUOTE_NOT_SAFE).
 *
 * @returns the verdict; `ok` only when every check passed.
 * @throws ERR_TPM_MARSHAL / ERR_TPM_UNSUPPORTED_ALG when the quote or signature does not parse;
 * ERR_BAD_REQUEST for an unknown required bank.
 */
export function verifyQuote(input: VerifyQuoteInput): QuoteVerdict {
  const attest: TpmsAttest = parseTpmsAttest(input.quote);
  const sig: TpmtSignature = parseTpmtSignature(input.signature);
  const ak = input.akPublic;
  const akPub: TpmtPublic | undefined = isAkPublic(ak) ? ak.public : isKeyObject(ak) ? undefined : ak;
  const key = input.akKey ?? (isAkPublic(ak) ? ak.key : isKeyObject(ak) ? ak : tpmPublicToKeyObject(ak));
  const reqHash: TpmHashInfo | undefined = hashOfBank(input.requiredSelection.bank);
  if (reqHash === undefined) throw new CustosError('ERR_BAD_REQUEST', 'Unknown PCR bank in the required selection.', { details: { bank: input.requiredSelection.bank } });
  const reqBank = reqHash.nodeHash;

  // Each check yields the shared PASS object when it passed, else a failure with its detail.
  // This runs once per attestation on the hot path; the checks allocate only when they fail.
  const magic = attest.magic === TPM_GENERATED_VALUE ? PASS.magic : fail('magic', `magic 0x${attest.magic.toString(16)}`);
  const quoteInfo = attest.attested.kind === 'quote' ? attest.attested : undefined;
  const isQuote = attest.type === TPM_ST_ATTEST.QUOTE && quoteInfo !== undefined;
  const type = isQuote ? PASS.type : fail('type', `type 0x${attest.type.toString(16)}`);

  const pcrSelect = quoteInfo?.pcrSelect ?? [];
  const selection: Array<{ bank: string; indices: readonly number[] }> = [];
  // The one non-empty bank of the quote (a second one fails the selection check).
  let quoted: { bank: string; indices: readonly number[] } | undefined;
  let nonEmptyBanks = 0;
  for (const s of pcrSelect) {
    const sel = { bank: bankName(s.hashAlg), indices: s.indices };
    selection.push(sel);
    if (s.indices.length > 0) {
      nonEmptyBanks++;
      quoted ??= sel;
    }
  }

  // SHA-1 is collision-broken: neither the signature nor the quoted bank may use it by default.
  const sha1Sig = sig.hash.id === TPM_ALG.SHA1;
  const sha1Bank = reqHash.id === TPM_ALG.SHA1 || (quoted !== undefined && selection.some((s) => s.bank === 'sha1' && s.indices.length > 0));
  const hashAlg =
    input.allowSha1 === true || (!sha1Sig && !sha1Bank)
      ? PASS.hashAlg
      : fail('hashAlg', `SHA-1 used for ${[sha1Sig ? 'signature' : '', sha1Bank ? 'pcr bank' : ''].filter(Boolean).join(' and ')}`);

  const args = toNodeVerify(sig, key);
  let sigOk = false;
  if (args !== undefined) {
    try {
      sigOk = cryptoVerify(args.algorithm, input.quote, args.key, args.signature);
    } catch {
      sigOk = false;
    }
  }
  // The AK's own scheme is the only one its TPM signs with (a restricted key); a signature made
  // otherwise is not the TPM's, whatever the key says.
  const schemeFits = akPub === undefined || akPub.scheme.scheme === TPM_ALG.NULL || (akPub.scheme.scheme === sig.sigAlg && akPub.scheme.hashAlg === sig.hash.id);
  const signature = sigOk && schemeFits
    ? PASS.signature
    : fail('signature', args === undefined || !schemeFits ? "signature scheme or hash is not the AK's" : 'signature does not verify with the AK');

  let signer: QuoteCheck;
  if (input.expectedQualifiedSigner !== undefined) {
    signer = safeEqual(attest.qualifiedSigner, input.expectedQualifiedSigner) ? PASS.signer : fail('signer', 'qualifiedSigner differs from the enrolled one');
  } else {
    // Without an enrolled qualified name the signature is the binding; the qualifiedSigner must
    // still be a qualified name of the AK's nameAlg (Part 1, §16: QN uses the object's nameAlg).
    const qs = attest.qualifiedSigner;
    const alg = qs.length >= 2 ? qs.readUInt16BE(0) : -1;
    const ok = akPub !== undefined ? qs.length === 2 + akPub.nameAlg.digestSize && alg === akPub.nameAlg.id : qs.length >= 2 && qs.length === 2 + (tpmDigestSize(alg) ?? -2);
    signer = ok ? PASS.signer : fail('signer', 'qualifiedSigner is not a qualified name of the AK nameAlg');
  }

  const nonce = safeEqual(attest.extraData, input.expectedExtraData) ? PASS.nonce : fail('nonce', 'extraData does not match');

  const required = sortedIndices(input.requiredSelection.indices);
  const selOk =
    isQuote &&
    nonEmptyBanks === 1 &&
    quoted!.bank === reqBank &&
    sameIndices(quoted!.indices, required);
  const pcrSelection = selOk
    ? PASS.pcrSelection
    : fail(
        'pcrSelection',
        `quoted ${
          selection
            .filter((s) => s.indices.length > 0)
            .map((s) => `${s.bank}:${s.indices.join(',')}`)
            .join('+') || 'nothing'
        }, required ${reqBank}:${required.join(',')}`,
      );

  // Part 3, §18.4: pcrDigest is computed with the hash of the signing scheme over the selected
  // PCR values, bank by bank in selection order, PCRs ascending within a bank.
  let pcrDigest: QuoteCheck;
  if (quoteInfo !== undefined) {
    const match = pcrDigestMatches(sig.hash, pcrSelect, input.pcrs, quoteInfo.pcrDigest);
    pcrDigest = match === true ? PASS.pcrDigest : fail('pcrDigest', match === false ? 'PCR values do not hash to the quoted digest' : match.missing);
  } else {
    pcrDigest = fail('pcrDigest', 'not a quote: no PCR digest');
  }

  let pcrPolicy: QuoteCheck;
  if (input.referenceValues !== undefined) {
    const bad: string[] = [];
    const quotedIdx = new Set(selection.find((s) => s.bank === reqBank && s.indices.length > 0)?.indices ?? []);
    const idxs = Object.keys(input.referenceValues).map(Number).sort((a, b) => a - b);
    for (const i of idxs) {
      const allowed = input.referenceValues[i] ?? input.referenceValues[String(i)] ?? [];
      const v = pcrValue(input.pcrs[reqBank], i);
      if (!quotedIdx.has(i) || v === undefined || !allowed.some((a) => safeEqual(a, v))) bad.push(`${reqBank}:${i}`);
    }
    pcrPolicy = bad.length === 0 ? PASS.pcrPolicy : fail('pcrPolicy', `PCR ${bad.join(', ')} not among the reference values`);
  } else {
    pcrPolicy = NOT_APPLIED.pcrPolicy;
  }

  const c = attest.clockInfo;
  let clock: QuoteCheck;
  if (input.previous !== undefined) {
    const p = input.previous;
    let why: string | undefined;
    // Part 1, §36.6–36.7: resetCount only grows; restartCount only grows until the next reset;
    // Clock only grows while resetCount stays the same.
    if (c.resetCount < p.resetCount) why = `resetCount ${c.resetCount} < ${p.resetCount}`;
    else if (c.resetCount === p.resetCount && c.restartCount < p.restartCount) why = `restartCount ${c.restartCount} < ${p.restartCount}`;
    else if (c.resetCount === p.resetCount && c.clock < p.clock) why = `clock ${c.clock} < ${p.clock}`;
    // A firmware older than the last good quote's: the TPM was rolled back to firmware that may
    // carry flaws since fixed (TPM-FAIL, ROCA-class key generation). firmwareVersion is
    // vendor-defined, but updates raise it.
    else if (p.firmwareVersion !== undefined && attest.firmwareVersion < p.firmwareVersion) why = `firmwareVersion 0x${attest.firmwareVersion.toString(16)} < 0x${p.firmwareVersion.toString(16)} (firmware rolled back)`;
    clock = why === undefined ? PASS.clock : fail('clock', why);
  } else {
    clock = NOT_APPLIED.clock;
  }
  const safe = c.safe ? PASS.safe : fail('safe', 'clockInfo.safe is NO');

  let checks: readonly QuoteCheck[];
  let failures: readonly QuoteFailure[];
  if (
    magic === PASS.magic && type === PASS.type && hashAlg === PASS.hashAlg && signature === PASS.signature && signer === PASS.signer && nonce === PASS.nonce &&
    pcrSelection === PASS.pcrSelection && pcrDigest === PASS.pcrDigest && safe === PASS.safe &&
    (pcrPolicy === PASS.pcrPolicy || pcrPolicy === NOT_APPLIED.pcrPolicy) && (clock === PASS.clock || clock === NOT_APPLIED.clock)
  ) {
    // Everything passed: the list is one of four shared, frozen ones (reference values and a
    // previous quote each applied or not), and there is nothing to list as failed.
    checks = allPassed(pcrPolicy, clock);
    failures = NO_FAILURES;
  } else {
    checks = [magic, type, hashAlg, signature, signer, nonce, pcrSelection, pcrDigest, pcrPolicy, clock, safe];
    const f: QuoteFailure[] = [];
    for (const x of checks) if (!x.ok) f.push({ code: x.code, detail: x.detail ?? x.name });
    failures = f;
  }
  return {
    ok: failures.length === 0,
    failures,
    checks,
    parsed: {
      magic: attest.magic,
      type: attest.type,
      qualifiedSigner: attest.qualifiedSigner,
      extraData: attest.extraData,
      clockInfo: c,
      firmwareVersion: attest.firmwareVersion,
      pcrDigest: quoteInfo?.pcrDigest ?? Buffer.alloc(0),
      selection,
      signatureAlg: tpmAlg(sig.sigAlg).name,
      signatureHash: sig.hash.nodeHash,
      counters: { clock: c.clock, resetCount: c.resetCount, restartCount: c.restartCount, firmwareVersion: attest.firmwareVersion },
    },
  };
}

// Values of a quote's PCR selection are copied here to be hashed in one crypto.hash call: the
// same digest as an incremental hash over them in selection order, without a Hash object or a
// Buffer.concat per quote. 4 KiB covers 64 SHA-512 values; a larger selection uses its own buffer.
const scratch = Buffer.allocUnsafeSlow(4096);

// Digests already computed, by quoted digest: a host quotes the same PCR values again and again
// (they change only when it reboots into something else), so comparing the gathered values with
// the bytes that were hashed to this digest before replaces the hash. Sound because an entry is
// only ever added after hashing its own bytes; an attacker sending other values only misses.
// Entries are bucketed by the digest's first four bytes (a digest's bytes are uniform) and found
// by comparing whole digests. Bounded (oldest bucket dropped first): at most DIGEST_MEMO_MAX
// buckets, in practice one entry each; worst case about 1024 × 4 KiB.
const DIGEST_MEMO_MAX = 1024;
interface MemoEntry {
  readonly hash: string;
  readonly digest: Buffer;
  readonly preimage: Buffer;
}
const digestMemo = new Map<number, MemoEntry[]>();

function memoFind(hash: string, quoted: Buffer, values: Buffer): boolean {
  const bucket = digestMemo.get(quoted.readUInt32LE(0));
  if (bucket === undefined) return false;
  for (const e of bucket) if (e.hash === hash && e.digest.equals(quoted)) return e.preimage.equals(values);
  return false;
}

function memoAdd(hash: string, quoted: Buffer, values: Buffer): void {
  const k = quoted.readUInt32LE(0);
  let bucket = digestMemo.get(k);
  if (bucket === undefined) {
    if (digestMemo.size >= DIGEST_MEMO_MAX) digestMemo.delete(digestMemo.keys().next().value!);
    bucket = [];
    digestMemo.set(k, bucket);
  }
  // One entry per (hash, digest): a digest found again with other values was not hashed from them.
  const entry = { hash, digest: Buffer.from(quoted), preimage: Buffer.from(values) };
  const i = bucket.findIndex((e) => e.hash === hash && e.digest.equals(quoted));
  if (i >= 0) bucket[i] = entry;
  else if (bucket.length < 4) bucket.push(entry);
  else bucket[0] = entry;
}

/**
 * Whether the PCR values of the selection hash (with `h`) to `quoted`, or which value is missing
 * or has the wrong size.
 */
function pcrDigestMatches(h: TpmHashInfo, pcrSelect: readonly PcrBankSelection[], pcrs: PcrValues, quoted: Buffer): boolean | { missing: string } {
  let total = 0;
  for (const s of pcrSelect) total += s.indices.length * tpmAlg(s.hashAlg).digestSize!;
  const out = total <= scratch.length ? scratch : Buffer.alloc(total);
  let off = 0;
  for (const s of pcrSelect) {
    if (s.indices.length === 0) continue;
    const { bank, size } = bankOf(s.hashAlg);
    const values = pcrs[bank];
    for (const i of s.indices) {
      const v = pcrValue(values, i);
      if (v === undefined || v.length !== size) return { missing: `${bank}:${i} ${v === undefined ? 'missing' : 'has the wrong size'}` };
      out.set(v, off);
      off += size;
    }
  }
  if (quoted.length !== h.digestSize) return false;
  // The digest is public (it is inside the signed quote): plain comparisons are enough.
  const values = out.subarray(0, off);
  if (memoFind(h.nodeHash, quoted, values)) return true;
  // Binary (latin1) strings: crypto.hash with a string output is ~3.5× faster than 'buffer' on Node 20.
  if (oneShotHash(h.nodeHash, values, 'binary') !== quoted.toString('binary')) return false;
  memoAdd(h.nodeHash, quoted, values);
  return true;
}
