import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeEventHash, endorsementSigningInput, type AuditEvent } from '../../../src/audit/chain.js';
import { auditExportLines, readExportLines } from '../../../src/audit/export-format.js';
import { loadTrustedKeys, verifyAuditExport } from '../../../src/audit/verify.js';
import { makeCheckpoint, makeEvents, makeSigner, writeExport, type Signer } from './fixtures.js';

let dir: string;
let signer: Signer;
let events: AuditEvent[];
let good: string;
let goodLines: string[];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'custos-audit-'));
  signer = makeSigner('ES256');
  events = makeEvents(30);
  good = join(dir, 'good.jsonl');
  await writeExport(good, events, [makeCheckpoint(signer, events[9]!), makeCheckpoint(signer, events[19]!), makeCheckpoint(signer, events[29]!)], [signer.keyLine]);
  goodLines = readFileSync(good, 'utf8').split('\n');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Line index (0-based) of the event with this seq in the good file. */
const lineOf = (seq: number) => goodLines.findIndex((l) => l.startsWith('{"type":"event"') && JSON.parse(l).seq === seq);

function variant(name: string, lines: string[]): string {
  const p = join(dir, name);
  writeFileSync(p, lines.join('\n'));
  return p;
}

describe('export format', () => {
  it('writes header, keys, then events with each checkpoint right after its event', () => {
    const types = goodLines.filter(Boolean).map((l) => JSON.parse(l).type as string);
    expect(types[0]).toBe('header');
    expect(types[1]).toBe('key');
    expect(types.filter((t) => t === 'event')).toHaveLength(30);
    const cpIdx = goodLines.findIndex((l) => l.startsWith('{"type":"checkpoint"'));
    expect(JSON.parse(goodLines[cpIdx - 1]!).seq).toBe(10);
    expect(JSON.parse(goodLines[0]!)).toMatchObject({ format: 'custos-audit-export', version: 1, range: { firstSeq: 1, lastSeq: 30 } });
  });

  it('event lines carry every field and round-trip', () => {
    const e = JSON.parse(goodLines[lineOf(13)]!);
    expect(e).toEqual({ type: 'event', ...events[12] });
  });

  it('streams lines back with their numbers', async () => {
    const got: number[] = [];
    for await (const l of readExportLines(good)) if (l.text.startsWith('{"type":"header"')) got.push(l.line);
    expect(got).toEqual([1]);
  });

  it('the generator yields the same text as the writer', async () => {
    let text = '';
    for await (const l of auditExportLines({ exportedAt: '2026-06-01T00:00:00.000Z', issuer: 'https://custos.test', range: { firstSeq: 1, lastSeq: 30 }, keys: [signer.keyLine], events, checkpoints: [makeCheckpoint(signer, events[29]!)] })) text += l;
    expect(text.split('\n').filter((l) => l.startsWith('{"type":"event"'))).toEqual(goodLines.filter((l) => l.startsWith('{"type":"event"')));
  });
});

describe('verifyAuditExport', () => {
  it('accepts an intact export', async () => {
    const progress: number[] = [];
    const r = await verifyAuditExport(good, { onProgress: (p) => progress.push(p.bytesRead) });
    expect(r).toMatchObject({ ok: true, events: 30, checkpoints: 3, validCheckpoints: 3, firstSeq: 1, lastSeq: 30, problems: [], anchored: false });
    // With no trusted keys the file vouches for itself, and the result says so.
    expect(r.warnings).toEqual([expect.objectContaining({ kind: 'self-asserted-keys' })]);
    expect(r.firstBadSeq).toBeUndefined();
    expect(progress.length).toBeGreaterThan(0);
  });

  it('accepts a stream, strict canonical mode, and CRLF line ends', async () => {
    expect((await verifyAuditExport(Readable.from([readFileSync(good)]))).ok).toBe(true);
    expect((await verifyAuditExport(good, { strictCanonical: true })).ok).toBe(true);
    expect((await verifyAuditExport(variant('crlf.jsonl', goodLines.map((l) => (l ? l + '\r' : l))))).ok).toBe(true);
  });

  it('accepts event lines in another key order (canonicalising them)', async () => {
    const lines = [...goodLines];
    const i = lineOf(7);
    const e = JSON.parse(lines[i]!);
    lines[i] = JSON.stringify({ hash: e.hash, details: e.details, seq: e.seq, type: 'event', time: e.time, actor: e.actor, action: e.action, subject: e.subject, outcome: e.outcome, prevHash: e.prevHash });
    expect((await verifyAuditExport(variant('order.jsonl', lines))).ok).toBe(true);
  });

  it('names a tampered event (content changed, hash kept)', async () => {
    const lines = [...goodLines];
    const i = lineOf(13);
    lines[i] = lines[i]!.replace('"user:alice"', '"user:mallory"');
    const r = await verifyAuditExport(variant('tampered.jsonl', lines));
    expect(r.ok).toBe(false);
    expect(r.firstBadSeq).toBe(13);
    expect(r.firstBadLine).toBe(i + 1);
    expect(r.problems[0]).toMatchObject({ seq: 13, kind: "bad-hash" });
  });

  it('finds a rewritten event whose hash was recomputed: the link breaks and the checkpoint disagrees', async () => {
    const lines = [...goodLines];
    const i = lineOf(15);
    const e = JSON.parse(lines[i]!);
    const body = { ...e, actor: 'user:mallory' };
    const hash = computeEventHash(e.prevHash, body);
    lines[i] = JSON.stringify({ ...body, hash });
    const r = await verifyAuditExport(variant('rewritten.jsonl', lines));
    expect(r.firstBadSeq).toBe(16);
    expect(r.problems.map((p) => p.kind)).toEqual(['broken-link']);
  });

  it('finds a history rewritten to the end by its checkpoint', async () => {
    const evs = makeEvents(30);
    const forged = [...evs.slice(0, 24), ...makeEvents(6, 25, evs[23]!.hash).map((e) => e)];
    const changed = forged.map((e) => ({ ...e }));
    // Rewrite event 25 onwards with other content and consistent hashes; the signed checkpoint at 30 still names the old head.
    let prev = changed[23]!.hash;
    for (let k = 24; k < 30; k++) {
      const b = { ...changed[k]!, subject: 'key:forged' };
      const hash = computeEventHash(prev, b);
      changed[k] = { ...b, prevHash: prev, hash };
      prev = hash;
    }
    const p = join(dir, 'history.jsonl');
    await writeExport(p, changed, [makeCheckpoint(signer, evs[19]!), makeCheckpoint(signer, evs[29]!)], [signer.keyLine]);
    const r = await verifyAuditExport(p);
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([expect.objectContaining({ seq: 30, kind: 'checkpoint-mismatch' })]);
    expect(r.warnings[0]).toMatchObject({ kind: 'unanchored-tail', fromSeq: 21, toSeq: 30 });
  });

  it("accepts a line in the writer's layout whose body members come in another order", async () => {
    const lines = [...goodLines];
    const i = lineOf(8);
    const e = JSON.parse(lines[i]!);
    // The writer's prefix (type, prevHash, hash), then the body's members in reverse order.
    lines[i] = JSON.stringify({ type: 'event', prevHash: e.prevHash, hash: e.hash, subject: e.subject, seq: e.seq, outcome: e.outcome, details: e.details, time: e.time, actor: e.actor, action: e.action });
    const r = await verifyAuditExport(variant('prefix-order.jsonl', lines));
    expect(r.problems).toEqual([]);
    lines[i] = lines[i]!.replace(`"subject":${JSON.stringify(e.subject)}`, '"subject":"key:other"');
    expect((await verifyAuditExport(variant('prefix-order-bad.jsonl', lines))).problems[0]).toMatchObject({ seq: 8, kind: 'bad-hash' });
  });

  it('names the first of two swapped events as reordered', async () => {
    const lines = [...goodLines];
    const a = lineOf(5);
    const b = lineOf(6);
    [lines[a], lines[b]] = [lines[b]!, lines[a]!];
    const r = await verifyAuditExport(variant('swapped.jsonl', lines));
    expect(r.firstBadSeq).toBe(5);
    expect(r.problems.map((p) => [p.seq, p.kind])).toEqual([[5, 'reordered']]);
    expect(r.problems.find((p) => p.seq === 5)).toBeDefined();
  });

  it('names a deleted event as a gap', async () => {
    const lines = goodLines.filter((_, i) => i !== lineOf(8));
    const r = await verifyAuditExport(variant('deleted.jsonl', lines));
    expect(r.firstBadSeq).toBe(8);
    expect(r.problems[0]).toMatchObject({ seq: 8, kind: 'seq-gap' });
  });

  it('names a deleted first event', async () => {
    const r = await verifyAuditExport(variant('nofirst.jsonl', goodLines.filter((_, i) => i !== lineOf(1))));
    expect(r.firstBadSeq).toBe(1);
    expect(r.problems[0]).toMatchObject({ kind: 'seq-gap' });
  });

  it('names a file cut short, cleanly or mid-line', async () => {
    const cut = lineOf(27);
    const clean = await verifyAuditExport(variant('cut.jsonl', goodLines.slice(0, cut)));
    expect(clean.firstBadSeq).toBe(27);
    expect(clean.problems.map((p) => p.kind)).toContain('truncated');
    const mid = await verifyAuditExport(variant('mid.jsonl', [...goodLines.slice(0, cut), goodLines[cut]!.slice(0, 40)]));
    expect(mid.firstBadSeq).toBe(27);
    expect(mid.problems.map((p) => p.kind)).toEqual(expect.arrayContaining(['truncated']));
  });

  it('rejects a bad checkpoint signature and an unknown signing key', async () => {
    const lines = [...goodLines];
    const i = lines.findIndex((l) => l.startsWith('{"type":"checkpoint"'));
    const cp = JSON.parse(lines[i]!);
    const sig = Buffer.from(cp.signature, 'base64');
    sig[5] ^= 1;
    lines[i] = JSON.stringify({ ...cp, signature: sig.toString('base64') });
    const r = await verifyAuditExport(variant('badsig.jsonl', lines));
    expect(r.problems).toEqual([expect.objectContaining({ seq: 10, kind: 'bad-checkpoint-signature', line: i + 1 })]);

    const moved = [...goodLines];
    moved[i] = JSON.stringify({ ...cp, seq: 11 });
    expect((await verifyAuditExport(variant('movedcp.jsonl', moved))).problems[0]).toMatchObject({ kind: 'bad-checkpoint-signature' });

    const noKey = goodLines.filter((l) => !l.startsWith('{"type":"key"'));
    const r2 = await verifyAuditExport(variant('nokey.jsonl', noKey));
    expect(r2.problems.map((p) => p.kind)).toEqual(['unknown-key', 'unknown-key', 'unknown-key']);
  });

  it('refuses a checkpoint signed by a key the export marks compromised before it', async () => {
    const compromised = { ...signer.keyLine, states: [{ state: 'active', at: '2026-01-01T00:00:00.000Z' }, { state: 'compromised', at: '2026-01-01T00:00:15.000Z' }] };
    const p = join(dir, 'compromised.jsonl');
    await writeExport(p, events, [makeCheckpoint(signer, events[9]!), makeCheckpoint(signer, events[29]!)], [compromised]);
    const r = await verifyAuditExport(p);
    expect(r.problems).toEqual([expect.objectContaining({ seq: 30, kind: 'bad-checkpoint-signature' })]);
  });

  it('warns about an unanchored tail without failing', async () => {
    const p = join(dir, 'tail.jsonl');
    await writeExport(p, events, [makeCheckpoint(signer, events[19]!)], [signer.keyLine]);
    const r = await verifyAuditExport(p);
    expect(r.ok).toBe(true);
    expect(r.warnings).toEqual([expect.objectContaining({ kind: 'unanchored-tail', fromSeq: 21, toSeq: 30 }), expect.objectContaining({ kind: 'self-asserted-keys' })]);
  });

  it('verifies ES384 (DER and raw), RS256 and PS256 checkpoints and PEM keys', async () => {
    const s384 = makeSigner('ES384', 'a384', true);
    const rs = makeSigner('RS256', 'rs');
    const ps = makeSigner('PS256', 'ps', true);
    const p = join(dir, 'algs.jsonl');
    await writeExport(p, events, [makeCheckpoint(s384, events[4]!, true), makeCheckpoint(s384, events[9]!), makeCheckpoint(rs, events[14]!), makeCheckpoint(ps, events[29]!)], [s384.keyLine, rs.keyLine, ps.keyLine]);
    const r = await verifyAuditExport(p);
    expect(r.problems).toEqual([]);
    expect(r.validCheckpoints).toBe(4);
  });

  it('rejects a key line whose key does not fit its algorithm', async () => {
    const lines = [...goodLines];
    const i = lines.findIndex((l) => l.startsWith('{"type":"key"'));
    lines[i] = JSON.stringify({ ...JSON.parse(lines[i]!), alg: 'ES384' });
    const r = await verifyAuditExport(variant('keyalg.jsonl', lines));
    expect(r.problems.map((p) => p.kind)).toEqual(['malformed', 'unknown-key', 'unknown-key', 'unknown-key']);
  });

  it('reports malformed lines, a missing header and a body that is not canonical in strict mode', async () => {
    const lines = [...goodLines];
    lines.splice(lineOf(3), 0, '{not json');
    const r = await verifyAuditExport(variant('garbage.jsonl', lines));
    expect(r.problems[0]).toMatchObject({ kind: 'malformed', line: lineOf(3) + 1 });
    const noHeader = await verifyAuditExport(variant('nohead.jsonl', goodLines.slice(1)));
    expect(noHeader.problems[0]).toMatchObject({ kind: 'malformed', line: 1 });
    expect((await verifyAuditExport(variant('empty.jsonl', [])))).toMatchObject({ ok: false });
    const spaced = [...goodLines];
    const j = lineOf(4);
    spaced[j] = spaced[j]!.replace('"actor":', '"actor": ');
    const strict = await verifyAuditExport(variant('spaced.jsonl', spaced), { strictCanonical: true });
    expect(strict.problems[0]).toMatchObject({ seq: 4, kind: 'malformed' });
    // Outside strict mode, JSON whitespace is no change: the body is canonicalised and its hash holds.
    expect((await verifyAuditExport(variant('spaced2.jsonl', spaced))).ok).toBe(true);
  });

  it('survives a seq damaged to a huge number and names the event', async () => {
    const lines = [...goodLines];
    const i = lineOf(6);
    lines[i] = lines[i]!.replace('"seq":6,', '"seq":900719925474099,');
    const r = await verifyAuditExport(variant('hugeseq.jsonl', lines));
    expect(r.ok).toBe(false);
    expect(r.firstBadSeq).toBe(6);
  });

  it('names a duplicated event', async () => {
    const lines = [...goodLines];
    lines.splice(lineOf(9) + 1, 0, lines[lineOf(9)]!);
    const r = await verifyAuditExport(variant('dup.jsonl', lines));
    expect(r.firstBadSeq).toBe(9);
    expect(r.problems[0]).toMatchObject({ kind: 'reordered' });
  });
});

describe('anchoring outside the file: trusted keys and chain heads seen before', () => {
  const trustedOf = (...ks: Signer[]) => loadTrustedKeys(JSON.stringify({ keys: ks.map((k) => k.keyLine) }));

  /** The attack the trusted keys stop: history rewritten, then the file re-signed with a key of the rewriter's. */
  async function resigned(kid: string): Promise<string> {
    const mallory = makeSigner('ES256', kid);
    const changed: AuditEvent[] = [];
    let prev = events[0]!.prevHash;
    for (const e of events) {
      const body = { ...e, ...(e.seq === 12 ? { actor: 'user:nobody' } : {}), prevHash: prev };
      const hash = computeEventHash(prev, body);
      changed.push({ ...body, hash });
      prev = hash;
    }
    const p = join(dir, `resigned-${kid}.jsonl`);
    await writeExport(p, changed, [makeCheckpoint(mallory, changed[9]!), makeCheckpoint(mallory, changed[29]!)], [mallory.keyLine]);
    return p;
  }

  it('with the trusted keys, an intact export is anchored and has no warning', async () => {
    const r = await verifyAuditExport(good, { trustedKeys: trustedOf(signer) });
    expect(r).toMatchObject({ ok: true, anchored: true, validCheckpoints: 3, warnings: [] });
  });

  it('a history rewritten and re-signed under the same kid passes on its own keys, and fails against the trusted ones', async () => {
    const p = await resigned(signer.kid);
    const alone = await verifyAuditExport(p);
    expect(alone).toMatchObject({ ok: true, anchored: false });
    expect(alone.warnings.map((w) => w.kind)).toContain('self-asserted-keys');
    const r = await verifyAuditExport(p, { trustedKeys: trustedOf(signer) });
    expect(r.ok).toBe(false);
    expect(r.problems.map((x) => x.kind)).toEqual(['untrusted-key', 'bad-checkpoint-signature', 'bad-checkpoint-signature']);
  });

  it('a checkpoint by a kid that is not trusted is refused, whatever the file lists', async () => {
    const r = await verifyAuditExport(await resigned('audit-mallory'), { trustedKeys: trustedOf(signer) });
    expect(r.problems.map((x) => [x.kind, x.seq])).toEqual([['untrusted-key', 10], ['untrusted-key', 30]]);
  });

  it('a compromise recorded by the trusted keys stops the checkpoints signed after it', async () => {
    const compromised = { ...signer.keyLine, states: [{ state: 'active', at: '2026-01-01T00:00:00.000Z' }, { state: 'compromised', at: '2026-01-01T00:00:15.000Z' }] };
    const r = await verifyAuditExport(good, { trustedKeys: loadTrustedKeys(JSON.stringify({ keys: [compromised] })) });
    expect(r.problems.map((x) => [x.kind, x.seq])).toEqual([['bad-checkpoint-signature', 20], ['bad-checkpoint-signature', 30]]);
  });

  it('a log cut back to an earlier checkpoint passes on its own, and fails against a chain head seen before', async () => {
    // Events 21..30 and their checkpoint gone, the header's range edited to match: an older export, to all appearances.
    const p = join(dir, 'cut.jsonl');
    await writeExport(p, events.slice(0, 20), [makeCheckpoint(signer, events[9]!), makeCheckpoint(signer, events[19]!)], [signer.keyLine]);
    expect((await verifyAuditExport(p, { trustedKeys: trustedOf(signer) })).ok).toBe(true);
    const seen = { seq: 30, hash: events[29]!.hash };
    const r = await verifyAuditExport(p, { trustedKeys: trustedOf(signer), witnesses: [seen] });
    expect(r.problems).toEqual([expect.objectContaining({ kind: 'truncated', seq: 30 })]);
    // A head that is in the file must carry the hash seen.
    const other = await verifyAuditExport(good, { witnesses: [{ seq: 12, hash: events[12]!.hash }] });
    expect(other.problems).toEqual([expect.objectContaining({ kind: 'witness-mismatch', seq: 12 })]);
    expect((await verifyAuditExport(good, { witnesses: [seen, { seq: 5, hash: events[4]!.hash.toUpperCase() }] })).ok).toBe(true);
  });

  it('a version endorsed by a trusted one is trusted in turn (rotations followed); a forged or late endorsement is not', async () => {
    const v2 = makeSigner('ES256', 'audit-checkpoint.v2');
    const v3 = makeSigner('ES256', 'audit-checkpoint.v3');
    const endorse = (by: Signer, of: Signer, time = '2026-01-01T00:00:10.000Z') => ({
      by: by.kid, alg: by.alg, time,
      signature: by.sign(endorsementSigningInput({ kid: of.kid, jwk: (of.keyLine as { jwk: Record<string, unknown> }).jwk, by: by.kid, time })).toString('base64'),
    });
    const write = async (name: string, keys: Record<string, unknown>[]) => {
      const p = join(dir, name);
      await writeExport(p, events, [makeCheckpoint(signer, events[9]!), makeCheckpoint(v2, events[19]!), makeCheckpoint(v3, events[29]!)], keys as never);
      return p;
    };
    // v1 (pinned) endorsed v2, v2 endorsed v3: all three checkpoints verify against v1 alone.
    const chained = await write('endorsed.jsonl', [signer.keyLine, { ...v2.keyLine, endorsement: endorse(signer, v2) }, { ...v3.keyLine, endorsement: endorse(v2, v3) }]);
    expect(await verifyAuditExport(chained, { trustedKeys: trustedOf(signer) })).toMatchObject({ ok: true, anchored: true, validCheckpoints: 3, warnings: [] });
    // v3 vouching for itself, or a stranger vouching for it: not trusted.
    const mallory = makeSigner('ES256', 'audit-checkpoint.v9');
    for (const forged of [endorse(v3, v3), { ...endorse(mallory, v3), by: v2.kid }]) {
      const p = await write('forged-endorsement.jsonl', [signer.keyLine, { ...v2.keyLine, endorsement: endorse(signer, v2) }, { ...v3.keyLine, endorsement: forged }]);
      expect((await verifyAuditExport(p, { trustedKeys: trustedOf(signer) })).problems.map((x) => [x.kind, x.seq])).toEqual([['untrusted-key', 30]]);
    }
    // An endorsement signed after its endorser was compromised vouches for nothing.
    const compromisedV1 = { ...signer.keyLine, states: [{ state: 'active', at: '2026-01-01T00:00:00.000Z' }, { state: 'compromised', at: '2026-01-01T00:00:05.000Z' }] };
    const late = await write('late-endorsement.jsonl', [compromisedV1, { ...v2.keyLine, endorsement: endorse(signer, v2) }, { ...v3.keyLine, endorsement: endorse(v2, v3) }]);
    expect((await verifyAuditExport(late, { trustedKeys: trustedOf(signer) })).problems.map((x) => [x.kind, x.seq])).toEqual([['bad-checkpoint-signature', 10], ['untrusted-key', 20], ['untrusted-key', 30]]);
  });

  it('refuses trusted keys that do not parse, rather than verifying without them', () => {
    expect(() => loadTrustedKeys('not json')).toThrow(/not JSON/);
    expect(() => loadTrustedKeys('{"keys":[]}')).toThrow(/at least one key/);
    expect(() => loadTrustedKeys(JSON.stringify({ keys: [{ ...signer.keyLine, alg: 'HS256' }] }))).toThrow(/alg/);
    expect(() => loadTrustedKeys(JSON.stringify({ keys: [{ ...signer.keyLine, alg: 'ES384' }] }))).toThrow(/not a public key for ES384/);
    expect(() => loadTrustedKeys(JSON.stringify({ keys: [signer.keyLine, signer.keyLine] }))).toThrow(/twice/);
    // A plain JWK Set works too.
    const jwks = { keys: [{ ...(signer.keyLine as { jwk: Record<string, unknown> }).jwk, kid: signer.kid, alg: 'ES256' }] };
    expect(loadTrustedKeys(JSON.stringify(jwks)).get(signer.kid)?.alg).toBe('ES256');
  });
});

describe('bounded memory on hostile input', () => {
  it('a few lines with huge, growing seqs and wide gaps do not make the verifier allocate without bound', async () => {
    const lines = [goodLines[0]!];
    let prev = events[0]!.prevHash;
    // Each seq just inside the reach a dense table sized by its own length would give it: such a
    // table would more than double at every line (here to 7 million slots, 450 MB).
    const seqs = [1];
    for (let len = 4096, k = 0; k < 3; k++) {
      const idx = 2 * len + 1_000_000 - 1;
      len = Math.max(len * 2, idx + 1);
      seqs.push(idx + 1);
    }
    for (let k = 1; k <= 6; k++) seqs.push(seqs[seqs.length - 1]! + 99_999);
    for (const seq of seqs) {
      const body = { ...events[1]!, seq, prevHash: prev };
      const hash = computeEventHash(prev, body);
      lines.push(JSON.stringify({ type: 'event', ...body, hash }));
      prev = hash;
    }
    const before = process.memoryUsage().arrayBuffers;
    const r = await verifyAuditExport(variant('hostile.jsonl', lines));
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 << 20);
    expect(r.ok).toBe(false);
    expect(r.problems.filter((p) => p.kind === 'seq-gap')).toHaveLength(9);
  });
});

