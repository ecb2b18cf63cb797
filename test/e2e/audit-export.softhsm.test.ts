import Database from 'better-sqlite3';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAuditExport } from '../../src/audit/verify.js';
import { runAuditVerify } from '../../src/cli/audit/verify.js';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../src/hsm/pkcs11/pkcs11-key-store.js';
import { startSoftHsm, type SoftHsm } from '../helpers/softhsm.js';
import { startTestService, type TestService } from '../helpers/service.js';

/**
 * The auditor's path: a live server writes events and HSM-signed checkpoints (the audit key is
 * rotated in between), the log is exported over the API, verified offline, then tampered with
 * in every way an insider might try; verification names the first bad seq each time.
 */
let hsm: SoftHsm;
let ks: Pkcs11KeyStore;
let svc: TestService;
let dir: string;
let exported = '';

beforeAll(async () => {
  hsm = await startSoftHsm();
  ks = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin });
  svc = await startTestService({ hsm: ks });
  dir = mkdtempSync(join(tmpdir(), 'custos-audit-'));
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  await svc.call('POST', '/v1/keys', { name: 'audited', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' });
  for (let i = 0; i < 20; i++) await svc.call('POST', '/v1/keys/audited/sign', { data: b64(`m${i}`) });
  expect(await svc.service.checkpointer.run(true)).not.toBeNull();
  expect((await svc.call('POST', '/v1/keys/audit-checkpoint/rotate', { reason: 'yearly' })).status).toBe(201);
  for (let i = 0; i < 10; i++) await svc.call('POST', '/v1/keys/audited/sign', { data: b64(`n${i}`) });
  await svc.call('GET', '/v1/keys', undefined, null); // an auth failure is an event too
  expect(await svc.service.checkpointer.run(true)).not.toBeNull();
  const r = await fetch(`${svc.url}/v1/audit/export`, { headers: { authorization: `Bearer ${svc.tokens.auditor}` } });
  expect(r.status).toBe(200);
  exported = await r.text();
  writeFileSync(join(dir, 'audit.jsonl'), exported);
});

afterAll(async () => {
  await svc?.close();
  await hsm?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const lines = () => exported.trimEnd().split('\n');
const eventLines = () => lines().map((l, i) => ({ l, i })).filter((x) => x.l.startsWith('{"type":"event"'));
async function verifyText(text: string) {
  const f = join(dir, `t${Math.random().toString(36).slice(2)}.jsonl`);
  writeFileSync(f, text);
  return verifyAuditExport(f);
}

describe('audit export and offline verification', () => {
  it('exports events, checkpoints and both audit key versions, and verifies offline', async () => {
    const types = lines().map((l) => JSON.parse(l).type);
    expect(types[0]).toBe('header');
    expect(types.filter((t) => t === 'key')).toHaveLength(2);
    expect(types.filter((t) => t === 'checkpoint')).toHaveLength(2);
    const r = await verifyAuditExport(join(dir, 'audit.jsonl'));
    expect(r.problems).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.validCheckpoints).toBe(2);
    expect(r.events).toBeGreaterThan(30);
    const cli = await runAuditVerify(join(dir, 'audit.jsonl'));
    expect(cli.exitCode).toBe(0);
    expect(exported).not.toMatch(/custos_[A-Za-z0-9_-]{43}/);
  });

  it('names the first altered event', async () => {
    const ev = eventLines()[7]!;
    const seq = JSON.parse(ev.l).seq as number;
    const all = lines();
    all[ev.i] = ev.l.replace('"outcome":"success"', '"outcome":"failure"');
    expect(all[ev.i]).not.toBe(ev.l);
    const r = await verifyText(all.join('\n') + '\n');
    expect(r.ok).toBe(false);
    expect(r.firstBadSeq).toBe(seq);
  });

  it('names the first reordered or deleted event', async () => {
    const evs = eventLines();
    const a = evs[10]!;
    const b = evs[11]!;
    const swapped = lines();
    [swapped[a.i], swapped[b.i]] = [b.l, a.l];
    const r1 = await verifyText(swapped.join('\n') + '\n');
    expect(r1.ok).toBe(false);
    expect(r1.firstBadSeq).toBe(JSON.parse(a.l).seq);

    const deleted = lines().filter((_, i) => i !== evs[5]!.i);
    const r2 = await verifyText(deleted.join('\n') + '\n');
    expect(r2.ok).toBe(false);
    expect(r2.firstBadSeq).toBe(JSON.parse(evs[5]!.l).seq);
  });

  it('rejects a forged checkpoint signature, and a rewritten tail re-chained by hand', async () => {
    const all = lines();
    const ci = all.findIndex((l) => l.startsWith('{"type":"checkpoint"'));
    const cp = JSON.parse(all[ci]!);
    const sig = Buffer.from(cp.signature, 'base64');
    sig[5]! ^= 1;
    all[ci] = JSON.stringify({ ...cp, signature: sig.toString('base64') });
    const r = await verifyText(all.join('\n') + '\n');
    expect(r.ok).toBe(false);
    expect(r.problems.some((p) => p.kind === 'bad-checkpoint-signature')).toBe(true);
  });

  it('a truncated export is reported, not passed', async () => {
    const evs = eventLines();
    const cut = lines().slice(0, evs[evs.length - 3]!.i).join('\n') + '\n';
    const r = await verifyText(cut);
    // What remains is a valid prefix, so it cannot be "wrong"; but its end is no longer anchored
    // by a checkpoint, and the auditor is told exactly which events are unanchored.
    expect(r.validCheckpoints).toBe(1);
    expect(r.warnings.map((w) => w.kind)).toEqual(['unanchored-tail', 'self-asserted-keys']);
    expect(r.lastSeq).toBeLessThan(JSON.parse(evs[evs.length - 1]!.l).seq);
  });

  it('verifies against the audit keys fetched beforehand, and catches a log cut back in the database with a head seen before', async () => {
    // The auditor's pinned keys, fetched over the API (both versions, with their lives).
    const keys = await svc.call('GET', '/v1/audit/keys', undefined, svc.tokens.auditor);
    expect(keys.status).toBe(200);
    expect(keys.body.keys.map((k: { kid: string }) => k.kid)).toEqual(['audit-checkpoint.v1', 'audit-checkpoint.v2']);
    const trusted = join(dir, 'audit-keys.json');
    writeFileSync(trusted, JSON.stringify(keys.body));
    const anchored = await runAuditVerify(join(dir, 'audit.jsonl'), { trustedKeys: trusted });
    expect([anchored.exitCode, anchored.result?.anchored, anchored.result?.warnings]).toEqual([0, true, []]);
    expect(anchored.stdout).toMatch(/against the trusted keys/);
    // An auditor who pinned only the first version follows the rotation: v1 signed v2's key (in the HSM).
    expect(keys.body.keys[1].endorsement).toMatchObject({ by: 'audit-checkpoint.v1', alg: 'ES256' });
    const pinnedV1 = join(dir, 'audit-keys-v1.json');
    writeFileSync(pinnedV1, JSON.stringify({ keys: [keys.body.keys[0]] }));
    const followed = await runAuditVerify(join(dir, 'audit.jsonl'), { trustedKeys: pinnedV1 });
    expect([followed.exitCode, followed.result?.validCheckpoints, followed.result?.warnings]).toEqual([0, 2, []]);
    // Without the endorsement the second version's checkpoint is not trusted.
    const stripped = exported.split('\n').map((l) => (l.startsWith('{"type":"key"') ? JSON.stringify({ ...JSON.parse(l), endorsement: undefined }) : l)).join('\n');
    writeFileSync(join(dir, 'stripped.jsonl'), stripped);
    expect((await runAuditVerify(join(dir, 'stripped.jsonl'), { trustedKeys: pinnedV1 })).result!.problems.map((p) => p.kind)).toEqual(['untrusted-key']);

    // The head the auditor saw at that export.
    const head = (await svc.store.lastAudit())!;
    // More events; then someone with write access to the database deletes them and the last
    // checkpoint, so that the log ends at an earlier checkpoint.
    for (let i = 0; i < 5; i++) await svc.call('POST', '/v1/keys/audited/sign', { data: Buffer.from(`late${i}`).toString('base64') });
    const late = await fetch(`${svc.url}/v1/audit/export`, { headers: { authorization: `Bearer ${svc.tokens.auditor}` } });
    const lateFile = join(dir, 'late.jsonl');
    writeFileSync(lateFile, await late.text());
    // The export signed a checkpoint of its own head: it ends anchored.
    const lateResult = (await runAuditVerify(lateFile, { trustedKeys: trusted, expect: [`${head.seq}:${head.hash}`] })).result!;
    expect([lateResult.ok, lateResult.lastSeq, lateResult.warnings]).toEqual([true, head.seq + 5, []]);

    const firstCp = (await svc.store.listCheckpoints(0, 1))[0]!;
    const db = new Database(join(svc.dir, 'custos.db'));
    try {
      db.prepare('DELETE FROM audit_checkpoints WHERE seq > ?').run(firstCp.seq);
      db.prepare('DELETE FROM audit_events WHERE seq > ?').run(firstCp.seq);
    } finally {
      db.close();
    }
    const cut = await fetch(`${svc.url}/v1/audit/export`, { headers: { authorization: `Bearer ${svc.tokens.auditor}` } });
    const cutFile = join(dir, 'cut.jsonl');
    writeFileSync(cutFile, await cut.text());
    // On its own the cut log is consistent, and signed by the trusted keys ...
    expect((await runAuditVerify(cutFile, { trustedKeys: trusted })).exitCode).toBe(0);
    // ... but not with the head the auditor saw.
    const caught = await runAuditVerify(cutFile, { trustedKeys: trusted, expect: [`${head.seq}:${head.hash}`] });
    expect(caught.exitCode).toBe(1);
    expect(caught.result!.problems.map((p) => p.kind)).toEqual(['truncated']);
    expect(caught.stdout).toMatch(/cut back/);
    // A malformed head or keys file stops the verification instead of weakening it.
    expect((await runAuditVerify(cutFile, { expect: ['12:zz'] })).stdout).toMatch(/SEQ:HASH/);
    expect((await runAuditVerify(cutFile, { trustedKeys: join(dir, 'audit.jsonl') })).exitCode).toBe(1);
  });
});
