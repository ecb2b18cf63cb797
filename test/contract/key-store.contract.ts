import { constants, createHash, createPublicKey, verify as nodeVerify, type KeyObject } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KeyObjectInfo, KeyStore } from '../../src/hsm/key-store.js';
import { HASH_BYTES, KEY_TYPES, type HashName, type KeyType } from '../../src/hsm/key-types.js';
import { parsePkcs11Uri } from '../../src/hsm/pkcs11-uri.js';
import { randomBytes } from 'node:crypto';

export interface ContractTarget {
  store: KeyStore;
  cleanup(): Promise<void>;
}

const newId = (): string => randomBytes(16).toString('hex');

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ code });
}

function nodeVerifies(pub: KeyObject, type: KeyType, scheme: string, hash: HashName, msg: Buffer, sig: Buffer): boolean {
  if (scheme === 'ecdsa') return nodeVerify(hash, msg, { key: pub, dsaEncoding: 'ieee-p1363' }, sig);
  if (scheme === 'rsa-pkcs1') return nodeVerify(hash, msg, { key: pub, padding: constants.RSA_PKCS1_PADDING }, sig);
  expect(KEY_TYPES[type].kind).toBe('rsa');
  return nodeVerify(hash, msg, { key: pub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: HASH_BYTES[hash] }, sig);
}

/**
 * The one behaviour suite every KeyStore must pass (the in-memory fake and the PKCS#11 adapter on
 * SoftHSM2). Signatures are also checked outside the store with node:crypto.
 */
export function keyStoreContract(name: string, make: () => Promise<ContractTarget>): void {
  describe(`KeyStore contract: ${name}`, () => {
    let target: ContractTarget;
    let store: KeyStore;
    const keys = new Map<KeyType, KeyObjectInfo>();
    const labels = new Map<KeyType, string>();

    beforeAll(async () => {
      target = await make();
      store = target.store;
      for (const type of Object.keys(KEY_TYPES) as KeyType[]) {
        const label = `custos:contract-${type}:v1`;
        labels.set(type, label);
        const spec = { id: newId(), label, type };
        keys.set(type, KEY_TYPES[type].kind === 'aes' ? await store.generateSecretKey(spec) : await store.generateKeyPair(spec));
      }
    });
    afterAll(async () => {
      await target?.cleanup();
    });

    const key = (t: KeyType): KeyObjectInfo => keys.get(t) as KeyObjectInfo;

    describe.each(Object.keys(KEY_TYPES) as KeyType[])('%s', (type) => {
      it('is generated with the right type, label, URI and protection attributes', async () => {
        const k = key(type);
        expect(k.type).toBe(type);
        expect(k.label).toBe(labels.get(type));
        expect(k.sensitive).toBe(true);
        expect(k.extractable).toBe(false);
        const uri = parsePkcs11Uri(k.uri);
        expect(uri.id).toBe(k.id);
        expect(uri.object).toBe(k.label);
        expect(uri.type).toBe(KEY_TYPES[type].kind === 'aes' ? 'secret' : 'private');
        expect(k.uri).not.toMatch(/pin/i);
        const found = await store.findKey(k.id);
        expect(found).toEqual(k);
      });
    });

    describe.each((Object.keys(KEY_TYPES) as KeyType[]).filter((t) => KEY_TYPES[t].kind !== 'aes'))('%s signing', (type) => {
      const info = KEY_TYPES[type];
      const schemes = info.kind === 'ec' ? (['ecdsa'] as const) : (['rsa-pkcs1', 'rsa-pss'] as const);
      const hashes: HashName[] = info.kind === 'ec' ? [info.hash] : ['sha256', 'sha384', 'sha512'];

      it('returns an SPKI public key of the right algorithm and size', async () => {
        const pub = createPublicKey({ key: await store.getPublicKey(key(type).id), format: 'der', type: 'spki' });
        expect(pub.asymmetricKeyType).toBe(info.kind);
        if (info.kind === 'ec') expect(pub.asymmetricKeyDetails?.namedCurve).toBe(info.curve === 'P-256' ? 'prime256v1' : 'secp384r1');
        else expect(pub.asymmetricKeyDetails?.modulusLength).toBe(info.bits);
      });

      for (const scheme of schemes) {
        for (const hash of hashes) {
          it(`signs a ${hash} digest with ${scheme}; the store and node:crypto verify it`, async () => {
            const k = key(type);
            const msg = randomBytes(100);
            const digest = createHash(hash).update(msg).digest();
            const sig = await store.sign(k.id, scheme, hash, digest);
            if (info.kind === 'ec') expect(sig.length).toBe(info.signatureBytes);
            else expect(sig.length).toBe(info.bits / 8);
            expect(await store.verify(k.id, scheme, hash, digest, sig)).toBe(true);
            const pub = createPublicKey({ key: await store.getPublicKey(k.id), format: 'der', type: 'spki' });
            expect(nodeVerifies(pub, type, scheme, hash, msg, sig)).toBe(true);
            const other = createHash(hash).update(Buffer.concat([msg, Buffer.from([1])])).digest();
            expect(await store.verify(k.id, scheme, hash, other, sig)).toBe(false);
            const bad = Buffer.from(sig);
            bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
            expect(await store.verify(k.id, scheme, hash, digest, bad)).toBe(false);
            expect(nodeVerifies(pub, type, scheme, hash, msg, bad)).toBe(false);
          });
        }
      }

      it('rejects a digest of the wrong length and a scheme of another key kind', async () => {
        const k = key(type);
        await expectCode(store.sign(k.id, schemes[0], info.hash, Buffer.alloc(HASH_BYTES[info.hash] - 1)), 'ERR_BAD_DIGEST_LENGTH');
        const wrong = info.kind === 'ec' ? 'rsa-pkcs1' : 'ecdsa';
        await expectCode(store.sign(k.id, wrong, info.hash, Buffer.alloc(HASH_BYTES[info.hash])), 'ERR_KEY_PURPOSE');
        await expectCode(store.encrypt(k.id, Buffer.from('x'), Buffer.alloc(0)), 'ERR_KEY_PURPOSE');
      });
    });

    describe('aes-256', () => {
      it('encrypts and decrypts with AAD; each encryption gets a fresh 12-byte IV', async () => {
        const k = key('aes-256');
        const pt = randomBytes(1000);
        const aad = Buffer.from('custos:aad');
        const a = await store.encrypt(k.id, pt, aad);
        const b = await store.encrypt(k.id, pt, aad);
        expect(a.iv.length).toBe(12);
        expect(a.ciphertext.length).toBe(pt.length + 16);
        expect(a.iv.equals(b.iv)).toBe(false);
        expect(a.ciphertext.equals(b.ciphertext)).toBe(false);
        expect((await store.decrypt(k.id, a.iv, a.ciphertext, aad)).equals(pt)).toBe(true);
        const empty = await store.encrypt(k.id, Buffer.alloc(0), Buffer.alloc(0));
        expect((await store.decrypt(k.id, empty.iv, empty.ciphertext, Buffer.alloc(0))).length).toBe(0);
      });

      it('rejects tampered ciphertext, tag, AAD and IV with ERR_DECRYPT', async () => {
        const k = key('aes-256');
        const aad = Buffer.from('aad');
        const { iv, ciphertext } = await store.encrypt(k.id, Buffer.from('secret payload'), aad);
        const flip = (b: Buffer, i: number): Buffer => {
          const c = Buffer.from(b);
          c[i] = (c[i] as number) ^ 0x01;
          return c;
        };
        await expectCode(store.decrypt(k.id, iv, flip(ciphertext, 0), aad), 'ERR_DECRYPT');
        await expectCode(store.decrypt(k.id, iv, flip(ciphertext, ciphertext.length - 1), aad), 'ERR_DECRYPT');
        await expectCode(store.decrypt(k.id, iv, ciphertext, Buffer.from('aae')), 'ERR_DECRYPT');
        await expectCode(store.decrypt(k.id, flip(iv, 5), ciphertext, aad), 'ERR_DECRYPT');
        await expectCode(store.decrypt(k.id, iv, ciphertext.subarray(0, 10), aad), 'ERR_DECRYPT');
      });

      it('refuses signing and public-key export with a secret key', async () => {
        const k = key('aes-256');
        await expectCode(store.sign(k.id, 'ecdsa', 'sha256', Buffer.alloc(32)), 'ERR_KEY_PURPOSE');
        await expectCode(store.getPublicKey(k.id), 'ERR_KEY_PURPOSE');
      });
    });

    it('refuses to generate a key type through the wrong call, and an id that is taken', async () => {
      await expectCode(store.generateSecretKey({ id: newId(), label: 'x', type: 'ec-p256' }), 'ERR_KEY_TYPE');
      await expectCode(store.generateKeyPair({ id: newId(), label: 'x', type: 'aes-256' }), 'ERR_KEY_TYPE');
      await expectCode(store.generateKeyPair({ id: key('ec-p256').id, label: 'dup', type: 'ec-p256' }), 'ERR_KEY_EXISTS');
    });

    it('reports an unknown id as not found', async () => {
      const id = newId();
      expect(await store.findKey(id)).toBeNull();
      await expectCode(store.sign(id, 'ecdsa', 'sha256', Buffer.alloc(32)), 'ERR_HSM_OBJECT_NOT_FOUND');
      await expectCode(store.verify(id, 'ecdsa', 'sha256', Buffer.alloc(32), Buffer.alloc(64)), 'ERR_HSM_OBJECT_NOT_FOUND');
      await expectCode(store.getPublicKey(id), 'ERR_HSM_OBJECT_NOT_FOUND');
      await expectCode(store.encrypt(id, Buffer.from('x'), Buffer.alloc(0)), 'ERR_HSM_OBJECT_NOT_FOUND');
      await expectCode(store.decrypt(id, Buffer.alloc(12), Buffer.alloc(32), Buffer.alloc(0)), 'ERR_HSM_OBJECT_NOT_FOUND');
    });

    it('rejects ids that are not lowercase hex', async () => {
      await expectCode(store.findKey('not-hex'), 'ERR_BAD_REQUEST');
      await expectCode(store.generateKeyPair({ id: 'ABC', label: 'x', type: 'ec-p256' }), 'ERR_BAD_REQUEST');
    });

    it('destroys a key: later use is not found, destroying twice is fine', async () => {
      const ec = await store.generateKeyPair({ id: newId(), label: 'custos:doomed:v1', type: 'ec-p256' });
      const aes = await store.generateSecretKey({ id: newId(), label: 'custos:doomed-aes:v1', type: 'aes-256' });
      const digest = Buffer.alloc(32, 7);
      expect((await store.sign(ec.id, 'ecdsa', 'sha256', digest)).length).toBe(64);
      await store.destroy(ec.id);
      await store.destroy(aes.id);
      expect(await store.findKey(ec.id)).toBeNull();
      expect(await store.findKey(aes.id)).toBeNull();
      await expectCode(store.sign(ec.id, 'ecdsa', 'sha256', digest), 'ERR_HSM_OBJECT_NOT_FOUND');
      await expectCode(store.getPublicKey(ec.id), 'ERR_HSM_OBJECT_NOT_FOUND');
      await expectCode(store.encrypt(aes.id, Buffer.from('x'), Buffer.alloc(0)), 'ERR_HSM_OBJECT_NOT_FOUND');
      await store.destroy(ec.id);
      await store.destroy(newId());
      expect((await store.listKeys()).map((k) => k.id)).not.toContain(ec.id);
    });

    it('lists every key with its type, label and attributes', async () => {
      const listed = await store.listKeys();
      for (const k of keys.values()) {
        expect(listed).toContainEqual(k);
      }
      for (const k of listed) {
        expect(k.sensitive).toBe(true);
        expect(k.extractable).toBe(false);
      }
    });

    it('returns random bytes of the asked length that do not repeat', async () => {
      const a = await store.randomBytes(32);
      const b = await store.randomBytes(32);
      expect(a.length).toBe(32);
      expect((await store.randomBytes(1)).length).toBe(1);
      expect((await store.randomBytes(4096)).length).toBe(4096);
      expect(a.equals(b)).toBe(false);
      await expectCode(store.randomBytes(0), 'ERR_BAD_REQUEST');
      await expectCode(store.randomBytes(1.5), 'ERR_BAD_REQUEST');
    });

    it('signs 200 digests concurrently, each verifiable', async () => {
      const k = key('ec-p256');
      const pub = createPublicKey({ key: await store.getPublicKey(k.id), format: 'der', type: 'spki' });
      const msgs = Array.from({ length: 200 }, (_, i) => Buffer.from(`message ${i}`));
      const sigs = await Promise.all(msgs.map((m) => store.sign(k.id, 'ecdsa', 'sha256', createHash('sha256').update(m).digest())));
      sigs.forEach((sig, i) => expect(nodeVerify('sha256', msgs[i] as Buffer, { key: pub, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true));
      const aes = key('aes-256');
      const boxes = await Promise.all(msgs.map((m) => store.encrypt(aes.id, m, Buffer.alloc(0))));
      expect(new Set(boxes.map((b) => b.iv.toString('hex'))).size).toBe(200);
    });

    it('reports itself healthy', async () => {
      const h = await store.health();
      expect(h.ok).toBe(true);
    });
  });
}
