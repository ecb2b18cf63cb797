/**
 * Offline verification of an audit export (./export-format.ts): no server, no HSM, only the file.
 *
 * Checked, in one streaming pass:
 * - every event's hash: SHA-256(prevHash ‖ JCS(body)) (./chain.ts). For lines in the writer's
 *   layout the body's text is hashed as it stands (it is the JCS text the writer hashed; any other
 *   bytes would need a SHA-256 preimage to match); other lines are parsed and canonicalised.
 *   `strictCanonical` re-canonicalises every event and reports text that is not RFC 8785;
 * - every link: an event's prevHash equals the previous event's hash; the event with seq 1
 *   starts from GENESIS_HASH;
 * - seq continuity from the first event (or from the header's range.firstSeq) to the last (or to
 *   range.lastSeq): missing events are `seq-gap`, events out of place `reordered`, a file that ends
 *   early `truncated`;
 * - every checkpoint: signed by an exported key (`unknown-key` otherwise) with a valid signature
 *   over JCS({seq, hash, time, kid}) (`bad-checkpoint-signature`), and its hash equal to the hash
 *   of the event at its seq (`checkpoint-mismatch`). ECDSA signatures are raw r‖s as in JWS
 *   (RFC 7518 §3.4); DER is accepted too. RSA: RS256/RS384 (PKCS#1 v1.5) and PS256/PS384 (PSS,
 *   MGF1 with the same hash, salt length = hash length, RFC 7518 §3.5);
 * - events after the last valid checkpoint are reported as an unanchored tail: a warning, since
 *   anyone who can write the file could have rewritten them.
 *
 * What anchors the result outside the file:
 * - `trustedKeys`: the audit keys' public halves as the auditor obtained them beforehand (`custos
 *   audit keys`, pinned when the key was made or rotated). Only they can sign a valid checkpoint:
 *   a checkpoint by another kid is `untrusted-key`, and so is a key line of a trusted kid with
 *   another public key. Without them the keys come from the file itself, and whoever rewrites the
 *   file can also re-sign it with a key of their own: the result then says so (a
 *   `self-asserted-keys` warning) and proves only that the file is consistent. A key line endorsed
 *   by a trusted version (its `endorsement`, signed before that version was compromised) makes its
 *   key trusted too, and so on: pinned keys follow the audit key's rotations.
 * - `witnesses`: chain heads seen before ({seq, hash}: a checkpoint from an earlier export, or a
 *   head published elsewhere). The event at each seq must carry that hash (`witness-mismatch`)
 *   and be in the file (`truncated`). This is what catches a log cut back to an earlier
 *   checkpoint, in the file or in the database: a file whose last events and checkpoints are
 *   gone is otherwise just an older export.
 * The result names the first bad seq (lowest seq with a problem) and its line.
 */
import { createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto';
import type { Readable } from 'node:stream';
import { GENESIS_HASH, checkpointSigningInput, computeEventHashFromCanonical, endorsementSigningInput, eventBodyJcs, isHashHex, type AuditEventBody, type AuditKeyEndorsement } from './chain.js';
import { sha256hex } from '../lib/encoding.js';
import { AUDIT_EXPORT_FORMAT, EVENT_LINE_LAYOUT, EVENT_LINE_PREFIX, scanExportLineBytes } from './export-format.js';

export type AuditProblemKind =
  | 'broken-link'
  | 'bad-hash'
  | 'seq-gap'
  | 'reordered'
  | 'bad-checkpoint-signature'
  | 'checkpoint-mismatch'
  | 'unknown-key'
  | 'truncated'
  | 'untrusted-key'
  | 'witness-mismatch'
  | 'malformed';

export interface AuditProblem {
  readonly seq?: number;
  readonly line: number;
  kind: AuditProblemKind;
  detail: string;
}

export interface AuditWarning {
  readonly kind: 'unanchored-tail' | 'self-asserted-keys';
  readonly fromSeq: number;
  readonly toSeq: number;
  readonly detail: string;
}

export interface AuditVerifyProgress {
  readonly bytesRead: number;
  readonly totalBytes?: number;
  readonly lines: number;
  readonly events: number;
}

export interface AuditVerifyOptions {
  readonly onProgress?: (p: AuditVerifyProgress) => void;
  /** Size of the input, for progress percentages (filled in for paths). */
  readonly totalBytes?: number;
  /** Re-canonicalise every event and report non-RFC 8785 text (slower). */
  readonly strictCanonical?: boolean;
  /** Audit public keys obtained outside the file, by kid (see loadTrustedKeys). */
  readonly trustedKeys?: ReadonlyMap<string, TrustedKey>;
  /** Chain heads seen before: the event at `seq` must be in the file with this hash. */
  readonly witnesses?: readonly { readonly seq: number; readonly hash: string }[];
}

export interface TrustedKey {
  readonly key: KeyObject;
  readonly alg: string;
  readonly compromisedAt?: number;
}

export interface AuditVerifyResult {
  readonly ok: boolean;
  readonly events: number;
  readonly checkpoints: number;
  /** Checkpoints whose signature and hash both verified. */
  readonly validCheckpoints: number;
  readonly firstSeq?: number;
  readonly lastSeq?: number;
  readonly firstBadSeq?: number;
  readonly firstBadLine?: number;
  readonly problems: AuditProblem[];
  readonly warnings: AuditWarning[];
  /** Whether checkpoints were checked against trusted keys from outside the file. */
  readonly anchored: boolean;
}

const OUTCOMES = new Set(['success', 'failure', 'denied']);
const BODY_KEYS = 7;

interface PendingCheckpoint {
  readonly line: number;
  readonly seq: number;
  readonly hash: string;
  readonly time: string;
  readonly kid: string;
  readonly alg: string;
  readonly signature: string;
}

type ExportedKey = TrustedKey;

const ALGS: Record<string, { hash: string; kind: 'ec' | 'rsa' | 'pss'; rawLen?: number }> = {
  ES256: { hash: 'sha256', kind: 'ec', rawLen: 64 },
  ES384: { hash: 'sha384', kind: 'ec', rawLen: 96 },
  RS256: { hash: 'sha256', kind: 'rsa' },
  RS384: { hash: 'sha384', kind: 'rsa' },
  PS256: { hash: 'sha256', kind: 'pss' },
  PS384: { hash: 'sha384', kind: 'pss' },
};

/** Verify one checkpoint signature; false for any failure (bad encoding included). */
function checkSignature(k: ExportedKey, cp: PendingCheckpoint): boolean {
  return checkSignatureOver(k, cp.alg, cp.signature, checkpointSigningInput(cp));
}

/** Verify a base64 signature by `k` over `data` with `alg`; false for any failure. */
function checkSignatureOver(k: ExportedKey, alg: string, signature: string, data: Buffer): boolean {
  const a = ALGS[alg];
  if (!a || k.alg !== alg) return false;
  const sig = Buffer.from(signature, 'base64');
  if (sig.length === 0 || sig.toString('base64').replace(/=+$/, '') !== signature.replace(/=+$/, '')) return false;
  try {
    if (a.kind === 'ec') {
      const dsaEncoding = sig.length === a.rawLen ? 'ieee-p1363' : 'der';
      return verifySignature(a.hash, data, { key: k.key, dsaEncoding }, sig);
    }
    if (a.kind === 'pss') {
      const saltLength = a.hash === 'sha256' ? 32 : 48;
      return verifySignature(a.hash, data, { key: k.key, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength }, sig);
    }
    return verifySignature(a.hash, data, k.key, sig);
  } catch {
    return false;
  }
}

function keyTypeMatches(k: KeyObject, alg: string): boolean {
  const a = ALGS[alg];
  if (!a) return false;
  if (a.kind === 'ec') {
    const curve = k.asymmetricKeyDetails?.namedCurve;
    return k.asymmetricKeyType === 'ec' && curve === (alg === 'ES256' ? 'prime256v1' : 'secp384r1');
  }
  return k.asymmetricKeyType === 'rsa' || (a.kind === 'pss' && k.asymmetricKeyType === 'rsa-pss');
}

const PREFIX_BYTES = Buffer.from(EVENT_LINE_PREFIX, 'latin1');
const HASH_KEY_BYTES = Buffer.from('","hash":"', 'latin1');
const SEQ_KEY_BYTES = Buffer.from(',"seq":', 'latin1');
/** Byte offset of the body's text (after its `{`) in a writer-laid-out event line. */
const BODY_AT = EVENT_LINE_LAYOUT.hashEnd + 2;
/** Fast-path events awaiting a checkpoint line before they are parsed for well-formedness. */
const MAX_UNPARSED_TAIL = 100_000;
/** How far past twice the events read the dense hash table may reach. */
const DENSE_SLACK = 65_536;
/** Missing seqs remembered in all (to turn a gap into `reordered` when they turn up late). */
const MAX_GAP_ENTRIES = 1_000_000;

interface UnparsedEvent {
  readonly line: number;
  readonly seq: number;
  readonly buf: Buffer;
  /** Range of the body's canonical text, `{` included. */
  readonly from: number;
  readonly end: number;
}

/** Shape check of an event body (the seven fields, nothing else, right types). */
function bodyShapeOk(b: Record<string, unknown>, extraKeys: number): boolean {
  const seq = b['seq'];
  const d = b['details'];
  return (
    typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 1 &&
    typeof b['time'] === 'string' && typeof b['actor'] === 'string' && typeof b['action'] === 'string' &&
    typeof b['subject'] === 'string' && OUTCOMES.has(b['outcome'] as string) &&
    d !== null && typeof d === 'object' && !Array.isArray(d) &&
    Object.keys(b).length === BODY_KEYS + extraKeys
  );
}

/**
 * Verify an audit export offline. Never throws for a bad file (every defect is a problem in the
 * result); rejects only when the source cannot be read.
 */
export async function verifyAuditExport(source: string | Readable, options: AuditVerifyOptions = {}): Promise<AuditVerifyResult> {
  const problems: AuditProblem[] = [];
  const warnings: AuditWarning[] = [];
  const keys = new Map<string, ExportedKey>();
  const checkpoints: PendingCheckpoint[] = [];
  const strict = options.strictCanonical === true;
  // Extended after the scan by the versions trusted versions endorsed (a copy: the caller's map is left alone).
  const trusted = options.trustedKeys ? new Map(options.trustedKeys) : undefined;
  // With trusted keys, a compromise the file records still counts (it can only refuse more).
  const fileCompromise = new Map<string, number>();
  const endorsed = new Map<string, { line: number; key: KeyObject; alg: string; endorsement: AuditKeyEndorsement }>();

  let header: { firstSeq?: number; lastSeq?: number } | undefined;
  let sawHeader = false;
  let events = 0;
  let firstSeq: number | undefined;
  let expected: number | undefined;
  let lastHash: string | undefined;
  let lastSeqInFile = -1;
  // Links whose previous event has not been read yet (events out of order), by that event's seq.
  const pendingLinks = new Map<number, { seq: number; line: number; prevHash: string }>();
  let maxSeq = -Infinity;
  let lastLine = 0;
  // Missing seqs reported as a gap, so that a late arrival turns the gap into `reordered`.
  const gaps = new Map<number, AuditProblem>();
  const rememberGap = (from: number, to: number, gap: AuditProblem): void => {
    for (let s = from; s < to && gaps.size < MAX_GAP_ENTRIES; s++) gaps.set(s, gap);
  };
  // Event hashes by seq as their 64 hex characters (copied, never re-encoded), for checkpoints,
  // which may come before or after their event. Seqs below the first event's (a reordered start)
  // or far beyond the dense range (a damaged seq) are rare and kept in a small map instead.
  let hashBuf = Buffer.alloc(64 * 4096);
  let present = new Uint8Array(4096);
  const sparse = new Map<number, string>();
  let baseSeq: number | undefined;

  const seen = (seq: number): boolean => {
    if (baseSeq === undefined) return false;
    const idx = seq - baseSeq;
    return idx >= 0 && idx < present.length ? present[idx] === 1 : sparse.has(seq);
  };
  /**
   * Slot for seq in hashBuf (growing it), or -1 for a seq kept in the sparse map. The dense table
   * only grows in step with the events read (a seq far beyond them goes to the map): a few lines
   * with huge seqs must not make it double again and again.
   */
  const slot = (seq: number): number => {
    baseSeq ??= seq;
    const idx = seq - baseSeq;
    if (idx < 0 || idx >= 2 * events + DENSE_SLACK) return -1;
    if (idx >= present.length) {
      const n = Math.max(present.length * 2, idx + 1);
      const biggerHashes = Buffer.alloc(n * 64);
      hashBuf.copy(biggerHashes);
      hashBuf = biggerHashes;
      const biggerPresent = new Uint8Array(n);
      biggerPresent.set(present);
      present = biggerPresent;
    }
    present[idx] = 1;
    return idx * 64;
  };
  const storeHash = (seq: number, hex: string) => {
    const at = slot(seq);
    if (at < 0) sparse.set(seq, hex);
    else hashBuf.write(hex, at, 'latin1');
  };
  const hashAt = (seq: number): string | undefined => {
    if (!seen(seq)) return undefined;
    const idx = seq - baseSeq!;
    return idx >= 0 && idx < present.length && present[idx] === 1 ? hashBuf.toString('latin1', idx * 64, idx * 64 + 64) : sparse.get(seq);
  };

  const problem = (p: AuditProblem) => problems.push(p);

  const onEvent = (line: number, text: string, e: Record<string, unknown>, fast: boolean) => {
    const seq = e['seq'];
    const prevHash = e['prevHash'];
    const hash = e['hash'];
    if (!isHashHex(prevHash) || !isHashHex(hash) || !bodyShapeOk(e, 3) || typeof seq !== 'number') {
      problem({ ...(typeof seq === 'number' ? { seq } : {}), line, kind: 'malformed', detail: 'event line lacks a field, has an extra one, or a field has the wrong type' });
      return;
    }
    events++;
    // Hash: the writer's layout carries the body's canonical text verbatim after the two hashes.
    // The layout is only trusted when the hashes the parser saw are the ones at the fixed offsets.
    fast =
      fast &&
      text.startsWith(prevHash, EVENT_LINE_LAYOUT.prevHash) &&
      text.startsWith('","hash":"', EVENT_LINE_LAYOUT.hashKey) &&
      text.startsWith(hash, EVENT_LINE_LAYOUT.hash);
    let canonical: string;
    if (fast && !strict) {
      canonical = '{' + text.slice(EVENT_LINE_LAYOUT.hashEnd + 2);
    } else {
      canonical = eventBodyJcs(e as unknown as AuditEventBody);
      if (strict && fast && canonical !== '{' + text.slice(EVENT_LINE_LAYOUT.hashEnd + 2)) {
        problem({ seq, line, kind: 'malformed', detail: 'event body is not in RFC 8785 canonical form' });
      }
    }
    // A line that looks laid out by the writer but carries its body's members in another order
    // is still a valid event line: its text is not the canonical form, so canonicalise it.
    if (computeEventHashFromCanonical(prevHash, canonical) !== hash && (!fast || strict || computeEventHashFromCanonical(prevHash, eventBodyJcs(e as unknown as AuditEventBody)) !== hash)) {
      problem({ seq, line, kind: 'bad-hash', detail: 'hash does not match SHA-256(prevHash ‖ JCS(event)): the event was altered' });
    }
    if (firstSeq === undefined) {
      firstSeq = seq;
      const start = header?.firstSeq ?? seq;
      if (seq > start) {
        const gap: AuditProblem = { seq: start, line, kind: 'seq-gap', detail: `events ${start}..${seq - 1} are missing before the first event` };
        problem(gap);
        rememberGap(start, seq, gap);
      } else if (seq < start) {
        problem({ seq, line, kind: 'reordered', detail: `first event has seq ${seq}, before the header's range start ${start}` });
      }
      if (seq === 1 && prevHash !== GENESIS_HASH) {
        problem({ seq, line, kind: 'broken-link', detail: 'the first event of the log must link to the genesis hash' });
      }
      expected = seq + 1;
    } else {
      if (seq === expected) {
        expected = seq + 1;
      } else if (seq > expected!) {
        const gap: AuditProblem = { seq: expected!, line, kind: 'seq-gap', detail: `events ${expected}..${seq - 1} are missing (deleted or out of place)` };
        problem(gap);
        rememberGap(expected!, seq, gap);
        expected = seq + 1;
      } else {
        const gap = gaps.get(seq);
        if (gap) {
          gap.kind = 'reordered';
          gap.detail = `event ${gap.seq} is not where the chain needs it (events are out of order)`;
          gaps.delete(seq);
          if (gap.seq !== seq) problem({ seq, line, kind: 'reordered', detail: `seq ${seq} comes after seq ${expected! - 1}` });
        } else {
          problem({ seq, line, kind: 'reordered', detail: seen(seq) ? `seq ${seq} appears twice` : `seq ${seq} comes after seq ${expected! - 1}` });
        }
      }
      // The link is to the event with the previous seq, wherever it stands in the file.
      if (seq - 1 === lastSeqInFile) {
        if (prevHash !== lastHash) problem({ seq, line, kind: 'broken-link', detail: `prevHash does not equal the hash of event ${seq - 1}` });
      } else if (seen(seq - 1)) {
        if (prevHash !== hashAt(seq - 1)) problem({ seq, line, kind: 'broken-link', detail: `prevHash does not equal the hash of event ${seq - 1}` });
      } else {
        // Checked when event seq−1 turns up; if it never does, its gap is already reported.
        pendingLinks.set(seq - 1, { seq, line, prevHash });
      }
    }
    const pending = pendingLinks.get(seq);
    if (pending) {
      pendingLinks.delete(seq);
      if (pending.prevHash !== hash) problem({ seq: pending.seq, line: pending.line, kind: 'broken-link', detail: `prevHash does not equal the hash of event ${seq}` });
    }
    lastSeqInFile = seq;
    if (!seen(seq)) storeHash(seq, hash);
    lastHash = hash;
    if (seq > maxSeq) maxSeq = seq;
  };

  // Events accepted by the fast path are parsed later, and only if no checkpoint line follows
  // them: a body whose hash is anchored by a checkpoint is the writer's own JCS text, so it is
  // well-formed; events past the last checkpoint could be anyone's and are parsed.
  let tail: UnparsedEvent[] = [];
  let tailStart = 0;
  const parseLater = (u: UnparsedEvent) => {
    let b: unknown;
    try {
      b = JSON.parse(u.buf.toString('utf8', u.from, u.end));
    } catch {
      b = undefined;
    }
    if (b === null || typeof b !== 'object' || Array.isArray(b) || !bodyShapeOk(b as Record<string, unknown>, 0) || (b as { seq: unknown }).seq !== u.seq) {
      problem({ seq: u.seq, line: u.line, kind: 'malformed', detail: 'event body is not a well-formed event' });
    }
  };
  const releaseTail = (uptoSeq: number) => {
    while (tailStart < tail.length && tail[tailStart]!.seq <= uptoSeq) tailStart++;
    if (tailStart > 4096 && tailStart * 2 > tail.length) {
      tail = tail.slice(tailStart);
      tailStart = 0;
    }
  };
  const scratch = Buffer.alloc(65);

  /**
   * The common case in one pass over bytes, with no JSON parse and no re-serialisation: a
   * writer-laid-out line for exactly the next seq, linking to the previous event, whose body
   * bytes hash to its hash. Anything else returns false and goes through the full parse below.
   */
  const tryFast = (line: number, buf: Buffer, start: number, end: number): boolean => {
    if (strict || lastHash === undefined || expected === undefined || pendingLinks.size > 0) return false;
    const P = EVENT_LINE_LAYOUT.prevHash;
    const b = start + BODY_AT;
    if (end - b < 20 || buf[end - 1] !== 125 || buf[b - 2] !== 34 || buf[b - 1] !== 44) return false;
    if (buf.compare(PREFIX_BYTES, 0, PREFIX_BYTES.length, start, start + P) !== 0) return false;
    if (buf.compare(HASH_KEY_BYTES, 0, HASH_KEY_BYTES.length, start + EVENT_LINE_LAYOUT.hashKey, start + EVENT_LINE_LAYOUT.hash) !== 0) return false;
    if (buf.toString('latin1', start + P, start + P + 64) !== lastHash) return false;
    // The top-level seq is the last `,"seq":` of the line: subject and time follow it, and a JSON
    // string cannot hold an unescaped quote.
    const k = buf.lastIndexOf(SEQ_KEY_BYTES, end - SEQ_KEY_BYTES.length);
    if (k < b) return false;
    let i = k + SEQ_KEY_BYTES.length;
    const first = i;
    let seq = 0;
    while (i < end && i - first < 15) {
      const c = buf[i]!;
      if (c < 48 || c > 57) break;
      seq = seq * 10 + (c - 48);
      i++;
    }
    if (i === first || buf[i] !== 44 || (buf[first] === 48 && i - first > 1)) return false;
    if (seq !== expected || seq - 1 !== lastSeqInFile) return false;
    const hashAt0 = start + EVENT_LINE_LAYOUT.hash;
    const hash = buf.toString('latin1', hashAt0, hashAt0 + 64);
    // Lay prevHash ‖ "{" out right before the body, in place, so that one hash call covers the
    // exact bytes SHA-256 is defined over; restored if the event is not accepted.
    buf.copy(scratch, 0, b - 65, b);
    buf.copyWithin(b - 65, start + P, start + P + 64);
    buf[b - 1] = 123;
    if (sha256hex(buf.subarray(b - 65, end)) !== hash) {
      scratch.copy(buf, b - 65);
      return false;
    }
    events++;
    expected = seq + 1;
    lastSeqInFile = seq;
    if (seq > maxSeq) maxSeq = seq;
    lastHash = hash;
    // The hash's bytes were overwritten above; they are in `hash`, and equal prevHash of the next line.
    const at = slot(seq);
    if (at >= 0) hashBuf.write(hash, at, 'latin1');
    else sparse.set(seq, hash);
    if (tail.length - tailStart >= MAX_UNPARSED_TAIL) parseLater(tail[tailStart++]!);
    tail.push({ line, seq, buf, from: b - 1, end });
    return true;
  };

  const onBytes = (line: number, buf: Buffer, start: number, end: number, terminated: boolean) => {
    lastLine = line;
    if (terminated && tryFast(line, buf, start, end)) return;
    onLine(line, buf.toString('utf8', start, end), terminated);
  };

  const onLine = (line: number, text: string, terminated: boolean) => {
    lastLine = line;
    if (text === '') return;
    // Fast path: a writer-laid-out event line is recognised by its fixed prefix.
    const fast = text.startsWith(EVENT_LINE_PREFIX) && text.charCodeAt(EVENT_LINE_LAYOUT.hashEnd) === 34 && text.charCodeAt(EVENT_LINE_LAYOUT.hashEnd + 1) === 44;
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      if (!terminated) problem({ line, kind: 'truncated', detail: 'the last line is cut short' });
      else problem({ line, kind: 'malformed', detail: 'not valid JSON' });
      return;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      problem({ line, kind: 'malformed', detail: 'not a JSON object' });
      return;
    }
    const o = v as Record<string, unknown>;
    const type = o['type'];
    if (!sawHeader && type !== 'header') {
      sawHeader = true;
      problem({ line, kind: 'malformed', detail: 'the first line must be the export header' });
    }
    switch (type) {
      case 'event':
        onEvent(line, text, o, fast);
        return;
      case 'checkpoint': {
        const { seq, hash, time, kid, alg, signature } = o;
        if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || !isHashHex(hash) || typeof time !== 'string' || typeof kid !== 'string' || typeof alg !== 'string' || typeof signature !== 'string') {
          problem({ ...(typeof seq === 'number' ? { seq } : {}), line, kind: 'malformed', detail: 'checkpoint line lacks a field or a field has the wrong type' });
          return;
        }
        checkpoints.push({ line, seq, hash, time, kid, alg, signature });
        releaseTail(seq);
        return;
      }
      case 'key': {
        const entry = parseKeyEntry(o, false);
        if ('failed' in entry) {
          const misfit = `key ${entry.kid} does not fit its algorithm ${entry.alg}`;
          const detail = { shape: 'key line needs kid, alg and exactly one of jwk or pem', alg: misfit, key: `key ${entry.kid} is not a valid public key`, fit: misfit }[entry.failed];
          problem({ line, kind: 'malformed', detail });
          return;
        }
        const { kid, alg, key, compromisedAt } = entry;
        if (trusted) {
          // The file's key lines add nothing to trust by themselves; one that contradicts a
          // trusted key is a rewrite. A line endorsed by a trusted version may become trusted
          // (after the scan: endorsers may come later in the file).
          const t = trusted.get(kid);
          if (t && !sameKey(t.key, key)) problem({ line, kind: 'untrusted-key', detail: `key ${kid} in the file is not the trusted key ${kid}` });
          if (compromisedAt !== undefined) fileCompromise.set(kid, compromisedAt);
          const e = o['endorsement'] as Record<string, unknown> | undefined;
          if (!t && e && typeof e['by'] === 'string' && typeof e['alg'] === 'string' && typeof e['signature'] === 'string' && typeof e['time'] === 'string') {
            endorsed.set(kid, { line, key, alg, endorsement: { by: e['by'], alg: e['alg'], signature: e['signature'], time: e['time'] } });
          }
          return;
        }
        keys.set(kid, { key, alg, ...(compromisedAt === undefined ? {} : { compromisedAt }) });
        return;
      }
      case 'header': {
        if (sawHeader) {
          problem({ line, kind: 'malformed', detail: 'a second header line' });
          return;
        }
        sawHeader = true;
        if (o['format'] !== AUDIT_EXPORT_FORMAT || o['version'] !== 1) {
          problem({ line, kind: 'malformed', detail: `not a ${AUDIT_EXPORT_FORMAT} version 1 file` });
        }
        const r = o['range'] as { firstSeq?: unknown; lastSeq?: unknown } | null | undefined;
        header = {};
        if (r && typeof r.firstSeq === 'number' && typeof r.lastSeq === 'number') header = { firstSeq: r.firstSeq, lastSeq: r.lastSeq };
        return;
      }
      default:
        problem({ line, kind: 'malformed', detail: `unknown line type ${JSON.stringify(type)}` });
    }
  };

  const total = options.totalBytes ?? (typeof source === 'string' ? await fileSize(source) : undefined);
  await scanExportLineBytes(source, onBytes, options.onProgress
    ? (p) => options.onProgress!({ bytesRead: p.bytesRead, lines: p.lines, events, ...(total === undefined ? {} : { totalBytes: total }) })
    : undefined);

  for (let i = tailStart; i < tail.length; i++) parseLater(tail[i]!);
  tail = [];
  if (!sawHeader) problem({ line: 1, kind: 'malformed', detail: 'empty file: no header' });
  if (header?.lastSeq !== undefined && (events === 0 || maxSeq < header.lastSeq)) {
    const from = events === 0 ? (header.firstSeq ?? 1) : maxSeq + 1;
    problem({ seq: from, line: lastLine + 1, kind: 'truncated', detail: `the header promises events up to ${header.lastSeq}; the file ends after ${events === 0 ? 'no event' : maxSeq}` });
  }

  // Versions endorsed by a trusted one become trusted, and so on along the chain of rotations,
  // unless the endorser was compromised before it signed. An endorsement that does not verify
  // is left out silently: its key's checkpoints then fail as untrusted-key.
  if (trusted) {
    for (let grew = true; grew; ) {
      grew = false;
      for (const [kid, c] of endorsed) {
        const by = trusted.get(c.endorsement.by);
        if (trusted.has(kid) || !by) continue;
        const byCompromised = Math.min(by.compromisedAt ?? Infinity, fileCompromise.get(c.endorsement.by) ?? Infinity);
        if (!(Date.parse(c.endorsement.time) < byCompromised)) continue;
        const jwk = c.key.export({ format: 'jwk' }) as Record<string, unknown>;
        if (!checkSignatureOver(by, c.endorsement.alg, c.endorsement.signature, endorsementSigningInput({ kid, jwk, by: c.endorsement.by, time: c.endorsement.time }))) continue;
        trusted.set(kid, { key: c.key, alg: c.alg });
        grew = true;
      }
    }
  }

  // Checkpoints last: keys may be listed anywhere, and a checkpoint may precede its event.
  let anchoredTo = -Infinity;
  let validCheckpoints = 0;
  for (const cp of checkpoints) {
    const k = trusted ? trusted.get(cp.kid) : keys.get(cp.kid);
    if (!k) {
      if (trusted) problem({ seq: cp.seq, line: cp.line, kind: 'untrusted-key', detail: `checkpoint signed by ${cp.kid}, which is not among the trusted keys` });
      else problem({ seq: cp.seq, line: cp.line, kind: 'unknown-key', detail: `checkpoint signed by ${cp.kid}, which the export does not list` });
      continue;
    }
    if (!checkSignature(k, cp)) {
      problem({ seq: cp.seq, line: cp.line, kind: 'bad-checkpoint-signature', detail: `signature by ${cp.kid} (${cp.alg}) does not verify` });
      continue;
    }
    const compromisedAt = Math.min(k.compromisedAt ?? Infinity, fileCompromise.get(cp.kid) ?? Infinity);
    if (compromisedAt !== Infinity && Date.parse(cp.time) >= compromisedAt) {
      problem({ seq: cp.seq, line: cp.line, kind: 'bad-checkpoint-signature', detail: `${cp.kid} was compromised before this checkpoint was signed` });
      continue;
    }
    const h = hashAt(cp.seq);
    if (h === undefined) {
      if (cp.seq > maxSeq) {
        problem({ seq: cp.seq, line: cp.line, kind: 'truncated', detail: `checkpoint covers seq ${cp.seq}, past the last event in the file` });
      } else {
        problem({ seq: cp.seq, line: cp.line, kind: 'checkpoint-mismatch', detail: `no event with seq ${cp.seq} in the file` });
      }
      continue;
    }
    if (h !== cp.hash) {
      problem({ seq: cp.seq, line: cp.line, kind: 'checkpoint-mismatch', detail: `checkpoint hash differs from the hash of event ${cp.seq}: history was rewritten` });
      continue;
    }
    validCheckpoints++;
    anchoredTo = Math.max(anchoredTo, cp.seq);
  }
  if (events > 0 && maxSeq > anchoredTo) {
    const fromSeq = anchoredTo === -Infinity ? firstSeq! : anchoredTo + 1;
    warnings.push({ kind: 'unanchored-tail', fromSeq, toSeq: maxSeq, detail: `events ${fromSeq}..${maxSeq} are not covered by a valid checkpoint` });
  }
  for (const w of options.witnesses ?? []) {
    const h = hashAt(w.seq);
    if (h === undefined) {
      if (events === 0 || w.seq > maxSeq) problem({ seq: w.seq, line: lastLine + 1, kind: 'truncated', detail: `the file ends before seq ${w.seq}, a chain head seen before: the log was cut back` });
      else problem({ seq: w.seq, line: lastLine + 1, kind: 'witness-mismatch', detail: `no event with seq ${w.seq}, a chain head seen before` });
    } else if (h !== w.hash.toLowerCase()) {
      problem({ seq: w.seq, line: lastLine + 1, kind: 'witness-mismatch', detail: `event ${w.seq} does not carry the hash seen before: history was rewritten` });
    }
  }
  if (!trusted) {
    warnings.push({ kind: 'self-asserted-keys', fromSeq: firstSeq ?? 0, toSeq: events > 0 ? maxSeq : 0, detail: 'checkpoint keys were taken from the file itself: this shows the file is consistent, not that custos signed it (pass the audit keys obtained beforehand)' });
  }

  let first: AuditProblem | undefined;
  for (const p of problems) {
    if (p.seq === undefined) continue;
    if (!first || p.seq < first.seq! || (p.seq === first.seq && p.line < first.line)) first = p;
  }
  if (!first) first = problems[0];
  return {
    ok: problems.length === 0,
    events,
    checkpoints: checkpoints.length,
    validCheckpoints,
    ...(firstSeq === undefined ? {} : { firstSeq, lastSeq: maxSeq }),
    ...(first?.seq === undefined ? {} : { firstBadSeq: first.seq }),
    ...(first === undefined ? {} : { firstBadLine: first.line }),
    problems,
    warnings,
    anchored: trusted !== undefined,
  };
}

function sameKey(a: KeyObject, b: KeyObject): boolean {
  return a.export({ format: 'der', type: 'spki' }).equals(b.export({ format: 'der', type: 'spki' }));
}

/**
 * Trusted audit keys from JSON: the answer of `GET /v1/audit/keys` (`{keys: [{kid, alg, jwk |
 * pem, states?}]}`) or a JWK Set (`{keys: [{kid, alg, kty, …}]}`). Throws with a reason for
 * anything else: a trust anchor that does not parse must stop the verification, not weaken it.
 */
export function loadTrustedKeys(json: string): Map<string, TrustedKey> {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    throw new Error('trusted keys: not JSON');
  }
  const list = (doc as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(list) || list.length === 0) throw new Error('trusted keys: expected {"keys": [...]} with at least one key');
  const out = new Map<string, TrustedKey>();
  for (const [i, raw] of list.entries()) {
    const entry = raw !== null && typeof raw === 'object' ? parseKeyEntry(raw as Record<string, unknown>, true) : ({ failed: 'shape', kid: '', alg: '' } as const);
    if ('failed' in entry) {
      throw new Error({
        shape: `trusted keys: keys[${i}] needs a kid, an alg and one of jwk or pem`,
        alg: `trusted keys: keys[${i}] needs an alg among ${Object.keys(ALGS).join(', ')}`,
        key: `trusted keys: ${entry.kid} is not a valid public key`,
        fit: `trusted keys: ${entry.kid} is not a public key for ${entry.alg}`,
      }[entry.failed]);
    }
    const { kid, ...key } = entry;
    if (out.has(kid)) throw new Error(`trusted keys: ${kid} appears twice`);
    out.set(kid, key);
  }
  return out;
}

/**
 * One audit key as an export's key line or the trusted keys give it: kid, alg, public key (jwk or
 * pem; a JWK Set's entries carry the JWK members inline when `inlineJwk`) and when its `states`
 * say it was compromised. Otherwise what is wrong: `shape` (a field missing or of the wrong
 * type), `alg` (an algorithm custos does not sign with), `key` (no public key in it) or `fit` (a
 * key that does not match its algorithm).
 */
function parseKeyEntry(o: Record<string, unknown>, inlineJwk: boolean): (TrustedKey & { kid: string }) | { failed: 'shape' | 'alg' | 'key' | 'fit'; kid: string; alg: string } {
  const { kid, alg, pem, states } = o;
  const jwk = o['jwk'] ?? (inlineJwk && pem === undefined && typeof o['kty'] === 'string' ? o : undefined);
  if (typeof kid !== 'string' || typeof alg !== 'string' || (jwk === undefined) === (pem === undefined)) return { failed: 'shape', kid: String(kid), alg: String(alg) };
  if (!ALGS[alg]) return { failed: 'alg', kid, alg };
  let key: KeyObject;
  try {
    key = typeof pem === 'string' ? createPublicKey(pem) : createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  } catch {
    return { failed: 'key', kid, alg };
  }
  if (key.type !== 'public' || !keyTypeMatches(key, alg)) return { failed: 'fit', kid, alg };
  let compromisedAt: number | undefined;
  if (Array.isArray(states)) {
    for (const s of states as Array<{ state?: unknown; at?: unknown } | null>) {
      if (s?.state === 'compromised' && typeof s.at === 'string') compromisedAt = Date.parse(s.at);
    }
  }
  return { kid, alg, key, ...(compromisedAt === undefined ? {} : { compromisedAt }) };
}

async function fileSize(path: string): Promise<number | undefined> {
  try {
    const { stat } = await import('node:fs/promises');
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}
