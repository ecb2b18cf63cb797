import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadTrustAnchors, parseTrustAnchors, trimCertificatePadding, verifyEkCertificate } from '../../../src/attestation/ek-chain.js';
import { caExt, der, eccEkPublic, ecKeys, ekExt, issue } from './ek-fixtures.js';
import { BasicConstraintsExtension, KeyUsageFlags, KeyUsagesExtension, SubjectAlternativeNameExtension } from '@peculiar/x509';
import { vec } from './vectors.js';

const EK_CA_DIR = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../attestation/ek-ca');
// The vectors' EK certificates start when they were made: check them at the present time.
const now = new Date(Math.max(Date.now(), Date.parse('2026-12-01T00:00:00Z')));
const localAnchors = () => parseTrustAnchors([{ name: 'root', bytes: vec('localca-root.pem') }]);

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ code });
}

describe('verifyEkCertificate with the swtpm EK certificates', () => {
  it('RSA-2048 EK: chains through the intermediate sent with the request', async () => {
    const r = await verifyEkCertificate({
      ekCertDer: vec('ek-rsa-cert.nv.der'),
      intermediates: [vec('localca-intermediate.pem')],
      anchors: localAnchors(),
      ekPublic: vec('ek-rsa.pub'),
      now,
    });
    expect(r.chain.map((c) => c.subject)).toEqual(['CN=unknown', 'CN=swtpm-localca', expect.stringContaining('swtpm-localca-rootca')]);
    expect(r.chain.at(-1)!.anchor).toBe(true);
    expect(r.ekuPresent).toBe(true);
    expect(r.tpm).toEqual({ manufacturer: 'id:00001014', model: 'swtpm', version: 'id:20191023' });
    expect(r.ekPublicHash).toMatch(/^[0-9a-f]{64}$/);
    expect(r.expiredCertificates).toEqual([]);
  });

  it('P-384 EK: chains with the intermediate from the anchor set', async () => {
    const anchors = parseTrustAnchors([{ name: 'both', bytes: Buffer.concat([vec('localca-root.pem'), vec('localca-intermediate.pem')]) }]);
    expect(anchors.certificates).toHaveLength(2);
    const r = await verifyEkCertificate({ ekCertDer: vec('ek-ecc384-cert.nv.der'), anchors, ekPublic: vec('ek-ecc384.pub'), now });
    // Trust stops at the first anchor: the intermediate itself is anchored.
    expect(r.chain).toHaveLength(2);
    expect(r.issuer).toBe('CN=swtpm-localca');
  });

  it('accepts trailing NV padding but not other trailing data', async () => {
    const padded = Buffer.concat([vec('ek-rsa-cert.nv.der'), Buffer.alloc(200, 0xff)]);
    const base = { intermediates: [vec('localca-intermediate.pem')], anchors: localAnchors(), ekPublic: vec('ek-rsa.pub'), now };
    const r = await verifyEkCertificate({ ...base, ekCertDer: padded });
    expect(r.ekCertDer).toEqual(trimCertificatePadding(vec('ek-rsa-cert.nv.der')));
    await rejectsCode(verifyEkCertificate({ ...base, ekCertDer: Buffer.concat([vec('ek-rsa-cert.nv.der'), Buffer.from('junk')]) }), 'ERR_EK_CERT_INVALID');
    await rejectsCode(verifyEkCertificate({ ...base, ekCertDer: vec('ek-rsa-cert.nv.der').subarray(0, 500) }), 'ERR_EK_CERT_INVALID');
    await rejectsCode(verifyEkCertificate({ ...base, ekCertDer: Buffer.from('not a certificate') }), 'ERR_EK_CERT_INVALID');
  });

  it('EK certificate from an unknown CA → ERR_EK_CERT_CHAIN (vendor anchors only)', async () => {
    const anchors = await loadTrustAnchors(EK_CA_DIR);
    await rejectsCode(
      verifyEkCertificate({ ekCertDer: vec('ek-rsa-cert.nv.der'), intermediates: [vec('localca-intermediate.pem')], anchors, ekPublic: vec('ek-rsa.pub'), now }),
      'ERR_EK_CERT_CHAIN',
    );
  });

  it('EK certificate key ≠ EK public → ERR_EK_MISMATCH', async () => {
    await rejectsCode(
      verifyEkCertificate({ ekCertDer: vec('ek-rsa-cert.nv.der'), intermediates: [vec('localca-intermediate.pem')], anchors: localAnchors(), ekPublic: vec('ek-ecc384.pub'), now }),
      'ERR_EK_MISMATCH',
    );
    await rejectsCode(
      verifyEkCertificate({ ekCertDer: vec('ek-ecc384-cert.nv.der'), intermediates: [vec('localca-intermediate.pem')], anchors: localAnchors(), ekPublic: vec('ek-rsa.pub'), now }),
      'ERR_EK_MISMATCH',
    );
  });
});

describe('loadTrustAnchors', () => {
  it('loads the default vendor CA folder (one certificate per file, README ignored)', async () => {
    const a = await loadTrustAnchors(EK_CA_DIR);
    expect(a.certificates.length).toBeGreaterThanOrEqual(50);
  });
  it('reads several certificates per PEM file and DER files; fails on an empty or bad folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'custos-anchors-'));
    try {
      await writeFile(join(dir, 'two.pem'), Buffer.concat([vec('localca-root.pem'), vec('localca-intermediate.pem')]));
      await writeFile(join(dir, 'ek.der'), trimCertificatePadding(vec('ek-rsa-cert.nv.der')));
      await writeFile(join(dir, 'notes.txt'), 'ignored');
      expect((await loadTrustAnchors(dir)).certificates).toHaveLength(3);
      await writeFile(join(dir, 'bad.pem'), 'garbage');
      await rejectsCode(loadTrustAnchors(dir), 'ERR_CONFIG');
      await rejectsCode(loadTrustAnchors(join(dir, 'missing')), 'ERR_CONFIG');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('verifyEkCertificate leniencies and profile checks (synthetic chains)', () => {
  async function chain(o: { intermediateNotAfter?: Date; intermediateCa?: boolean; intermediateExtensions?: ReturnType<typeof ekExt>; ekExtensions?: ReturnType<typeof ekExt>; serial?: string } = {}) {
    const rootKeys = await ecKeys();
    const intKeys = await ecKeys();
    const ekKeys = await ecKeys();
    const root = await issue({ subject: 'CN=Test TPM Root CA', publicKey: rootKeys.publicKey, signingKey: rootKeys.privateKey, extensions: caExt() });
    const intermediate = await issue({
      subject: 'CN=Test TPM Intermediate CA',
      issuer: { name: 'CN=Test TPM Root CA', key: rootKeys.privateKey },
      publicKey: intKeys.publicKey,
      signingKey: rootKeys.privateKey,
      notBefore: new Date('2015-01-01T00:00:00Z'),
      notAfter: o.intermediateNotAfter ?? new Date('2099-01-01T00:00:00Z'),
      extensions: o.intermediateExtensions ?? (o.intermediateCa === false ? [] : caExt()),
    });
    const ek = await issue({
      subject: '',
      issuer: { name: 'CN=Test TPM Intermediate CA', key: intKeys.privateKey },
      publicKey: ekKeys.publicKey,
      signingKey: intKeys.privateKey,
      serial: o.serial ?? '01',
      notAfter: new Date('9999-12-31T23:59:59Z'),
      extensions: o.ekExtensions ?? ekExt(),
    });
    return {
      root,
      intermediate,
      ek,
      ekPublic: await eccEkPublic(ekKeys.publicKey),
      anchors: parseTrustAnchors([{ name: 'root', bytes: der(root) }]),
    };
  }

  it('accepts a negative serial, an empty subject and an unknown critical extension', async () => {
    const c = await chain({ serial: 'ff01' });
    const r = await verifyEkCertificate({ ekCertDer: der(c.ek), intermediates: [der(c.intermediate)], anchors: c.anchors, ekPublic: c.ekPublic, now });
    expect(r.chain).toHaveLength(3);
    expect(r.subject).toBe('');
  });

  it('an expired intermediate is accepted and reported; requireValidity refuses it', async () => {
    const c = await chain({ intermediateNotAfter: new Date('2025-10-20T00:00:00Z') });
    const base = { ekCertDer: der(c.ek), intermediates: [der(c.intermediate)], anchors: c.anchors, ekPublic: c.ekPublic, now };
    const r = await verifyEkCertificate(base);
    expect(r.expiredCertificates).toEqual(['CN=Test TPM Intermediate CA']);
    await rejectsCode(verifyEkCertificate({ ...base, requireValidity: true }), 'ERR_EK_CERT_CHAIN');
  });

  it('EKU without tcg-kp-EKCertificate → ERR_EK_CERT_INVALID; CA EK certificate → ERR_EK_CERT_INVALID', async () => {
    const c = await chain({ ekExtensions: ekExt('1.3.6.1.5.5.7.3.1') });
    await rejectsCode(verifyEkCertificate({ ekCertDer: der(c.ek), intermediates: [der(c.intermediate)], anchors: c.anchors, ekPublic: c.ekPublic, now }), 'ERR_EK_CERT_INVALID');
    const d = await chain({ ekExtensions: caExt() });
    await rejectsCode(verifyEkCertificate({ ekCertDer: der(d.ek), intermediates: [der(d.intermediate)], anchors: d.anchors, ekPublic: d.ekPublic, now }), 'ERR_EK_CERT_INVALID');
  });

  it('no EKU: the TPM manufacturer in the SAN is what makes it an EK certificate; neither → ERR_EK_CERT_INVALID', async () => {
    const endEntity = [new BasicConstraintsExtension(false, undefined, true)];
    // Any end-entity certificate under a vendor CA (a device's, a server's) must not pass for an EK certificate.
    const bare = await chain({ ekExtensions: endEntity });
    await rejectsCode(verifyEkCertificate({ ekCertDer: der(bare.ek), intermediates: [der(bare.intermediate)], anchors: bare.anchors, ekPublic: bare.ekPublic, now }), 'ERR_EK_CERT_INVALID');
    const san = new SubjectAlternativeNameExtension([{ type: 'dn', value: '2.23.133.2.1=id:49465800+2.23.133.2.2=SLB9670+2.23.133.2.3=id:00070055' }], true);
    const profiled = await chain({ ekExtensions: [...endEntity, san] });
    const r = await verifyEkCertificate({ ekCertDer: der(profiled.ek), intermediates: [der(profiled.intermediate)], anchors: profiled.anchors, ekPublic: profiled.ekPublic, now });
    expect([r.ekuPresent, r.tpm.manufacturer]).toEqual([false, 'id:49465800']);
  });

  it('an intermediate whose keyUsage does not allow keyCertSign → ERR_EK_CERT_CHAIN; with it, accepted', async () => {
    const noSign = await chain({ intermediateExtensions: [...caExt(), new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true)] });
    await rejectsCode(verifyEkCertificate({ ekCertDer: der(noSign.ek), intermediates: [der(noSign.intermediate)], anchors: noSign.anchors, ekPublic: noSign.ekPublic, now }), 'ERR_EK_CERT_CHAIN');
    const ok = await chain({ intermediateExtensions: [...caExt(), new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true)] });
    expect((await verifyEkCertificate({ ekCertDer: der(ok.ek), intermediates: [der(ok.intermediate)], anchors: ok.anchors, ekPublic: ok.ekPublic, now })).chain).toHaveLength(3);
  });

  it('a chain longer than an intermediate’s pathLenConstraint → ERR_EK_CERT_CHAIN', async () => {
    const [rootKeys, upperKeys, lowerKeys, ekKeys] = await Promise.all([ecKeys(), ecKeys(), ecKeys(), ecKeys()]);
    const root = await issue({ subject: 'CN=Root', publicKey: rootKeys.publicKey, signingKey: rootKeys.privateKey, extensions: caExt() });
    const upperOf = (pathLen: number) => issue({ subject: 'CN=Upper', issuer: { name: 'CN=Root', key: rootKeys.privateKey }, publicKey: upperKeys.publicKey, signingKey: rootKeys.privateKey, extensions: [new BasicConstraintsExtension(true, pathLen, true)] });
    const lower = await issue({ subject: 'CN=Lower', issuer: { name: 'CN=Upper', key: upperKeys.privateKey }, publicKey: lowerKeys.publicKey, signingKey: upperKeys.privateKey, extensions: caExt() });
    const ek = await issue({ subject: '', issuer: { name: 'CN=Lower', key: lowerKeys.privateKey }, publicKey: ekKeys.publicKey, signingKey: lowerKeys.privateKey, extensions: ekExt() });
    const input = async (pathLen: number) => ({ ekCertDer: der(ek), intermediates: [der(lower), der(await upperOf(pathLen))], anchors: parseTrustAnchors([{ name: 'root', bytes: der(root) }]), ekPublic: await eccEkPublic(ekKeys.publicKey), now });
    // Upper allows no CA below it, and Lower is one.
    await rejectsCode(verifyEkCertificate(await input(0)), 'ERR_EK_CERT_CHAIN');
    expect((await verifyEkCertificate(await input(1))).chain).toHaveLength(4);
  });

  it('an intermediate that is not a CA → ERR_EK_CERT_CHAIN', async () => {
    const c = await chain({ intermediateCa: false });
    await rejectsCode(verifyEkCertificate({ ekCertDer: der(c.ek), intermediates: [der(c.intermediate)], anchors: c.anchors, ekPublic: c.ekPublic, now }), 'ERR_EK_CERT_CHAIN');
  });

  it('missing intermediate or a tampered signature → ERR_EK_CERT_CHAIN', async () => {
    const c = await chain();
    await rejectsCode(verifyEkCertificate({ ekCertDer: der(c.ek), anchors: c.anchors, ekPublic: c.ekPublic, now }), 'ERR_EK_CERT_CHAIN');
    const t = der(c.ek);
    t[t.length - 5]! ^= 0x01;
    await rejectsCode(verifyEkCertificate({ ekCertDer: t, intermediates: [der(c.intermediate)], anchors: c.anchors, ekPublic: c.ekPublic, now }), 'ERR_EK_CERT_CHAIN');
    const other = await chain();
    await rejectsCode(verifyEkCertificate({ ekCertDer: der(c.ek), intermediates: [der(c.intermediate)], anchors: other.anchors, ekPublic: c.ekPublic, now }), 'ERR_EK_CERT_CHAIN');
  });
});
