import { execFile } from 'node:child_process';
import { createHash, createPublicKey, randomBytes, verify as nodeVerify } from 'node:crypto';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initToken } from '../../../src/hsm/pkcs11/init-token.js';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { pkcs11ChildEnv, startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';

const run = promisify(execFile);
const newId = (): string => randomBytes(16).toString('hex');
const digest = createHash('sha256').update('custos').digest();

// A second process on the same token, talking to pkcs11js directly. The PIN reaches it through
// the environment, never argv.
const CHILD = `
const pkcs11js = require(process.env.PKCS11JS);
const m = new pkcs11js.PKCS11();
m.load(process.env.MODULE);
m.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
const slot = m.C_GetSlotList(true).find((s) => m.C_GetTokenInfo(s).label.trim() === process.env.LABEL);
const s = m.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
m.C_Login(s, pkcs11js.CKU_USER, process.env.CHILD_PIN);
const idOf = (hex) => Buffer.from(hex, 'hex');
function destroy(hex) {
  m.C_FindObjectsInit(s, [{ type: pkcs11js.CKA_ID, value: idOf(hex) }]);
  const hs = m.C_FindObjects(s, 10);
  m.C_FindObjectsFinal(s);
  for (const h of hs) m.C_DestroyObject(s, h);
  return hs.length;
}
function createEc(hex, label) {
  m.C_GenerateKeyPair(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
    [{ type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_ID, value: idOf(hex) }, { type: pkcs11js.CKA_LABEL, value: label },
     { type: pkcs11js.CKA_VERIFY, value: true }, { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') }],
    [{ type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_ID, value: idOf(hex) }, { type: pkcs11js.CKA_LABEL, value: label },
     { type: pkcs11js.CKA_PRIVATE, value: true }, { type: pkcs11js.CKA_SENSITIVE, value: true }, { type: pkcs11js.CKA_EXTRACTABLE, value: false },
     { type: pkcs11js.CKA_SIGN, value: true }]);
}
const plan = JSON.parse(process.env.PLAN);
const out = { destroyed: 0 };
for (const hex of plan.destroy) out.destroyed += destroy(hex);
for (const hex of plan.create) createEc(hex, 'custos:other-process:v1');
m.C_Logout(s);
m.C_CloseSession(s);
m.C_Finalize();
process.stdout.write(JSON.stringify(out));
`;

describe('PKCS#11 adapter on SoftHSM2: attributes, outages, other processes', () => {
  let hsm: SoftHsm;
  let store: Pkcs11KeyStore;

  beforeAll(async () => {
    hsm = await startSoftHsm();
  });

  // PKCS#11 login state is per process (v2.40 §5.6): a wrong PIN can only be seen before any
  // store of this process has logged in, so these run first.
  it('refuses a wrong PIN with ERR_HSM_AUTH and backs off instead of retrying it', async () => {
    await expect(openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: 'wrong-pin' })).rejects.toMatchObject({ code: 'ERR_HSM_AUTH' });
    const logged: unknown[] = [];
    const logger = { info: (...a: unknown[]) => logged.push(a), warn: (...a: unknown[]) => logged.push(a) };
    const lazy = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: 'wrong-pin', lazy: true, authBackoffMs: 60_000, logger });
    try {
      const first = await lazy.randomBytes(8).catch((e: unknown) => e);
      // Within the back-off window nothing reaches C_Login: no CKR detail on the error.
      expect(first).toMatchObject({ code: 'ERR_HSM_AUTH' });
      expect((first as { details?: { ckr?: string } }).details?.ckr).toBeUndefined();
      expect(await lazy.health()).toMatchObject({ ok: false, part: 'login', code: 'ERR_HSM_AUTH' });
      expect(logged.length).toBeGreaterThan(0);
      expect(JSON.stringify(logged)).toContain('CKR_PIN_INCORRECT');
      expect(JSON.stringify(logged)).not.toContain('wrong-pin');
      expect(String((first as Error).message)).not.toContain('wrong-pin');
      expect(JSON.stringify(first)).not.toContain('wrong-pin');
    } finally {
      await lazy.close();
    }
  });

  it('reports a missing module and an unknown token as unavailable', async () => {
    await expect(openPkcs11KeyStore({ module: join(hsm.dir, 'missing.so'), tokenLabel: hsm.tokenLabel, pin: hsm.pin })).rejects.toMatchObject({
      code: 'ERR_HSM_UNAVAILABLE',
      details: { part: 'module' },
    });
    const lazy = await openPkcs11KeyStore({ module: join(hsm.dir, 'missing.so'), tokenLabel: hsm.tokenLabel, pin: hsm.pin, lazy: true });
    expect(await lazy.health()).toMatchObject({ ok: false, part: 'module' });
    await lazy.close();
    await expect(openPkcs11KeyStore({ module: hsm.module, tokenLabel: 'no-such-token', pin: hsm.pin })).rejects.toMatchObject({
      code: 'ERR_HSM_UNAVAILABLE',
      details: { part: 'token' },
    });
  });

  it('tries a refused PIN again only once per back-off window', async () => {
    const lazy = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: 'also-wrong', lazy: true, authBackoffMs: 400, authBackoffMaxMs: 10_000 });
    try {
      const ckrOf = async (): Promise<unknown> => ((await lazy.randomBytes(4).catch((e: unknown) => e)) as { details?: { ckr?: string } }).details?.ckr;
      expect(await ckrOf()).toBeUndefined();
      await new Promise((r) => setTimeout(r, 450));
      // The window is over: exactly one new C_Login, refused again; the window doubles.
      expect(await ckrOf()).toBe('CKR_PIN_INCORRECT');
      expect(await ckrOf()).toBeUndefined();
      await new Promise((r) => setTimeout(r, 300));
      expect(await ckrOf()).toBeUndefined();
    } finally {
      await lazy.close();
    }
  });

  it('starts without its token (lazy) and serves once a token with the label appears', async () => {
    const label = 'custos-late';
    const lazy = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: label, pin: hsm.pin, lazy: true, recoveryIntervalMs: 0 });
    try {
      expect(await lazy.health()).toMatchObject({ ok: false, part: 'token', code: 'ERR_HSM_UNAVAILABLE' });
      await expect(lazy.randomBytes(4)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
      expect(await initToken({ module: hsm.module, label, soPin: hsm.soPin, pin: hsm.pin })).toEqual({ created: true });
      expect((await lazy.randomBytes(4)).length).toBe(4);
      expect((await lazy.health()).ok).toBe(true);
    } finally {
      await lazy.close();
    }
  });

  it('opens the store used below', async () => {
    // Token objects only: a store with session copies reads each copy's token object every 100 ms,
    // which makes SoftHSM2 notice other processes' changes on its own and takes away the
    // conditions some tests below build. Copies with other processes: the session-copy tests and
    // the one below with its own store.
    store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, recoveryIntervalMs: 0, sessionCopies: 'off' });
    expect((await store.health()).ok).toBe(true);
  });

  afterAll(async () => {
    await store?.close();
    await hsm?.cleanup();
  });

  it('creates keys that pkcs11-tool sees as sensitive and never extractable', async () => {
    const made = [
      await store.generateKeyPair({ id: newId(), label: 'custos:tool-ec:v1', type: 'ec-p256' }),
      await store.generateKeyPair({ id: newId(), label: 'custos:tool-rsa:v1', type: 'rsa-2048' }),
      await store.generateSecretKey({ id: newId(), label: 'custos:tool-aes:v1', type: 'aes-256' }),
    ];
    // pkcs11-tool reads the PIN from the environment here (`--pin env:VAR`), never from argv.
    const { stdout } = await run(
      'pkcs11-tool',
      ['--module', hsm.module, '--token-label', hsm.tokenLabel, '--login', '--pin', 'env:CUSTOS_TEST_PIN', '--list-objects'],
      { env: { ...hsm.env, CUSTOS_TEST_PIN: hsm.pin } },
    );
    const blocks = stdout.split(/\n(?=\S)/).filter((b) => /^(Private Key|Secret Key) Object/.test(b));
    for (const k of made) {
      const block = blocks.find((b) => new RegExp(`ID:\\s+${k.id}`).test(b));
      expect(block, `object ${k.label}`).toBeDefined();
      expect(block).toMatch(/Access:.*\bsensitive\b/);
      expect(block).toMatch(/Access:.*never extractable/);
      // Only the usage its purpose needs.
      if (k.type === 'aes-256') expect(block).not.toMatch(/Usage:.*\b(sign|verify|wrap|unwrap|derive)\b/);
      else expect(block).not.toMatch(/Usage:.*\b(decrypt|unwrap|derive)\b/);
    }
  });

  it('recovers transparently from sessions closed or logged out behind its back', async () => {
    const k = await store.generateKeyPair({ id: newId(), label: 'custos:sessions:v1', type: 'ec-p256' });
    expect((await store.sign(k.id, 'ecdsa', 'sha256', digest)).length).toBe(64);
    await store.disruptSessions('closeAll');
    const after = await Promise.all(Array.from({ length: 20 }, () => store.sign(k.id, 'ecdsa', 'sha256', digest)));
    expect(after.every((s) => s.length === 64)).toBe(true);
    await store.disruptSessions('logout');
    expect((await store.sign(k.id, 'ecdsa', 'sha256', digest)).length).toBe(64);
    expect((await store.randomBytes(16)).length).toBe(16);
    expect((await store.health()).ok).toBe(true);
  });

  it('survives another process creating, destroying and recreating keys on the same token', async () => {
    const doomed = await store.generateKeyPair({ id: newId(), label: 'custos:doomed:v1', type: 'ec-p256' });
    const recreated = await store.generateKeyPair({ id: newId(), label: 'custos:recreated:v1', type: 'ec-p256' });
    const kept = await store.generateKeyPair({ id: newId(), label: 'custos:kept:v1', type: 'ec-p256' });
    // Warm the handle caches of every worker.
    await Promise.all(Array.from({ length: 8 }, () => store.sign(doomed.id, 'ecdsa', 'sha256', digest)));
    await Promise.all(Array.from({ length: 8 }, () => store.sign(recreated.id, 'ecdsa', 'sha256', digest)));
    const oldPub = await store.getPublicKey(recreated.id);
    const fresh = newId();
    const script = join(hsm.dir, 'other-process.cjs');
    await writeFile(script, CHILD);
    const { stdout } = await run(process.execPath, [script], {
      env: pkcs11ChildEnv(hsm, { PLAN: JSON.stringify({ destroy: [doomed.id, recreated.id], create: [recreated.id, fresh] }) }),
    });
    expect(JSON.parse(stdout)).toEqual({ destroyed: 4 });

    await expect(store.sign(doomed.id, 'ecdsa', 'sha256', digest)).rejects.toMatchObject({ code: 'ERR_HSM_OBJECT_NOT_FOUND' });
    // Stale handles are re-found by CKA_ID: the signature comes from the new key.
    const sigs = await Promise.all(Array.from({ length: 8 }, () => store.sign(recreated.id, 'ecdsa', 'sha256', digest)));
    const newPub = await store.getPublicKey(recreated.id);
    expect(newPub.equals(oldPub)).toBe(false);
    const pub = createPublicKey({ key: newPub, format: 'der', type: 'spki' });
    for (const sig of sigs) expect(nodeVerify('sha256', Buffer.from('custos'), { key: pub, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true);
    for (const sig of sigs) expect(await store.verify(recreated.id, 'ecdsa', 'sha256', digest, sig)).toBe(true);
    expect((await store.findKey(fresh))?.label).toBe('custos:other-process:v1');
    expect((await store.sign(kept.id, 'ecdsa', 'sha256', digest)).length).toBe(64);
    expect((await store.health()).ok).toBe(true);
  });

  it("a key another process destroyed (or replaced) signs from this process's session copy until the copy's next check", async () => {
    const check = 1500;
    const copying = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, recoveryIntervalMs: 0, copyCheckMs: check });
    try {
      const k = await copying.generateKeyPair({ id: newId(), label: 'custos:window:v1', type: 'ec-p256' });
      const r = await copying.generateKeyPair({ id: newId(), label: 'custos:replaced:v1', type: 'ec-p256' });
      const oldPub = await copying.getPublicKey(r.id);
      // Copies made just now.
      await copying.sign(k.id, 'ecdsa', 'sha256', digest);
      await copying.sign(r.id, 'ecdsa', 'sha256', digest);
      const copied = Date.now();
      const script = join(hsm.dir, 'other-process.cjs');
      await writeFile(script, CHILD);
      const { stdout } = await run(process.execPath, [script], {
        env: pkcs11ChildEnv(hsm, { PLAN: JSON.stringify({ destroy: [k.id, r.id], create: [r.id] }) }),
      });
      expect(JSON.parse(stdout)).toEqual({ destroyed: 4 });
      // Before the next check of its token object the copy still signs (custos releases no
      // signature of a version its store no longer allows: see the key service's commit check).
      if (Date.now() - copied < check - 500) expect((await copying.sign(k.id, 'ecdsa', 'sha256', digest)).length).toBe(64);
      // The sweep checks every `check` ms; a signature checks itself when the sweep is 2 × late.
      await sleep(Math.max(0, copied + 2 * check + 100 - Date.now()));
      await expect(copying.sign(k.id, 'ecdsa', 'sha256', digest)).rejects.toMatchObject({ code: 'ERR_HSM_OBJECT_NOT_FOUND' });
      // The replaced key signs with the new key, re-found by CKA_ID and copied again.
      const sig = await copying.sign(r.id, 'ecdsa', 'sha256', digest);
      const newPub = await copying.getPublicKey(r.id);
      expect(newPub.equals(oldPub)).toBe(false);
      expect(nodeVerify('sha256', Buffer.from('custos'), { key: createPublicKey({ key: newPub, format: 'der', type: 'spki' }), dsaEncoding: 'ieee-p1363' }, sig)).toBe(true);
    } finally {
      await copying.close();
    }
  });

  it("sees another process's keys after its own object creation hid them from SoftHSM2", async () => {
    const script = join(hsm.dir, 'other-process.cjs');
    await writeFile(script, CHILD);
    const other = async (plan: { destroy: string[]; create: string[] }): Promise<{ destroyed: number }> => {
      const { stdout } = await run(process.execPath, [script], {
        env: pkcs11ChildEnv(hsm, { PLAN: JSON.stringify(plan) }),
      });
      return JSON.parse(stdout) as { destroyed: number };
    };
    // This process creates a token object right after the other process made its key, without
    // looking at the token in between (as a key generation racing the other process's does):
    // SoftHSM2 counts that as having seen the other process's change, and no longer shows it.
    const raw = new (createRequire(import.meta.url)('pkcs11js') as typeof import('pkcs11js')).PKCS11();
    raw.load(hsm.module);
    // The other process makes a key; this process, with a session opened before (a re-reading of
    // the token re-initializes the module), then creates an object.
    const madeElsewhere = async (id: string): Promise<void> => {
      try {
        raw.C_Initialize({ flags: 2 /* CKF_OS_LOCKING_OK */ });
      } catch {
        // Initialized by the key store in this process: the same module instance.
      }
      const slot = raw.C_GetSlotList(true).find((x) => raw.C_GetTokenInfo(x).label.trim() === hsm.tokenLabel)!;
      const session = raw.C_OpenSession(slot, 0x4 | 0x2 /* CKF_SERIAL_SESSION | CKF_RW_SESSION */);
      await other({ destroy: [], create: [id] });
      raw.C_CreateObject(session, [{ type: 0x0 /* CKA_CLASS */, value: 0 /* CKO_DATA */ }, { type: 0x1 /* CKA_TOKEN */, value: true }, { type: 0x3 /* CKA_LABEL */, value: 'lost-update' }]);
      raw.C_CloseSession(session);
    };
    // A re-reading for a failed request happens at most once a second: the one before is older.
    await new Promise((r) => setTimeout(r, 1_100));
    await store.sign((await store.generateKeyPair({ id: newId(), label: 'custos:seen:v1', type: 'ec-p256' })).id, 'ecdsa', 'sha256', digest);
    const before = store.stats().viewRefreshes;

    // A signature with a key the other process made.
    const signed = newId();
    await madeElsewhere(signed);
    const sig = await store.sign(signed, 'ecdsa', 'sha256', digest);
    const pub = createPublicKey({ key: await store.getPublicKey(signed), format: 'der', type: 'spki' });
    expect(nodeVerify('sha256', Buffer.from('custos'), { key: pub, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true);
    expect(store.stats().viewRefreshes).toBe(before + 1);

    // A destroy of a key the other process made: gone from the token, as the other process sees it.
    const doomed = newId();
    await madeElsewhere(doomed);
    await store.destroy(doomed);
    expect(await other({ destroy: [doomed], create: [] })).toEqual({ destroyed: 0 });

    // findKey and listKeys with the ids expected there.
    const found = newId();
    await madeElsewhere(found);
    expect((await store.findKey(found))?.label).toBe('custos:other-process:v1');
    const listed = newId();
    await madeElsewhere(listed);
    expect((await store.listKeys([listed])).map((k) => k.id)).toContain(listed);

    // A key that is really missing still is, and costs at most one re-reading a second.
    const refreshes = store.stats().viewRefreshes;
    for (let i = 0; i < 5; i++) await expect(store.sign(newId(), 'ecdsa', 'sha256', digest)).rejects.toMatchObject({ code: 'ERR_HSM_OBJECT_NOT_FOUND' });
    expect(store.stats().viewRefreshes - refreshes).toBeLessThanOrEqual(1);
    expect((await store.health()).ok).toBe(true);
  });

  it('reports the token gone while its directory is away, and works again when it is back', async () => {
    const k = await store.generateKeyPair({ id: newId(), label: 'custos:outage:v1', type: 'ec-p256' });
    expect((await store.sign(k.id, 'ecdsa', 'sha256', digest)).length).toBe(64);
    const away = `${hsm.tokenDir}.away`;
    await rename(hsm.tokenDir, away);
    await mkdir(hsm.tokenDir);
    try {
      // The first call after the loss is a destroy: "no object" must not read as success.
      await expect(store.destroy(k.id)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
      await expect(store.sign(k.id, 'ecdsa', 'sha256', digest)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
      await expect(store.randomBytes(8)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
      // An empty object store must never read as "the key is gone".
      await expect(store.findKey(k.id)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
      await expect(store.listKeys()).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' });
      const h = await store.health();
      expect(h).toMatchObject({ ok: false, part: 'token', code: 'ERR_HSM_UNAVAILABLE' });
    } finally {
      await rm(hsm.tokenDir, { recursive: true, force: true });
      await rename(away, hsm.tokenDir);
    }
    expect((await store.sign(k.id, 'ecdsa', 'sha256', digest)).length).toBe(64);
    expect((await store.health()).ok).toBe(true);
    expect(store.stats().recoveries).toBeGreaterThanOrEqual(1);
  });

});
