import { createDecipheriv, createECDH, createHmac, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  Aes128Gcm,
  Aes256Gcm,
  CipherSuite,
  DhkemP256HkdfSha256,
  DhkemP521HkdfSha512,
  HkdfSha256,
  HkdfSha512,
} from '@hpke/core';
import { describe, expect, it, vi } from 'vitest';
import { isCustosError } from '../../../src/lib/errors.js';
import { parseEphemeralJwk } from '../../../src/sessions/ephemeral-key.js';
import { openSessionKey, sealSessionKey, sessionEcdhOffload, sessionHpkeSuite, sessionKeyInfo, sessionKeySealer } from '../../../src/sessions/hpke.js';

interface Vector {
  rfc9180Section: string;
  kem_id: number;
  kdf_id: number;
  aead_id: number;
  info: string;
  ikmE: string;
  pkEm: string;
  skEm: string;
  ikmR: string;
  pkRm: string;
  skRm: string;
  enc: string;
  shared_secret: string;
  key: string;
  base_nonce: string;
  exporter_secret: string;
  encryptions: { seq: number; pt: string; aad: string; nonce: string; ct: string }[];
  exports: { exporter_context: string; L: number; exported_value: string }[];
}

const VECTORS = JSON.parse(readFileSync(new URL('../../vectors/hpke/rfc9180-base.json', import.meta.url), 'utf8')) as Vector[];

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const toHex = (b: ArrayBuffer | Uint8Array): string => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b).toString('hex');

function suiteFor(v: Vector): CipherSuite {
  if (v.kem_id === 0x10 && v.kdf_id === 1 && v.aead_id === 1) {
    return new CipherSuite({ kem: new DhkemP256HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });
  }
  if (v.kem_id === 0x12 && v.kdf_id === 3 && v.aead_id === 2) {
    return new CipherSuite({ kem: new DhkemP521HkdfSha512(), kdf: new HkdfSha512(), aead: new Aes256Gcm() });
  }
  throw new Error(`no suite for vector ${v.rfc9180Section}`);
}

function sessionKeyOf(e: unknown): string | undefined {
  return isCustosError(e) ? e.code : undefined;
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    return sessionKeyOf(e);
  }
  return 'resolved';
}

describe('@hpke/core against RFC 9180 Appendix A base-mode vectors', () => {
  for (const v of VECTORS) {
    it(`A.${v.rfc9180Section.slice(2)}: derives the key pairs, reproduces enc and ciphertexts, opens and exports`, async () => {
      const suite = suiteFor(v);
      const recipient = await suite.kem.deriveKeyPair(hex(v.ikmR));
      expect(toHex(await suite.kem.serializePublicKey(recipient.publicKey))).toBe(v.pkRm);
      expect(toHex(await suite.kem.serializePrivateKey(recipient.privateKey))).toBe(v.skRm);
      const ephemeral = await suite.kem.deriveKeyPair(hex(v.ikmE));
      expect(toHex(await suite.kem.serializePublicKey(ephemeral.publicKey))).toBe(v.pkEm);

      const sender = await suite.createSenderContext({ recipientPublicKey: recipient.publicKey, info: hex(v.info), ekm: ephemeral });
      expect(toHex(sender.enc)).toBe(v.enc);
      const sequential = v.encryptions.filter((e, i) => e.seq === i);
      expect(sequential.length).toBeGreaterThanOrEqual(3);
      for (const e of sequential) expect(toHex(await sender.seal(hex(e.pt), hex(e.aad)))).toBe(e.ct);

      const receiver = await suite.createRecipientContext({ recipientKey: recipient, enc: hex(v.enc), info: hex(v.info) });
      for (const e of sequential) expect(toHex(await receiver.open(hex(e.ct), hex(e.aad)))).toBe(e.pt);
      for (const x of v.exports) {
        expect(toHex(await receiver.export(hex(x.exporter_context), x.L))).toBe(x.exported_value);
        expect(toHex(await sender.export(hex(x.exporter_context), x.L))).toBe(x.exported_value);
      }
      // A single-shot open of the first vector ciphertext (what openSessionKey does).
      const first = v.encryptions[0];
      if (!first) throw new Error('vector without encryptions');
      const pt = await suite.open({ recipientKey: recipient, enc: hex(v.enc), info: hex(v.info) }, hex(first.ct), hex(first.aad));
      expect(toHex(pt)).toBe(first.pt);
    });
  }
});

// An independent RFC 9180 implementation over node:crypto (ECDH, HMAC, AES-GCM), used only to
// cross-check the library on custos's exact suite, for which RFC 9180 prints no vector.
const te = (s: string): Buffer => Buffer.from(s, 'utf8');
function i2osp(n: number, w: number): Buffer {
  const b = Buffer.alloc(w);
  b.writeUIntBE(n, 0, w);
  return b;
}
function hkdfExtract(hash: string, salt: Buffer, ikm: Buffer): Buffer {
  return createHmac(hash, salt.length === 0 ? Buffer.alloc(hash === 'sha256' ? 32 : 64) : salt).update(ikm).digest();
}
function hkdfExpand(hash: string, prk: Buffer, info: Buffer, L: number): Buffer {
  const out: Buffer[] = [];
  let t = Buffer.alloc(0);
  for (let i = 1; Buffer.concat(out).length < L; i++) {
    t = createHmac(hash, prk).update(Buffer.concat([t, info, Buffer.from([i])])).digest();
    out.push(t);
  }
  return Buffer.concat(out).subarray(0, L);
}
function labeledExtract(suiteId: Buffer, salt: Buffer, label: string, ikm: Buffer): Buffer {
  return hkdfExtract('sha256', salt, Buffer.concat([te('HPKE-v1'), suiteId, te(label), ikm]));
}
function labeledExpand(suiteId: Buffer, prk: Buffer, label: string, info: Buffer, L: number): Buffer {
  return hkdfExpand('sha256', prk, Buffer.concat([i2osp(L, 2), te('HPKE-v1'), suiteId, te(label), info]), L);
}
/** Base-mode open for DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-{128,256}-GCM, sequence 0. */
function referenceOpen(skR: Buffer, enc: Buffer, info: Buffer, ct: Buffer, aad: Buffer, aeadId: 1 | 2): Buffer {
  const ecdh = createECDH('prime256v1');
  ecdh.setPrivateKey(skR);
  const pkRm = ecdh.getPublicKey();
  const dh = ecdh.computeSecret(enc);
  const kemId = Buffer.concat([te('KEM'), i2osp(0x10, 2)]);
  const eaePrk = labeledExtract(kemId, Buffer.alloc(0), 'eae_prk', dh);
  const sharedSecret = labeledExpand(kemId, eaePrk, 'shared_secret', Buffer.concat([enc, pkRm]), 32);
  const suiteId = Buffer.concat([te('HPKE'), i2osp(0x10, 2), i2osp(1, 2), i2osp(aeadId, 2)]);
  const pskIdHash = labeledExtract(suiteId, Buffer.alloc(0), 'psk_id_hash', Buffer.alloc(0));
  const infoHash = labeledExtract(suiteId, Buffer.alloc(0), 'info_hash', info);
  const ksc = Buffer.concat([Buffer.from([0]), pskIdHash, infoHash]);
  const secret = labeledExtract(suiteId, sharedSecret, 'secret', Buffer.alloc(0));
  const key = labeledExpand(suiteId, secret, 'key', ksc, aeadId === 1 ? 16 : 32);
  const nonce = labeledExpand(suiteId, secret, 'base_nonce', ksc, 12);
  const d = createDecipheriv(aeadId === 1 ? 'aes-128-gcm' : 'aes-256-gcm', key, nonce);
  d.setAAD(aad);
  d.setAuthTag(ct.subarray(ct.length - 16));
  return Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]);
}

function p256Pair(): { pub: Record<string, unknown>; priv: Record<string, unknown> } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { pub: publicKey.export({ format: 'jwk' }) as Record<string, unknown>, priv: privateKey.export({ format: 'jwk' }) as Record<string, unknown> };
}

describe('session key sealing', () => {
  it('the reference implementation reproduces RFC 9180 A.3.1 (so it can vouch for the AES-256 suite)', () => {
    const v = VECTORS.find((x) => x.rfc9180Section === 'A.3.1');
    if (!v) throw new Error('A.3.1 missing');
    const e = v.encryptions[0];
    if (!e) throw new Error('A.3.1 has no encryption');
    expect(referenceOpen(hex(v.skRm), hex(v.enc), hex(v.info), hex(e.ct), hex(e.aad), 1).toString('hex')).toBe(e.pt);
  });

  it('uses DHKEM(P-256), HKDF-SHA256, AES-256-GCM and the custos info string', () => {
    const s = sessionHpkeSuite();
    expect([s.kem.id, s.kdf.id, s.aead.id]).toEqual([0x0010, 0x0001, 0x0002]);
    expect(sessionKeyInfo('abc').toString('utf8')).toBe('custos session keyabc');
  });

  it('seals 32 bytes that open with the ephemeral private key, in the library and in the reference implementation', async () => {
    const { pub, priv } = p256Pair();
    const sessionKey = randomBytes(32);
    const jti = 'f3a1c2d4-0000-4000-8000-000000000001';
    const sealed = await sealSessionKey(pub, sessionKey, jti);
    expect(sealed.enc).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(Buffer.from(sealed.enc, 'base64url').length).toBe(65);
    expect(Buffer.from(sealed.ciphertext, 'base64url').length).toBe(48);
    expect((await openSessionKey(priv, sealed.enc, sealed.ciphertext, jti)).equals(sessionKey)).toBe(true);
    const ref = referenceOpen(
      Buffer.from(String(priv['d']), 'base64url'),
      Buffer.from(sealed.enc, 'base64url'),
      sessionKeyInfo(jti),
      Buffer.from(sealed.ciphertext, 'base64url'),
      Buffer.alloc(0),
      2,
    );
    expect(ref.equals(sessionKey)).toBe(true);
  });

  it('is deterministic given the ephemeral key material, and fresh otherwise', async () => {
    const { pub, priv } = p256Pair();
    const key = randomBytes(32);
    const suite = sessionHpkeSuite();
    const ekm = await suite.kem.deriveKeyPair(randomBytes(32));
    const a = await sealSessionKey(pub, key, 'j', { ekm });
    const b = await sealSessionKey(pub, key, 'j', { ekm });
    expect(a).toEqual(b);
    const c = await sealSessionKey(pub, key, 'j');
    expect(c.enc).not.toBe(a.enc);
    expect((await openSessionKey(priv, c.enc, c.ciphertext, 'j')).equals(key)).toBe(true);
  });

  it('a sealer made before the session key seals exactly what the one-shot seal does, and only once', async () => {
    const { pub, priv } = p256Pair();
    const key = randomBytes(32);
    const ekm = await sessionHpkeSuite().kem.deriveKeyPair(randomBytes(32));
    const eph = parseEphemeralJwk(pub);
    const sealer = await sessionKeySealer(eph, 'j', { ekm });
    expect(await codeOf(sealer.seal(randomBytes(16)))).toBe('ERR_INTERNAL');
    const early = await sealer.seal(key);
    expect(early).toEqual(await sealSessionKey(pub, key, 'j', { ekm }));
    expect((await openSessionKey(priv, early.enc, early.ciphertext, 'j')).equals(key)).toBe(true);
    // A second key under the same context would use sequence number 1: refused.
    expect(await codeOf(sealer.seal(randomBytes(32)))).toBe('ERR_INTERNAL');
    expect(await codeOf(sessionKeySealer(eph, ''))).toBe('ERR_BAD_REQUEST');
  });

  it('opens with a CryptoKey as well as a JWK', async () => {
    const suite = sessionHpkeSuite();
    // Not suite.kem.generateKeyPair(): with the ECDH worker's pool filled, that gives a sender's
    // ephemeral key, whose one DH is done in the worker and which cannot open twice.
    // The pool is filled first, as it is in a server that has been sealing.
    const taken = sessionEcdhOffload.take();
    if (taken) sessionEcdhOffload.drop(taken.handle);
    await vi.waitFor(() => expect(sessionEcdhOffload.ready).toBeGreaterThan(0), { timeout: 5000 });
    const { pub, priv } = p256Pair();
    type Jwk = Parameters<typeof suite.kem.importKey>[1];
    const pair = { privateKey: await suite.kem.importKey('jwk', priv as Jwk, false), publicKey: await suite.kem.importKey('jwk', pub as Jwk, true) };
    const key = randomBytes(32);
    const sealed = await sealSessionKey(pub, key, 'jti-1');
    expect((await openSessionKey(pair.privateKey, sealed.enc, sealed.ciphertext, 'jti-1')).equals(key)).toBe(true);
    expect((await openSessionKey(pair, sealed.enc, sealed.ciphertext, 'jti-1')).equals(key)).toBe(true);
  });

  it('does not open under another jti, another key, or after any byte of enc or ciphertext changes', async () => {
    const { pub, priv } = p256Pair();
    const other = p256Pair();
    const sealed = await sealSessionKey(pub, randomBytes(32), 'jti-A');
    expect(await codeOf(openSessionKey(priv, sealed.enc, sealed.ciphertext, 'jti-B'))).toBe('ERR_DECRYPT');
    expect(await codeOf(openSessionKey(other.priv, sealed.enc, sealed.ciphertext, 'jti-A'))).toBe('ERR_DECRYPT');
    const ct = Buffer.from(sealed.ciphertext, 'base64url');
    for (const i of [0, 15, 31, 32, 47]) {
      const t = Buffer.from(ct);
      t[i] = (t[i] as number) ^ 0x01;
      expect(await codeOf(openSessionKey(priv, sealed.enc, t.toString('base64url'), 'jti-A'))).toBe('ERR_DECRYPT');
    }
    const enc = Buffer.from(sealed.enc, 'base64url');
    for (const i of [0, 1, 40, 64]) {
      const t = Buffer.from(enc);
      t[i] = (t[i] as number) ^ 0x01;
      expect(await codeOf(openSessionKey(priv, t.toString('base64url'), sealed.ciphertext, 'jti-A'))).toBe('ERR_DECRYPT');
    }
    expect(await codeOf(openSessionKey(priv, sealed.enc, ct.subarray(0, 47).toString('base64url'), 'jti-A'))).toBe('ERR_DECRYPT');
    expect(await codeOf(openSessionKey(priv, sealed.enc, sealed.ciphertext + '!', 'jti-A'))).toBe('ERR_BAD_BASE64');
  });

  it('refuses bad inputs to seal', async () => {
    const { pub, priv } = p256Pair();
    expect(await codeOf(sealSessionKey(pub, randomBytes(16), 'j'))).toBe('ERR_INTERNAL');
    expect(await codeOf(sealSessionKey(pub, randomBytes(32), ''))).toBe('ERR_BAD_REQUEST');
    expect(await codeOf(sealSessionKey(priv, randomBytes(32), 'j'))).toBe('ERR_EPHEMERAL_KEY');
    expect(await codeOf(sealSessionKey({ ...pub, crv: 'P-384' }, randomBytes(32), 'j'))).toBe('ERR_EPHEMERAL_KEY');
    expect(await codeOf(openSessionKey(priv, 'AA', 'AA', 'j'))).toBe('ERR_DECRYPT');
    const sealed = await sealSessionKey(pub, randomBytes(32), 'j');
    expect(await codeOf(openSessionKey(pub, sealed.enc, sealed.ciphertext, 'j'))).toBe('ERR_BAD_REQUEST');
  });
});
