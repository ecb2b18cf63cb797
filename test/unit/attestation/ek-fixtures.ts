/** Synthetic EK certificate chains for unit tests (software keys, @peculiar/x509 generator). */
import 'reflect-metadata';
import { webcrypto, createPublicKey } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import {
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  Extension,
  X509Certificate,
  X509CertificateGenerator,
  cryptoProvider,
} from '@peculiar/x509';
import { TPM_ALG } from '../../../src/attestation/tpm2/algorithms.js';
import { TpmWriter } from '../../../src/attestation/tpm2/reader.js';

cryptoProvider.set(webcrypto as unknown as Parameters<typeof cryptoProvider.set>[0]);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A P-256 key pair. */
export async function ecKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** TPM2B_PUBLIC of an ECC P-256 storage key (EK-like) for a webcrypto public key. */
export async function eccEkPublic(pub: CryptoKey): Promise<Buffer> {
  const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', pub));
  const jwk = createPublicKey({ key: spki, format: 'der', type: 'spki' }).export({ format: 'jwk' });
  const x = Buffer.from(jwk.x!, 'base64url');
  const y = Buffer.from(jwk.y!, 'base64url');
  const t = new TpmWriter()
    .u16(TPM_ALG.ECC)
    .u16(TPM_ALG.SHA256)
    .u32(0x000300b2)
    .tpm2b(Buffer.alloc(32, 0x83))
    .u16(TPM_ALG.AES).u16(128).u16(TPM_ALG.CFB)
    .u16(TPM_ALG.NULL)
    .u16(0x0003)
    .u16(TPM_ALG.NULL)
    .tpm2b(x)
    .tpm2b(y)
    .toBuffer();
  return new TpmWriter().tpm2b(t).toBuffer();
}

/** Options for {@link issue}. */
export interface IssueOptions {
  readonly subject: string;
  readonly issuer?: { name: string; key: CryptoKey };
  readonly publicKey: CryptoKey;
  readonly signingKey: CryptoKey;
  readonly serial?: string;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  readonly extensions?: Extension[];
}

/** Issues a certificate. */
export async function issue(o: IssueOptions): Promise<X509Certificate> {
  return X509CertificateGenerator.create({
    serialNumber: o.serial ?? '01',
    subject: o.subject,
    issuer: o.issuer?.name ?? o.subject,
    notBefore: o.notBefore ?? new Date('2020-01-01T00:00:00Z'),
    notAfter: o.notAfter ?? new Date('2099-01-01T00:00:00Z'),
    signingAlgorithm: ALG,
    publicKey: o.publicKey,
    signingKey: o.signingKey,
    extensions: o.extensions ?? [],
  });
}

/** A CA certificate extension set. */
export function caExt(): Extension[] {
  return [new BasicConstraintsExtension(true, undefined, true)];
}

/** EK extensions: EKU tcg-kp-EKCertificate, CA false, and an unknown critical extension. */
export function ekExt(eku = '2.23.133.8.1'): Extension[] {
  return [
    new BasicConstraintsExtension(false, undefined, true),
    new ExtendedKeyUsageExtension([eku]),
    new Extension('1.3.6.1.4.1.99999.1', true, new Uint8Array([0x05, 0x00])),
  ];
}

/** DER bytes of a certificate. */
export function der(c: X509Certificate): Buffer {
  return Buffer.from(c.rawData);
}
