/**
 * The audit export: one JSON Lines file (UTF-8, one JSON object per line, `\n` line ends) that an
 * auditor verifies offline with `custos audit verify`. Each line is tagged with its `type`:
 *
 *   {"type":"header","format":"custos-audit-export","version":1,"exportedAt":RFC 3339,
 *    "issuer":string,"range":{"firstSeq":n,"lastSeq":m} | null}
 *       Always the first line. `range` is the seq range the export claims to hold, so that a file
 *       cut short or stripped of its first or last events is detected.
 *   {"type":"key","kid":string,"alg":"ES256"|"ES384"|"RS256"|"RS384"|"PS256"|"PS384",
 *    "jwk":{…public JWK…} or "pem":"-----BEGIN PUBLIC KEY-----…",
 *    "states":[{"state":"active","at":RFC 3339},…]?,
 *    "endorsement":{"by":kid,"alg":string,"signature":base64,"time":RFC 3339}?}
 *       Public half of every audit key version that signed a checkpoint in the file, with its
 *       lifecycle history (a version that was `compromised` signs nothing trustworthy after) and,
 *       from the second version on, the previous version's signature over it (./chain.ts).
 *   {"type":"event","prevHash":hex,"hash":hex, …the seven body fields…}
 *       One audit event (./chain.ts). The writer emits `type`, `prevHash` and `hash` first and
 *       then the body's RFC 8785 text verbatim, so the verifier can hash the bytes as they stand
 *       instead of re-serialising them. Readers must not rely on that layout: any key order is a
 *       valid event line.
 *   {"type":"checkpoint","seq":n,"hash":hex,"time":RFC 3339,"kid":string,"alg":string,
 *    "signature":base64}
 *       A signed chain head (./chain.ts). The writer puts it right after the event at `seq`.
 *
 * Key lines come before the events; events are in seq order.
 */
import { createReadStream } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { once } from 'node:events';
import { eventBodyJcs, isHashHex, type AuditCheckpoint, type AuditEvent, type AuditKeyEndorsement } from './chain.js';

export const AUDIT_EXPORT_FORMAT = 'custos-audit-export';
export const AUDIT_EXPORT_VERSION = 1;

export interface ExportHeader {
  readonly type: 'header';
  readonly format: typeof AUDIT_EXPORT_FORMAT;
  readonly version: number;
  readonly exportedAt: string;
  /** Who produced the export: the custos instance URL or name. */
  readonly issuer: string;
  readonly range: { readonly firstSeq: number; readonly lastSeq: number } | null;
}

export interface ExportKeyState {
  readonly state: string;
  readonly at: string;
}

export interface ExportKey {
  readonly type: 'key';
  readonly kid: string;
  readonly alg: string;
  readonly jwk?: Record<string, unknown>;
  readonly pem?: string;
  readonly states?: readonly ExportKeyState[];
  /** The version before it vouching for this one (./chain.ts, endorsementSigningInput). */
  readonly endorsement?: AuditKeyEndorsement;
}

export type ExportEventLine = { readonly type: 'event' } & AuditEvent;
export type ExportCheckpointLine = { readonly type: 'checkpoint' } & AuditCheckpoint;
export type ExportLine = ExportHeader | ExportKey | ExportEventLine | ExportCheckpointLine;

/** The fixed start of an event line as the writer lays it out (see the file comment). */
export const EVENT_LINE_PREFIX = '{"type":"event","prevHash":"';
/** Offsets inside a writer-laid-out event line. */
export const EVENT_LINE_LAYOUT = {
  prevHash: EVENT_LINE_PREFIX.length,
  hashKey: EVENT_LINE_PREFIX.length + 64,
  hash: EVENT_LINE_PREFIX.length + 64 + '","hash":"'.length,
  /** Index of the `"` that ends the hash; the body's text follows after `",` as `{` + rest. */
  hashEnd: EVENT_LINE_PREFIX.length + 64 + '","hash":"'.length + 64,
} as const;

/** The header line. */
export function headerLine(h: Omit<ExportHeader, 'type' | 'format' | 'version'>): string {
  const line: ExportHeader = { type: 'header', format: AUDIT_EXPORT_FORMAT, version: AUDIT_EXPORT_VERSION, ...h };
  return JSON.stringify(line) + '\n';
}

/** A key line. */
export function keyLine(k: Omit<ExportKey, 'type'>): string {
  return JSON.stringify({ type: 'key', ...k }) + '\n';
}

/** An event line, laid out so that the body's canonical text appears verbatim. */
export function eventLine(e: AuditEvent): string {
  const body = eventBodyJcs(e);
  if (!isHashHex(e.prevHash) || !isHashHex(e.hash)) {
    // Not a well-formed chain entry; still export it faithfully so the verifier can point at it.
    return JSON.stringify({ type: 'event', ...e }) + '\n';
  }
  return `${EVENT_LINE_PREFIX}${e.prevHash}","hash":"${e.hash}",${body.slice(1)}\n`;
}

/** A checkpoint line. */
export function checkpointLine(cp: AuditCheckpoint): string {
  return JSON.stringify({ type: 'checkpoint', seq: cp.seq, hash: cp.hash, time: cp.time, kid: cp.kid, alg: cp.alg, signature: cp.signature }) + '\n';
}

export interface AuditExportInput {
  readonly exportedAt: string;
  readonly issuer: string;
  readonly range: ExportHeader['range'];
  readonly keys: Iterable<Omit<ExportKey, 'type'>> | AsyncIterable<Omit<ExportKey, 'type'>>;
  /** Events in seq order. */
  readonly events: Iterable<AuditEvent> | AsyncIterable<AuditEvent>;
  readonly checkpoints: Iterable<AuditCheckpoint> | AsyncIterable<AuditCheckpoint>;
}

/**
 * The export's lines, streamed: header, keys, then events with each checkpoint right after the
 * event it covers (checkpoints for seqs beyond the last event come at the end).
 */
export async function* auditExportLines(input: AuditExportInput): AsyncGenerator<string> {
  yield headerLine({ exportedAt: input.exportedAt, issuer: input.issuer, range: input.range });
  for await (const k of input.keys) yield keyLine(k);
  const cps: AuditCheckpoint[] = [];
  for await (const cp of input.checkpoints) cps.push(cp);
  cps.sort((a, b) => a.seq - b.seq);
  let i = 0;
  for await (const e of input.events) {
    while (i < cps.length && cps[i]!.seq < e.seq) yield checkpointLine(cps[i++]!);
    yield eventLine(e);
    while (i < cps.length && cps[i]!.seq === e.seq) yield checkpointLine(cps[i++]!);
  }
  while (i < cps.length) yield checkpointLine(cps[i++]!);
}

/** Write an export to a stream, honouring back-pressure; resolves once every line is written. */
export async function writeAuditExport(out: Writable, input: AuditExportInput): Promise<{ lines: number; bytes: number }> {
  let lines = 0;
  let bytes = 0;
  let batch = '';
  const flush = async () => {
    if (batch === '') return;
    const chunk = batch;
    batch = '';
    if (!out.write(chunk)) await once(out, 'drain');
  };
  for await (const line of auditExportLines(input)) {
    lines++;
    bytes += Buffer.byteLength(line);
    batch += line;
    if (batch.length >= 1 << 16) await flush();
  }
  await flush();
  return { lines, bytes };
}

export interface RawLine {
  /** 1-based line number. */
  readonly line: number;
  readonly text: string;
  /** False for a last line that has no terminating `\n` (a file cut short, or one without a final newline). */
  readonly terminated: boolean;
}

export interface ReadProgress {
  readonly bytesRead: number;
  readonly lines: number;
}

/**
 * Stream the lines of an export (a path or a readable stream), without holding the file in
 * memory. A `\r` before `\n` is dropped. `onChunk` is called after each chunk with the progress.
 */
export async function* readExportLines(source: string | Readable, onChunk?: (p: ReadProgress) => void): AsyncGenerator<RawLine> {
  const stream = typeof source === 'string' ? createReadStream(source, { highWaterMark: 1 << 20 }) : source;
  stream.setEncoding('utf8');
  let rest = '';
  let line = 0;
  let bytesRead = 0;
  for await (const chunk of stream as AsyncIterable<string>) {
    bytesRead += Buffer.byteLength(chunk);
    const text = rest + chunk;
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      const end = nl > start && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      line++;
      yield { line, text: text.slice(start, end), terminated: true };
      start = nl + 1;
    }
    rest = text.slice(start);
    onChunk?.({ bytesRead, lines: line });
  }
  if (rest !== '') {
    line++;
    yield { line, text: rest, terminated: false };
  }
}

/**
 * Byte-level line scan: `onLine` gets the chunk buffer and the line's byte range (without `\r\n`
 * or `\n`), so a caller can hash bytes without decoding them. The buffer belongs to the caller
 * from then on (it may modify the range it was given).
 */
export async function scanExportLineBytes(
  source: string | Readable,
  onLine: (line: number, buf: Buffer, start: number, end: number, terminated: boolean) => void,
  onChunk?: (p: ReadProgress) => void,
): Promise<ReadProgress> {
  const stream = typeof source === 'string' ? createReadStream(source, { highWaterMark: 1 << 20 }) : source;
  let rest: Buffer | undefined;
  let line = 0;
  let bytesRead = 0;
  for await (const raw of stream as AsyncIterable<Buffer | string>) {
    const chunk = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
    bytesRead += chunk.length;
    const buf = rest === undefined ? chunk : Buffer.concat([rest, chunk]);
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(10, start);
      if (nl < 0) break;
      const end = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl;
      onLine(++line, buf, start, end, true);
      start = nl + 1;
    }
    rest = start < buf.length ? buf.subarray(start) : undefined;
    onChunk?.({ bytesRead, lines: line });
  }
  if (rest !== undefined) onLine(++line, rest, 0, rest.length, false);
  return { bytesRead, lines: line };
}
