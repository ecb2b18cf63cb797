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
  readonly failures: QuoteFailure[];
  readonly checks: QuoteCheck[];
  readonly parsed: ParsedQuote;
}

// Algorithm rows by id, memoized for the same reason (tpmAlg builds a fresh row per call); an id
// tpmAlg refuses is not cached, so it throws the same error every time.
const algById = new Map<number, ReturnType<typeof tpmAlg>>();
function alg(id: number): ReturnType<typeof tpmAlg> {
  let info = algById.get(id);
  if (info === undefined) {
    info = tpmAlg(id);
    algById.set(id, info);
  }
  return info;
}

function bankName(hashAlg: number): string {
  const info = alg(hashAlg);
  return info.nodeHash ?? info.name.toLowerCase();
}

// Bank name → hash row, memoized: tpmHashByNodeName scans the algorithm table on every call and
// verifyQuote asks once per quote (a few µs of a ~20 µs RSA verification). The table is constant.
const hashByBank = new Map<string, TpmHashInfo | undefined>();
function hashOfBank(bank: string): TpmHashInfo | undefined {
  if (!hashByBank.has(bank)) hashByBank.set(bank, tpmHashByNodeName(bank));
  return hashByBank.get(bank);
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

function pcrValue(pcrs: PcrValues, bank: string, index: number): Buffer | undefined {
  const b = pcrs[bank];
  if (b === undefined) return undefined;
  return b[index] ?? b[String(index)];
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
 * among its reference values (ERR_QUOTE_PCR_POLICY, detail names the PCR); counters not behind
 * `previous` (ERR_QUOTE_CLOCK_ROLLBACK); clockInfo.safe set (ERR_QUOTE_NOT_SAFE).
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

  const checks: QuoteCheck[] = [];
  const add = (name: QuoteCheckName, code: ErrorCode, ok: boolean, detail?: string, applied = true): void => {
    // Two literal shapes rather than a spread: the same objects, built without a temporary.
    checks.push(detail === undefined ? { name, code, ok, applied } : { name, code, ok, applied, detail });
  };

  add('magic', 'ERR_QUOTE_MAGIC', attest.magic === TPM_GENERATED_VALUE, attest.magic === TPM_GENERATED_VALUE ? undefined : `magic 0x${attest.magic.toString(16)}`);
  const isQuote = attest.type === TPM_ST_ATTEST.QUOTE && attest.attested.kind === 'quote';
  add('type', 'ERR_QUOTE_TYPE', isQuote, isQuote ? undefined : `type 0x${attest.type.toString(16)}`);

  const quoteInfo = attest.attested.kind === 'quote' ? attest.attested : undefined;
  const selection = (quoteInfo?.pcrSelect ?? []).map((s) => ({ bank: bankName(s.hashAlg), indices: s.indices }));

  // SHA-1 is collision-broken: neither the signature nor the quoted bank may use it by default.
  const sha1Uses: string[] = [];
  if (sig.hash.id === TPM_ALG.SHA1) sha1Uses.push('signature');
  if (selection.some((s) => s.bank === 'sha1' && s.indices.length > 0) || reqHash.id === TPM_ALG.SHA1) sha1Uses.push('pcr bank');
  const sha1Ok = input.allowSha1 === true || sha1Uses.length === 0;
  add('hashAlg', 'ERR_QUOTE_HASH_ALG', sha1Ok, sha1Ok ? undefined : `SHA-1 used for ${sha1Uses.join(' and ')}`);

  const args = toNodeVerify(sig, key);
  let sigOk = false;
  if (args !== undefined) {
    try {
      sigOk = cryptoVerify(args.algorithm, input.quote, args.key, args.signature);
    } catch {
      sigOk = false;
    }
  }
  add('signature', 'ERR_QUOTE_SIGNATURE', sigOk, sigOk ? undefined : args === undefined ? 'signature scheme does not fit the AK' : 'signature does not verify with the AK');

  if (input.expectedQualifiedSigner !== undefined) {
    const ok = safeEqual(attest.qualifiedSigner, input.expectedQualifiedSigner);
    add('signer', 'ERR_QUOTE_SIGNER', ok, ok ? undefined : 'qualifiedSigner differs from the enrolled one');
  } else {
    // Without an enrolled qualified name the signature is the binding; the qualifiedSigner must
    // still be a qualified name of the AK's nameAlg (Part 1, §16: QN uses the object's nameAlg).
    const qs = attest.qualifiedSigner;
    const alg = qs.length >= 2 ? qs.readUInt16BE(0) : -1;
    const ok = akPub !== undefined ? qs.length === 2 + akPub.nameAlg.digestSize && alg === akPub.nameAlg.id : qs.length >= 2 && qs.length === 2 + (tpmDigestSize(alg) ?? -2);
    add('signer', 'ERR_QUOTE_SIGNER', ok, ok ? undefined : 'qualifiedSigner is not a qualified name of the AK nameAlg');
  }

  const nonceOk = safeEqual(attest.extraData, input.expectedExtraData);
  add('nonce', 'ERR_QUOTE_NONCE_MISMATCH', nonceOk, nonceOk ? undefined : 'extraData does not match');

  const required = sortedIndices(input.requiredSelection.indices);
  const nonEmpty = selection.filter((s) => s.indices.length > 0);
  const selOk =
    isQuote &&
    nonEmpty.length === 1 &&
    nonEmpty[0]!.bank === reqBank &&
    nonEmpty[0]!.indices.length === required.length &&
    nonEmpty[0]!.indices.every((v, i) => v === required[i]);
  add(
    'pcrSelection',
    'ERR_QUOTE_PCR_SELECTION',
    selOk,
    selOk ? undefined : `quoted ${nonEmpty.map((s) => `${s.bank}:${s.indices.join(',')}`).join('+') || 'nothing'}, required ${reqBank}:${required.join(',')}`,
  );

  // Part 3, §18.4: pcrDigest is computed with the hash of the signing scheme over the selected
  // PCR values, bank by bank in selection order, PCRs ascending within a bank.
  if (quoteInfo !== undefined) {
    // The values are gathered and hashed in one call (crypto.hash): the same digest as an
    // incremental hash over them in this order, without a Hash object per quote.
    const parts: Buffer[] = [];
    let missing: string | undefined;
    for (const s of quoteInfo.pcrSelect) {
      const bank = bankName(s.hashAlg);
      const size = alg(s.hashAlg).digestSize!;
      for (const i of s.indices) {
        const v = pcrValue(input.pcrs, bank, i);
        if (v === undefined || v.length !== size) {
          missing ??= `${bank}:${i} ${v === undefined ? 'missing' : 'has the wrong size'}`;
          continue;
        }
        parts.push(v);
      }
    }
    const digestOk = missing === undefined && safeEqual(oneShotHash(sig.hash.nodeHash, Buffer.concat(parts), 'buffer') as Buffer, quoteInfo.pcrDigest);
    add('pcrDigest', 'ERR_QUOTE_PCR_DIGEST', digestOk, digestOk ? undefined : missing ?? 'PCR values do not hash to the quoted digest');
  } else {
    add('pcrDigest', 'ERR_QUOTE_PCR_DIGEST', false, 'not a quote: no PCR digest');
  }

  if (input.referenceValues !== undefined) {
    const bad: string[] = [];
    const quotedIdx = new Set(nonEmpty.find((s) => s.bank === reqBank)?.indices ?? []);
    const idxs = Object.keys(input.referenceValues).map(Number).sort((a, b) => a - b);
    for (const i of idxs) {
      const allowed = input.referenceValues[i] ?? input.referenceValues[String(i)] ?? [];
      const v = pcrValue(input.pcrs, reqBank, i);
      if (!quotedIdx.has(i) || v === undefined || !allowed.some((a) => safeEqual(a, v))) bad.push(`${reqBank}:${i}`);
    }
    add('pcrPolicy', 'ERR_QUOTE_PCR_POLICY', bad.length === 0, bad.length === 0 ? undefined : `PCR ${bad.join(', ')} not among the reference values`);
  } else {
    add('pcrPolicy', 'ERR_QUOTE_PCR_POLICY', true, 'no reference values', false);
  }

  const c = attest.clockInfo;
  if (input.previous !== undefined) {
    const p = input.previous;
    let why: string | undefined;
    // Part 1, §36.6–36.7: resetCount only grows; restartCount only grows until the next reset;
    // Clock only grows while resetCount stays the same.
    if (c.resetCount < p.resetCount) why = `resetCount ${c.resetCount} < ${p.resetCount}`;
    else if (c.resetCount === p.resetCount && c.restartCount < p.restartCount) why = `restartCount ${c.restartCount} < ${p.restartCount}`;
    else if (c.resetCount === p.resetCount && c.clock < p.clock) why = `clock ${c.clock} < ${p.clock}`;
    add('clock', 'ERR_QUOTE_CLOCK_ROLLBACK', why === undefined, why);
  } else {
    add('clock', 'ERR_QUOTE_CLOCK_ROLLBACK', true, 'no previous quote', false);
  }
  add('safe', 'ERR_QUOTE_NOT_SAFE', c.safe, c.safe ? undefined : 'clockInfo.safe is NO');

  const failures = checks.filter((x) => !x.ok).map((x) => ({ code: x.code, detail: x.detail ?? x.name }));
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
      signatureAlg: alg(sig.sigAlg).name,
      signatureHash: sig.hash.nodeHash,
      counters: { clock: c.clock, resetCount: c.resetCount, restartCount: c.restartCount },
    },
  };
}
