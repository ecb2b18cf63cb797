import { createHash, createPublicKey, randomBytes, verify as nodeVerify } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pkcs11js from 'pkcs11js';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openPkcs11KeyStore, type Pkcs11KeyStore } from '../../../src/hsm/pkcs11/pkcs11-key-store.js';
import { startSoftHsm, type SoftHsm } from '../../helpers/softhsm.js';

const newId = (): string => randomBytes(16).toString('hex');
const digest = createHash('sha256').update('custos').digest();
/** CKA_COPYABLE (PKCS#11 v2.40). */
const CKA_COPYABLE = 0x171;

/**
 * Session copies (hsm/README.md): signatures use a copy of the private key made inside the token.
 * The copies are looked at from this process through pkcs11js directly: session objects belong
 * to the application, so any session of the process sees them, and none of another process does.
 */
describe('PKCS#11 adapter on SoftHSM2: session copies of signing keys', () => {
  let hsm: SoftHsm;
  let store: Pkcs11KeyStore;
  const m = new pkcs11js.PKCS11();
  let slot: Buffer;
  let s: Buffer;
  const CHECK = 50;
  const IDLE = 300;

  beforeAll(async () => {
    hsm = await startSoftHsm();
    store = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, copyCheckMs: CHECK, copyIdleMs: IDLE });
    // The store initialized the module and logged the application in; this session shares both.
    m.load(hsm.module);
    try {
      m.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    } catch {
      // CKR_CRYPTOKI_ALREADY_INITIALIZED: the store's.
    }
    slot = m.C_GetSlotList(true).find((x) => m.C_GetTokenInfo(x).label.trim() === hsm.tokenLabel) as Buffer;
  });

  // A fresh session for each look: the store re-initializes the module (closing every session of
  // the process) whenever it must tell a destroyed key from one its view of the token misses.
  beforeEach(() => {
    s = m.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  });
  afterEach(() => {
    try {
      m.C_CloseSession(s);
    } catch {
      // Closed by such a re-initialization.
    }
  });

  afterAll(async () => {
    await store?.close();
    await hsm?.cleanup();
  });

  function objects(id: string, token: boolean): Buffer[] {
    m.C_FindObjectsInit(s, [{ type: pkcs11js.CKA_ID, value: Buffer.from(id, 'hex') }, { type: pkcs11js.CKA_TOKEN, value: token }]);
    try {
      return m.C_FindObjects(s, 64);
    } finally {
      m.C_FindObjectsFinal(s);
    }
  }
  const flag = (h: Buffer, type: number): boolean => (m.C_GetAttributeValue(s, h, [{ type }])[0]?.value as Buffer)[0] === 1;

  it('is on by default with SoftHSM2, and a copy is a sensitive, never-extractable session object', async () => {
    expect(store.stats().sessionCopies).toBe(true);
    const k = await store.generateKeyPair({ id: newId(), label: 'custos:copies:v1', type: 'ec-p256' });
    expect(objects(k.id, false)).toHaveLength(0);
    const sigs = await Promise.all(Array.from({ length: 16 }, () => store.sign(k.id, 'ecdsa', 'sha256', digest)));
    const pub = createPublicKey({ key: await store.getPublicKey(k.id), format: 'der', type: 'spki' });
    for (const sig of sigs) expect(nodeVerify('sha256', Buffer.from('custos'), { key: pub, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true);

    const copies = objects(k.id, false);
    // One per worker at most (each worker signs with its own copy).
    expect(copies.length).toBeGreaterThanOrEqual(1);
    expect(copies.length).toBeLessThanOrEqual(store.stats().workers);
    for (const h of copies) {
      const cls = (m.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_CLASS }])[0]?.value as Buffer).readUInt32LE(0);
      expect(cls).toBe(pkcs11js.CKO_PRIVATE_KEY);
      expect(flag(h, pkcs11js.CKA_TOKEN)).toBe(false);
      expect(flag(h, pkcs11js.CKA_PRIVATE)).toBe(true);
      expect(flag(h, pkcs11js.CKA_SENSITIVE)).toBe(true);
      expect(flag(h, pkcs11js.CKA_EXTRACTABLE)).toBe(false);
      expect(flag(h, pkcs11js.CKA_NEVER_EXTRACTABLE)).toBe(true);
      expect(() => m.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_VALUE }])).toThrow(/CKR_ATTRIBUTE_SENSITIVE/);
    }
    // The token keeps exactly the two objects custos made, and lists and finds only those.
    expect(objects(k.id, true)).toHaveLength(2);
    expect((await store.findKey(k.id))?.id).toBe(k.id);
    expect((await store.listKeys()).filter((x) => x.id === k.id)).toHaveLength(1);
  });

  it('keeps a copy while it is used instead of making new ones (SoftHSM2 keeps every destroyed one in memory)', async () => {
    const k = await store.generateKeyPair({ id: newId(), label: 'custos:kept:v1', type: 'ec-p256' });
    await Promise.all(Array.from({ length: 16 }, () => store.sign(k.id, 'ecdsa', 'sha256', digest)));
    const before = objects(k.id, false).map((h) => h.toString('hex')).sort();
    // Over several check periods of the sweep, which reads the token object each time.
    for (let i = 0; i < 8; i++) {
      await Promise.all(Array.from({ length: 16 }, () => store.sign(k.id, 'ecdsa', 'sha256', digest)));
      await sleep(CHECK);
    }
    const after = objects(k.id, false).map((h) => h.toString('hex')).sort();
    expect(before.length).toBeGreaterThanOrEqual(1);
    // The same copies (a new copy would have a new handle), possibly one more for a worker that
    // had not signed with this key before.
    for (const h of before) expect(after).toContain(h);
    expect(after.length).toBeLessThanOrEqual(store.stats().workers);
  });

  it('destroys a copy once it has not been used for copyIdleMs', async () => {
    const k = await store.generateKeyPair({ id: newId(), label: 'custos:idle:v1', type: 'ec-p256' });
    await store.sign(k.id, 'ecdsa', 'sha256', digest);
    expect(objects(k.id, false).length).toBeGreaterThanOrEqual(1);
    // The sweep runs every CHECK ms while copies exist and destroys those unused for IDLE ms.
    await sleep(IDLE + 2 * CHECK + 100);
    expect(objects(k.id, false)).toHaveLength(0);
    // The next signature makes a new copy from the token object.
    expect((await store.sign(k.id, 'ecdsa', 'sha256', digest)).length).toBe(64);
    expect(objects(k.id, false).length).toBeGreaterThanOrEqual(1);
  });

  it('destroying a key destroys every copy of it in the process, and the key then signs nowhere', async () => {
    const k = await store.generateKeyPair({ id: newId(), label: 'custos:doomed:v1', type: 'ec-p256' });
    await Promise.all(Array.from({ length: 16 }, () => store.sign(k.id, 'ecdsa', 'sha256', digest)));
    expect(objects(k.id, false).length).toBeGreaterThanOrEqual(1);
    await store.destroy(k.id);
    expect(objects(k.id, false)).toHaveLength(0);
    expect(objects(k.id, true)).toHaveLength(0);
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => store.sign(k.id, 'ecdsa', 'sha256', digest)));
    for (const r of results) expect(r).toMatchObject({ status: 'rejected', reason: { code: 'ERR_HSM_OBJECT_NOT_FOUND' } });
  });

  it('after a logout, which destroys private session objects, the next signature logs in and copies again', async () => {
    const k = await store.generateKeyPair({ id: newId(), label: 'custos:logout:v1', type: 'ec-p256' });
    await store.sign(k.id, 'ecdsa', 'sha256', digest);
    expect(objects(k.id, false).length).toBeGreaterThanOrEqual(1);
    await store.disruptSessions('logout');
    // PKCS#11 v2.40 §5.6.3: C_Logout destroys the application's private session objects.
    // (This session is logged out too: look again once the store has logged back in.)
    expect((await store.sign(k.id, 'ecdsa', 'sha256', digest)).length).toBe(64);
    expect(objects(k.id, false).length).toBeGreaterThanOrEqual(1);
  });

  it('signs from the token object when the key forbids copies (CKA_COPYABLE false)', async () => {
    const id = newId();
    const idBuf = Buffer.from(id, 'hex');
    m.C_GenerateKeyPair(s, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      [{ type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_ID, value: idBuf }, { type: pkcs11js.CKA_VERIFY, value: true },
        { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') }],
      [{ type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_ID, value: idBuf }, { type: pkcs11js.CKA_PRIVATE, value: true },
        { type: pkcs11js.CKA_SENSITIVE, value: true }, { type: pkcs11js.CKA_EXTRACTABLE, value: false }, { type: pkcs11js.CKA_SIGN, value: true },
        { type: CKA_COPYABLE, value: false }]);
    const sigs = await Promise.all(Array.from({ length: 8 }, () => store.sign(id, 'ecdsa', 'sha256', digest)));
    expect(sigs.every((x) => x.length === 64)).toBe(true);
    expect(await store.verify(id, 'ecdsa', 'sha256', digest, sigs[0]!)).toBe(true);
    expect(objects(id, false)).toHaveLength(0);
  });

  it("with sessionCopies 'off' signatures use the token object and no copy is made", async () => {
    const off = await openPkcs11KeyStore({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, sessionCopies: 'off' });
    try {
      expect(off.stats().sessionCopies).toBe(false);
      const k = await off.generateKeyPair({ id: newId(), label: 'custos:nocopy:v1', type: 'ec-p256' });
      await Promise.all(Array.from({ length: 8 }, () => off.sign(k.id, 'ecdsa', 'sha256', digest)));
      expect(objects(k.id, false)).toHaveLength(0);
    } finally {
      await off.close();
    }
  });
});
