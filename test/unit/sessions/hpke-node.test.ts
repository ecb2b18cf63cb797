import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AeadId, Aes128Gcm, Aes256Gcm, CipherSuite, DhkemP256HkdfSha256, HkdfSha256 } from '@hpke/core';
import { describe, expect, it } from 'vitest';
import { isCustosError } from '../../../src/lib/errors.js';
import { openSessionKey, sealSessionKey, sessionHpkeSuite, sessionKeyInfo } from '../../../src/sessions/hpke.js';
import { NodeAesGcm, NodeDhkemP256HkdfSha256, NodeHkdfSha256 } from '../../../src/sessions/hpke-node.js';

/**
 * The node:crypto primitives of src/sessions/hpke-node.ts under @hpke/core's protocol code:
 * RFC 9180 A.3.1 (the P-256 / HKDF-SHA256 vector; AES-128-GCM there, the AEAD class takes both
 * sizes), and interoperation with the stock WebCrypto suite in both directions on random inputs.
 */

interface Vector {
  rfc9180Section: string;
  info: string;
  ikmE: string;
  pkEm: string;
  ikmR: string;
  pkRm: string;
  skRm: string;
  enc: string;
  shared_secret: string;
  encryptions: { seq: number; pt: string; aad: string; nonce: string; ct: string }[];
  exports: { exporter_context: string; L: number; exported_value: string }[];
}

const VECTORS = JSON.parse(readFileSync(new URL('../../vectors/hpke/rfc9180-base.json', import.meta.url), 'utf8')) as Vector[];
const A31 = VECTORS.find((v) => v.rfc9180Section === 'A.3.1');
const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const toHex = (b: ArrayBuffer): string => Buffer.from(b).toString('hex');

const nodeSuite = (aead: 'aes128' | 'aes256'): CipherSuite =>
  new CipherSuite({
    kem: new NodeDhkemP256HkdfSha256(),
    kdf: new NodeHkdfSha256(),
    aead: aead === 'aes128' ? new NodeAesGcm(AeadId.Aes128Gcm, 16) : new NodeAesGcm(AeadId.Aes256Gcm, 32),
  });
const stockSuite = (): CipherSuite => new CipherSuite({ kem: new DhkemP256HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });

function p256Jwks(): { pub: Record<string, unknown>; priv: Record<string, unknown> } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const priv = privateKey.export({ format: 'jwk' }) as Record<string, unknown>;
  return { pub: { kty: 'EC', crv: 'P-256', x: priv['x'], y: priv['y'] }, priv };
}

describe('node:crypto HPKE primitives under @hpke/core', () => {
  it('reproduce RFC 9180 A.3.1: key pairs, shared secret, enc, every ciphertext, opens and exports', async () => {
    if (!A31) throw new Error('A.3.1 missing from the vectors');
    const suite = nodeSuite('aes128');
    expect([suite.kem.id, suite.kdf.id, suite.aead.id]).toEqual([0x0010, 0x0001, 0x0001]);
    const recipient = await suite.kem.deriveKeyPair(hex(A31.ikmR));
    expect(toHex(await suite.kem.serializePublicKey(recipient.publicKey))).toBe(A31.pkRm);
    expect(toHex(await suite.kem.serializePrivateKey(recipient.privateKey))).toBe(A31.skRm);
    const ephemeral = await suite.kem.deriveKeyPair(hex(A31.ikmE));
    expect(toHex(await suite.kem.serializePublicKey(ephemeral.publicKey))).toBe(A31.pkEm);

    const encap = await suite.kem.encap({ recipientPublicKey: await suite.kem.deserializePublicKey(hex(A31.pkRm)), ekm: ephemeral });
    expect(toHex(encap.sharedSecret)).toBe(A31.shared_secret);
    expect(toHex(encap.enc)).toBe(A31.enc);

    const sender = await suite.createSenderContext({ recipientPublicKey: recipient.publicKey, info: hex(A31.info), ekm: ephemeral });
    expect(toHex(sender.enc)).toBe(A31.enc);
    const sequential = A31.encryptions.filter((e, i) => e.seq === i);
    expect(sequential.length).toBeGreaterThanOrEqual(3);
    for (const e of sequential) expect(toHex(await sender.seal(hex(e.pt), hex(e.aad)))).toBe(e.ct);
    const receiver = await suite.createRecipientContext({ recipientKey: recipient, enc: hex(A31.enc), info: hex(A31.info) });
    for (const e of sequential) expect(toHex(await receiver.open(hex(e.ct), hex(e.aad)))).toBe(e.pt);
    for (const x of A31.exports) {
      expect(toHex(await sender.export(hex(x.exporter_context), x.L))).toBe(x.exported_value);
      expect(toHex(await receiver.export(hex(x.exporter_context), x.L))).toBe(x.exported_value);
    }
    // The recipient key as a raw private key (the library's WebCrypto import path), then DH with
    // a node:crypto public key: the mixed path.
    const skR = await suite.kem.deserializePrivateKey(hex(A31.skRm));
    const first = sequential[0]!;
    expect(toHex(await suite.open({ recipientKey: skR, enc: hex(A31.enc), info: hex(A31.info) }, hex(first.ct), hex(first.aad)))).toBe(first.pt);
  });

  it('the session suite is DHKEM(P-256, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM on these primitives', () => {
    const s = sessionHpkeSuite();
    expect([s.kem.id, s.kdf.id, s.aead.id]).toEqual([0x0010, 0x0001, 0x0002]);
    expect(s.kem).toBeInstanceOf(NodeDhkemP256HkdfSha256);
    expect(s.kdf).toBeInstanceOf(NodeHkdfSha256);
    expect(s.aead).toBeInstanceOf(NodeAesGcm);
  });

  it('what sealSessionKey seals opens with the stock WebCrypto suite, and the reverse, on random inputs', async () => {
    const stock = stockSuite();
    for (let i = 0; i < 25; i++) {
      const { pub, priv } = p256Jwks();
      const key = randomBytes(32);
      const jti = randomBytes(1 + (i % 40)).toString('base64url');
      const info = sessionKeyInfo(jti);
      const sealed = await sealSessionKey(pub, key, jti);
      const skR = await stock.kem.importKey('jwk', { kty: 'EC', crv: 'P-256', x: priv['x'] as string, y: priv['y'] as string, d: priv['d'] as string }, false);
      const opened = await stock.open({ recipientKey: skR, enc: Buffer.from(sealed.enc, 'base64url'), info }, Buffer.from(sealed.ciphertext, 'base64url'), new Uint8Array(0));
      expect(Buffer.from(opened).equals(key)).toBe(true);

      const pkR = await stock.kem.importKey('jwk', pub as { kty: string; crv: string; x: string; y: string }, true);
      const back = await stock.seal({ recipientPublicKey: pkR, info }, key, new Uint8Array(0));
      const enc = Buffer.from(back.enc).toString('base64url');
      const ct = Buffer.from(back.ct).toString('base64url');
      expect((await openSessionKey(priv, enc, ct, jti)).equals(key)).toBe(true);
    }
  });

  it('node-generated recipient keys work with the stock sender, and stock-generated ones with the node sender', async () => {
    const stock = stockSuite();
    const fast = nodeSuite('aes256');
    const info = randomBytes(20);
    const pt = randomBytes(32);
    const nodePair = await fast.kem.generateKeyPair();
    const pkRm = await fast.kem.serializePublicKey(nodePair.publicKey);
    const s1 = await stock.seal({ recipientPublicKey: await stock.kem.deserializePublicKey(pkRm), info }, pt);
    expect(Buffer.from(await fast.open({ recipientKey: nodePair, enc: s1.enc, info }, s1.ct)).equals(pt)).toBe(true);
    expect(Buffer.from(await fast.open({ recipientKey: nodePair.privateKey, enc: s1.enc, info }, s1.ct)).equals(pt)).toBe(true);
    const stockPair = await stock.kem.generateKeyPair();
    const s2 = await fast.seal({ recipientPublicKey: await fast.kem.deserializePublicKey(await stock.kem.serializePublicKey(stockPair.publicKey)), info }, pt);
    expect(Buffer.from(await stock.open({ recipientKey: stockPair, enc: s2.enc, info }, s2.ct)).equals(pt)).toBe(true);
    // The serialized node private key is the scalar the stock suite imports.
    const sk = await stock.kem.deserializePrivateKey(await fast.kem.serializePrivateKey(nodePair.privateKey));
    expect(Buffer.from(await stock.open({ recipientKey: sk, enc: s1.enc, info }, s1.ct)).equals(pt)).toBe(true);
  });

  it('refuses points off the curve, of the wrong size or compressed, and tampered ciphertexts, like the stock suite', async () => {
    const fast = nodeSuite('aes256');
    const stock = stockSuite();
    const good = Buffer.from(await fast.kem.serializePublicKey((await fast.kem.generateKeyPair()).publicKey));
    const offCurve = Buffer.from(good);
    offCurve[64] = (offCurve[64] as number) ^ 0x01;
    const bad = [offCurve, good.subarray(0, 64), Buffer.concat([Buffer.from([0x02]), good.subarray(1, 33)]), Buffer.alloc(65)];
    for (const b of bad) {
      await expect(fast.kem.deserializePublicKey(b)).rejects.toThrow();
      await expect(stock.kem.deserializePublicKey(b)).rejects.toThrow();
    }
    const pair = await fast.kem.generateKeyPair();
    const info = Buffer.from('i');
    const sealed = await fast.seal({ recipientPublicKey: pair.publicKey, info }, randomBytes(32));
    const ct = Buffer.from(sealed.ct);
    ct[3] = (ct[3] as number) ^ 0x80;
    await expect(fast.open({ recipientKey: pair, enc: sealed.enc, info }, ct)).rejects.toThrow();
    await expect(fast.open({ recipientKey: pair, enc: sealed.enc, info: Buffer.from('j') }, sealed.ct)).rejects.toThrow();
    // An enc that is a valid point but not the one sealed with: another shared secret, tag fails.
    await expect(fast.open({ recipientKey: pair, enc: good, info }, sealed.ct)).rejects.toThrow();
  });

  it('a point already checked becomes a recipient key without a second decode; only the form is checked there', async () => {
    const kem = new NodeDhkemP256HkdfSha256();
    const pair = await kem.generateKeyPair();
    const good = Buffer.from(await kem.serializePublicKey(pair.publicKey));
    const direct = kem.publicKeyFromCheckedPoint(good);
    expect(Buffer.from(await kem.serializePublicKey(direct))).toEqual(good);
    // Sealing to it opens with the pair's private key, as sealing to the deserialized key does.
    const suite = new CipherSuite({ kem, kdf: new NodeHkdfSha256(), aead: new NodeAesGcm(AeadId.Aes256Gcm, 32) });
    const info = Buffer.from('custos session key' + 'jti');
    const sealed = await suite.seal({ recipientPublicKey: direct, info }, Buffer.alloc(32, 7));
    expect(Buffer.from(await suite.open({ recipientKey: pair, enc: sealed.enc, info }, sealed.ct))).toEqual(Buffer.alloc(32, 7));
    for (const b of [good.subarray(0, 64), Buffer.concat([Buffer.from([0x02]), good.subarray(1)]), Buffer.alloc(0)]) {
      expect(() => kem.publicKeyFromCheckedPoint(b)).toThrow();
    }
  });

  it('the AEAD refuses a key of the wrong size and an id that disagrees with its size', () => {
    expect(() => new NodeAesGcm(AeadId.Aes128Gcm, 32)).toThrow();
    expect(() => new NodeAesGcm(AeadId.Aes256Gcm, 32).createEncryptionContext(new Uint8Array(16))).toThrow();
    expect(new Aes128Gcm().keySize).toBe(new NodeAesGcm(AeadId.Aes128Gcm, 16).keySize);
  });

  it('sealSessionKey still maps a bad recipient key to ERR_EPHEMERAL_KEY', async () => {
    const { pub } = p256Jwks();
    const y = Buffer.from(String(pub['y']), 'base64url');
    y[31] = (y[31] as number) ^ 0x01;
    let code: string | undefined;
    try {
      await sealSessionKey({ ...pub, y: y.toString('base64url') }, randomBytes(32), 'j');
    } catch (e) {
      code = isCustosError(e) ? e.code : 'other';
    }
    expect(code).toBe('ERR_EPHEMERAL_KEY');
  });
});
