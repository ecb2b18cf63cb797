import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { composeService } from '../../../src/compose.js';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { ManualClock } from '../../../src/lib/clock.js';
import { CustosError } from '../../../src/lib/errors.js';
import { PolicyError } from '../../../src/policy/policy-error.js';
import { startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';
import { startTestService, type TestService } from '../../helpers/service.js';

/**
 * The key lifecycle driven by the scheduler over simulated weeks on a manual clock, against a
 * real SoftHSM2 token: pre-active → active → deactivated → destroy-scheduled → destroyed, manual
 * compromise with immediate rotation, cancelled destruction, and what each state allows.
 */
const DAY = 86_400_000;
let hsm: SoftHsm;
let ks: Pkcs11KeyStore;
let svc: TestService;
let dir: string;
const clock = new ManualClock(Date.UTC(2027, 2, 1, 12));
const b64 = (s: string) => Buffer.from(s).toString('base64');

beforeAll(async () => {
  hsm = await startSoftHsm();
  ks = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin });
  dir = mkdtempSync(join(tmpdir(), 'custos-life-'));
  mkdirSync(join(dir, 'rotation'));
  writeFileSync(join(dir, 'rotation', 'weekly.yaml'), [
    'id: weekly', 'version: 1', 'profile: test', 'selector:', '  names: ["life-*"]',
    'rotateEvery: P7D', 'prePublish: P1D', 'deactivateAfter: P3D', 'destroyAfter: P5D', 'destroyPendingWindow: P2D', '',
  ].join('\n'));
  svc = await startTestService({ hsm: ks, clock, env: { CUSTOS_POLICY_DIR: dir } });
  expect((await svc.call('POST', '/v1/keys', { name: 'life-sig', type: 'ec-p256', purpose: 'sign' })).status).toBe(201);
  expect((await svc.call('POST', '/v1/keys', { name: 'life-data', type: 'aes-256', purpose: 'encrypt' })).status).toBe(201);
});

afterAll(async () => {
  await svc?.close();
  await hsm?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const states = async (name: string) => (await svc.call('GET', `/v1/keys/${name}`)).body.versions.map((v: { state: string }) => v.state);
async function runUntil(ms: number): Promise<void> {
  const end = clock.now().getTime() + ms;
  while (clock.now().getTime() < end) {
    clock.advance(Math.min(6 * 3600_000, end - clock.now().getTime()));
    await svc.service.rotation.tick();
  }
}

describe('key lifecycle under the scheduler (SoftHSM2, simulated time)', () => {
  it('shows the plan before anything happens', async () => {
    const p = await svc.call('GET', '/v1/rotation/plan?days=14', undefined, svc.tokens.auditor);
    const forSig = p.body.steps.filter((s: { key: string }) => s.key === 'life-sig').map((s: { action: string }) => s.action);
    expect(forSig.slice(0, 4)).toEqual(['create-pre-active', 'activate', 'schedule-destroy', 'destroy']);
    expect(p.body.unresolved).toEqual([]);
  });

  it('publishes the next version a day early, then swaps it in: one active version at every tick', async () => {
    const sig = await svc.call('POST', '/v1/keys/life-sig/sign', { data: b64('v1 era') });
    const ct = (await svc.call('POST', '/v1/keys/life-data/encrypt', { plaintext: b64('v1 data') })).body.ciphertext;
    await runUntil(6 * DAY + 6 * 3600_000);
    expect(await states('life-sig')).toEqual(['active', 'pre-active']);
    await runUntil(1 * DAY);
    expect(await states('life-sig')).toEqual(['deactivated', 'active']);
    // deactivated: verify and decrypt only
    expect((await svc.call('POST', '/v1/keys/life-sig/verify', { data: b64('v1 era'), signature: sig.body.signature })).body).toMatchObject({ valid: true, version: 1 });
    expect((await svc.call('POST', '/v1/keys/life-data/decrypt', { ciphertext: ct })).body.plaintext).toBe(b64('v1 data'));
    expect((await svc.call('POST', '/v1/keys/life-sig/sign', { data: b64('x'), version: 1 })).body.error.code).toBe('ERR_KEY_STATE');
    await runUntil(3 * DAY + 12 * 3600_000);
    expect(await states('life-sig')).toEqual(['destroy-scheduled', 'active']);
    // inside the pending window the destruction can be cancelled, and that is audited
    // cancelling is only for a scheduled destruction: the active version is refused and stays active
    const wrong = await svc.call('POST', '/v1/keys/life-sig/versions/2/cancel-destroy', {}, svc.tokens.operator);
    expect(wrong.status).toBe(409);
    expect(wrong.body.error.code).toBe('ERR_KEY_STATE');
    expect(await states('life-sig')).toEqual(['destroy-scheduled', 'active']);
    const c = await svc.call('POST', '/v1/keys/life-sig/versions/1/cancel-destroy', {}, svc.tokens.operator);
    expect(c.body.state).toBe('deactivated');
    expect((await svc.store.listAudit(0, 10_000)).some((e) => e.action === 'key.destroy-cancelled')).toBe(true);
    // the scheduler schedules it again and, after the window, destroys the HSM object
    await runUntil(3 * DAY);
    expect((await states('life-sig'))[0]).toBe('destroyed');
    const v1 = (await svc.call('GET', '/v1/keys/life-sig')).body.versions[0];
    const hsmId = (await svc.store.listVersions('life-sig'))[0]!.hsmId;
    expect(await ks.findKey(hsmId)).toBeNull();
    expect(await ks.findKey((await svc.store.listVersions('life-sig'))[1]!.hsmId)).not.toBeNull();
    const destroyed = await svc.call('POST', '/v1/keys/life-sig/verify', { data: b64('v1 era'), signature: sig.body.signature, version: 1 });
    expect(destroyed.status).toBe(410);
    expect(destroyed.body.error.code).toBe('ERR_KEY_DESTROYED');
    expect((await svc.call('POST', '/v1/keys/life-data/decrypt', { ciphertext: ct })).body.error.code).toBe('ERR_KEY_DESTROYED');
    // metadata stays
    expect(v1).toMatchObject({ version: 1, state: 'destroyed', kid: 'life-sig.v1' });
  });

  it('compromise: the active version is replaced at once and leaves JWKS-eligible states', async () => {
    const before = (await svc.call('GET', '/v1/keys/life-sig')).body.versions;
    const active = before.find((v: { state: string }) => v.state === 'active');
    const r = await svc.call('POST', `/v1/keys/life-sig/versions/${active.version}/compromise`, { reason: 'key file seen in a backup' }, svc.tokens.operator);
    expect(r.status).toBe(200);
    expect(r.body.compromised.state).toBe('compromised');
    expect(r.body.replacement.state).toBe('active');
    const after = await states('life-sig');
    expect(after.filter((s: string) => s === 'active')).toHaveLength(1);
    expect((await svc.call('POST', '/v1/keys/life-sig/sign', { data: b64('x') })).body.version).toBe(r.body.replacement.version);
    const ev = (await svc.store.listAudit(0, 10_000)).find((e) => e.action === 'key.compromise');
    expect(ev?.details).toMatchObject({ reason: 'key file seen in a backup', to: 'compromised' });
  });
});

describe('rotation report', () => {
  it('lists nothing overdue while the scheduler keeps up, and flags what falls behind', async () => {
    const ok = await svc.call('GET', '/v1/rotation/report', undefined, svc.tokens.auditor);
    expect(ok.status).toBe(200);
    expect(ok.body.overdue).toEqual([]);
    expect(Object.keys(ok.body).sort()).toEqual(['generatedAt', 'overdue', 'pastCryptoperiod', 'unresolved', 'upcomingDestructions', 'upcomingRotations']);
    clock.advance(20 * DAY); // the scheduler is stopped: steps pile up
    const late = await svc.call('GET', '/v1/rotation/report', undefined, svc.tokens.auditor);
    expect(late.body.overdue.length).toBeGreaterThan(0);
    expect(late.body.overdue.every((o: { overdueMs: number }) => o.overdueMs > 0)).toBe(true);
    await svc.service.rotation.tick();
    expect((await svc.call('GET', '/v1/rotation/report', undefined, svc.tokens.auditor)).body.overdue).toEqual([]);
  });
});

describe('policies at start-up', () => {
  it('records each new or changed policy file in the audit log, once', async () => {
    const loads = (await svc.store.listAudit(0, 100_000)).filter((e) => e.action === 'policy.load');
    expect(loads.map((e) => e.subject)).toEqual(['rotation/weekly']);
    expect(loads[0]!.details).toMatchObject({ version: 1, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
  });

  it('an invalid policy file stops start-up with its file, line and reason', async () => {
    const bad = mkdtempSync(join(tmpdir(), 'custos-badpol-'));
    mkdirSync(join(bad, 'rotation'));
    writeFileSync(join(bad, 'rotation', 'broken.yaml'), 'id: broken\nversion: 1\nselector:\n  names: ["x-*"]\nrotateEvery: every week\ndeactivateAfter: P3D\ndestroyAfter: P5D\ndestroyPendingWindow: P2D\n');
    const config = loadConfig({ CUSTOS_STATE_DIR: bad, CUSTOS_POLICY_DIR: bad });
    try {
      await composeService(config, pino({ level: 'silent' }), { hsm: ks });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(PolicyError);
      expect((e as CustosError).code).toBe('ERR_POLICY_INVALID');
      expect((e as CustosError).details).toMatchObject({ line: 5 });
      expect((e as Error).message).toMatch(/broken\.yaml:5:\d+: .*rotateEvery/);
    } finally {
      rmSync(bad, { recursive: true, force: true });
    }
  });
});
