/**
 * EK certificate validation (TCG EK Credential Profile for TPM Family 2.0, §3): the EK
 * certificate must chain to a configured TPM-vendor CA, and its public key must be the EK public
 * area the host sent. Chains are built with @peculiar/x509; key comparison uses node:crypto.
 *
 * Leniencies, each deliberate because real vendors ship such certificates (see
 * attestation/README.md):
 * - trailing 0x00/0xFF bytes after the DER certificate (EK certificates are read from NV indices
 *   sized larger than the certificate) are cut off;
 * - negative or over-long serial numbers are accepted (several vendors encode serials as
 *   unsigned 20-byte values without the leading zero);
 * - a critical Subject Alternative Name holding a directoryName with the TPM manufacturer, model
 *   and version attributes (2.23.133.2.1/2/3) is expected, not an error; an empty subject too;
 * - unknown critical extensions are not rejected (EK certificates carry TCG-specific critical
 *   extensions RFC 5280 path validation does not know; the signature chain is what is checked);
 * - expired CA certificates are accepted by default and reported in `expiredCertificates`
 *   (the profile does not tie EK validity to time; `requireValidity` refuses them).
 */
import 'reflect-metadata';
import { X509Certificate as NodeX509 } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KeyUsageFlags, X509Certificate, X509ChainBuilder } from '@peculiar/x509';
import { CustosError } from '../lib/errors.js';
import { parseTpm2bPublic, tpmPublicEqualsSpki, type TpmtPublic } from './tpm2/public.js';
import { sha256hex } from '../lib/encoding.js';

/** tcg-kp-EKCertificate (TCG EK Credential Profile, §3.2.16). */
export const OID_TCG_KP_EK_CERTIFICATE = '2.23.133.8.1';
const OID_EKU = '2.5.29.37';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_KEY_USAGE = '2.5.29.15';

/** A set of trusted CA certificates (roots or intermediates). */
export interface TrustAnchors {
  readonly certificates: readonly X509Certificate[];
}

/** One certificate of a verified chain. */
export interface ChainEntry {
  readonly subject: string;
  readonly issuer: string;
  readonly serialNumber: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** True when `now` is outside notBefore..notAfter. */
  readonly outsideValidity: boolean;
  /** True for the configured anchor that ends the chain. */
  readonly anchor: boolean;
}

/** TPM identity from the EK certificate's SAN directoryName (profile §3.2.9), when present. */
export interface TpmIdentity {
  readonly manufacturer?: string;
  readonly model?: string;
  readonly version?: string;
}

/** Result of {@link verifyEkCertificate}. */
export interface EkVerification {
  readonly subject: string;
  readonly issuer: string;
  /** EK certificate first, the anchor last. */
  readonly chain: ChainEntry[];
  /** Lower-case hex SHA-256 of the EK certificate's SubjectPublicKeyInfo DER (allowlist key). */
  readonly ekPublicHash: string;
  /** Subjects of chain certificates used outside their validity (accepted unless requireValidity). */
  readonly expiredCertificates: string[];
  /** Whether the EK certificate carried an EKU extension (it must then include tcg-kp-EKCertificate). */
  readonly ekuPresent: boolean;
  readonly tpm: TpmIdentity;
  /** DER of the EK certificate without NV padding. */
  readonly ekCertDer: Buffer;
}

/** Input of {@link verifyEkCertificate}. */
export interface VerifyEkInput {
  /** EK certificate DER, possibly with trailing NV padding. */
  readonly ekCertDer: Buffer;
  /** Intermediates sent by the host (DER or PEM each). */
  readonly intermediates?: readonly Buffer[];
  readonly anchors: TrustAnchors;
  /** EK public area: parsed, or TPM2B_PUBLIC bytes. */
  readonly ekPublic: TpmtPublic | Buffer;
  readonly now: Date;
  /** Refuse chain certificates outside their validity period (default false). */
  readonly requireValidity?: boolean;
}

function derLength(b: Buffer): number | undefined {
  // Outer SEQUENCE of a DER certificate: tag 0x30, then a short or long-form length.
  if (b.length < 2 || b[0] !== 0x30) return undefined;
  const l0 = b[1]!;
  if (l0 < 0x80) return 2 + l0;
  const n = l0 & 0x7f;
  if (n === 0 || n > 4 || b.length < 2 + n) return undefined;
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + b[2 + i]!;
  return 2 + n + len;
}

/**
 * Cuts NV padding (0x00 or 0xFF bytes) after a DER certificate.
 * @throws ERR_EK_CERT_INVALID if the bytes are not a DER SEQUENCE, are truncated, or are followed
 * by anything other than padding.
 */
export function trimCertificatePadding(der: Buffer): Buffer {
  const len = derLength(der);
  if (len === undefined || len > der.length) throw new CustosError('ERR_EK_CERT_INVALID', 'The EK certificate is not DER.');
  const tail = der.subarray(len);
  if (!tail.every((x) => x === 0x00) && !tail.every((x) => x === 0xff)) {
    throw new CustosError('ERR_EK_CERT_INVALID', 'Unexpected data after the EK certificate.');
  }
  return Buffer.from(der.subarray(0, len));
}

function pemBlocks(text: string): Buffer[] {
  const out: Buffer[] = [];
  const re = /-----BEGIN (?:TRUSTED )?CERTIFICATE-----([\s\S]*?)-----END (?:TRUSTED )?CERTIFICATE-----/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) out.push(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  return out;
}

function parseCert(der: Buffer, what: string): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch (cause) {
    throw new CustosError('ERR_EK_CERT_INVALID', `${what} is not a readable X.509 certificate.`, { cause });
  }
}

/** DER or PEM (one or more certificates) to DER buffers. */
export function certificatesFromBytes(bytes: Buffer): Buffer[] {
  const text = bytes.toString('latin1');
  if (text.includes('-----BEGIN')) return pemBlocks(text);
  return [trimCertificatePadding(bytes)];
}

/**
 * Builds trust anchors from certificate files' contents (PEM with one or more certificates, or
 * DER).
 * @throws ERR_CONFIG if a file holds no certificate or one that does not parse.
 */
export function parseTrustAnchors(files: ReadonlyArray<{ name: string; bytes: Buffer }>): TrustAnchors {
  const certificates: X509Certificate[] = [];
  for (const f of files) {
    let ders: Buffer[];
    try {
      ders = certificatesFromBytes(f.bytes);
    } catch (cause) {
      throw new CustosError('ERR_CONFIG', `Trust anchor ${f.name} is not a certificate.`, { cause });
    }
    if (ders.length === 0) throw new CustosError('ERR_CONFIG', `Trust anchor ${f.name} holds no certificate.`);
    for (const d of ders) {
      try {
        certificates.push(new X509Certificate(d));
      } catch (cause) {
        throw new CustosError('ERR_CONFIG', `Trust anchor ${f.name} does not parse.`, { cause });
      }
    }
  }
  return { certificates };
}

/**
 * Loads every `.pem`, `.crt`, `.cer` and `.der` file of `dir` as trust anchors (a file may hold
 * several PEM certificates). Other files (README) are ignored.
 * @throws ERR_CONFIG if the folder cannot be read, holds no certificate, or a file does not parse.
 */
export async function loadTrustAnchors(dir: string): Promise<TrustAnchors> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => /\.(pem|crt|cer|der)$/i.test(n)).sort();
  } catch (cause) {
    throw new CustosError('ERR_CONFIG', 'The EK trust anchor folder cannot be read.', { cause });
  }
  const files = await Promise.all(names.map(async (name) => ({ name, bytes: await readFile(join(dir, name)) })));
  const anchors = parseTrustAnchors(files);
  if (anchors.certificates.length === 0) throw new CustosError('ERR_CONFIG', 'The EK trust anchor folder holds no certificate.');
  return anchors;
}

function same(a: X509Certificate, b: X509Certificate): boolean {
  return Buffer.from(a.rawData).equals(Buffer.from(b.rawData));
}

function derString(b: Buffer): string | undefined {
  // UTF8String, PrintableString or IA5String with a short-form length.
  if (b.length < 2 || ![0x0c, 0x13, 0x16].includes(b[0]!) || b[1]! >= 0x80 || b.length !== 2 + b[1]!) return undefined;
  return b.subarray(2).toString('utf8');
}

function tpmIdentity(der: Buffer): TpmIdentity {
  // node renders the SAN directoryName as e.g. "DirName:2.23.133.2.1=id:00001014\n2.23.133.2.2=…".
  let san: string | undefined;
  try {
    san = new NodeX509(der).subjectAltName;
  } catch {
    return {};
  }
  if (!san) return {};
  const pick = (oid: string): string | undefined => {
    // Attribute separators vary (",", "+", an escaped "\u002c"): stop at any of them.
    const m = new RegExp(`${oid.replace(/\./g, '\\.')}=(#[0-9A-Fa-f]+|[^\\\\\\n,/+"]+)`).exec(san!);
    const v = m?.[1]?.trim();
    // OpenSSL prints attributes of unknown types as '#' + hex of the DER string value.
    return v?.startsWith('#') ? derString(Buffer.from(v.slice(1), 'hex')) : v;
  };
  const out: { manufacturer?: string; model?: string; version?: string } = {};
  const man = pick('2.23.133.2.1');
  const model = pick('2.23.133.2.2');
  const ver = pick('2.23.133.2.3');
  if (man !== undefined) out.manufacturer = man;
  if (model !== undefined) out.model = model;
  if (ver !== undefined) out.version = ver;
  return out;
}

function isCa(c: X509Certificate): boolean | undefined {
  const bc = c.getExtension(OID_BASIC_CONSTRAINTS) as unknown as { ca?: boolean } | null;
  return bc === null ? undefined : bc.ca === true;
}

/** basicConstraints pathLenConstraint, when the certificate sets one. */
function pathLength(c: X509Certificate): number | undefined {
  const bc = c.getExtension(OID_BASIC_CONSTRAINTS) as unknown as { pathLength?: number } | null;
  return typeof bc?.pathLength === 'number' ? bc.pathLength : undefined;
}

/** Whether a CA's keyUsage, when present, allows signing certificates (RFC 5280 §4.2.1.3). */
function mayCertSign(c: X509Certificate): boolean {
  const ku = c.getExtension(OID_KEY_USAGE) as unknown as { usages: number } | null;
  return ku === null || (ku.usages & KeyUsageFlags.keyCertSign) !== 0;
}

/**
 * Verifies an EK certificate: it parses (NV padding trimmed), its public key equals the EK
 * public area, it is an end-entity certificate (basicConstraints cA absent or false) whose EKU,
 * if present, includes tcg-kp-EKCertificate (2.23.133.8.1), and it chains through the given or
 * anchored intermediates to a certificate in `anchors`, every signature in the chain verified and
 * every intermediate a CA allowed to sign certificates (keyUsage keyCertSign when keyUsage is
 * present) within its pathLenConstraint. Without the EKU, the SAN must name the TPM manufacturer.
 *
 * @throws ERR_EK_CERT_INVALID (not a certificate, not an EK certificate profile),
 * ERR_EK_MISMATCH (key differs from `ekPublic`), ERR_EK_CERT_CHAIN (no chain to an anchor, a bad
 * signature, a non-CA intermediate, or — with requireValidity — a certificate outside its
 * validity), ERR_TPM_MARSHAL for unparsable `ekPublic` bytes.
 */
export async function verifyEkCertificate(input: VerifyEkInput): Promise<EkVerification> {
  const ekPub = Buffer.isBuffer(input.ekPublic) ? parseTpm2bPublic(input.ekPublic) : input.ekPublic;
  const der = trimCertificatePadding(input.ekCertDer);
  const cert = parseCert(der, 'The EK certificate');

  const spki = Buffer.from(cert.publicKey.rawData);
  if (!tpmPublicEqualsSpki(ekPub, spki)) throw new CustosError('ERR_EK_MISMATCH');

  if (isCa(cert) === true) throw new CustosError('ERR_EK_CERT_INVALID', 'The EK certificate is a CA certificate.');
  const eku = cert.getExtension(OID_EKU) as unknown as { usages: string[] } | null;
  if (eku !== null && !eku.usages.map(String).includes(OID_TCG_KP_EK_CERTIFICATE)) {
    throw new CustosError('ERR_EK_CERT_INVALID', 'The EK certificate EKU lacks tcg-kp-EKCertificate.');
  }
  // Without the EKU, the profile's required SAN (TPM manufacturer, §3.2.9) is what marks an EK
  // certificate: otherwise any end-entity certificate a vendor CA ever issued (for a device, a
  // platform, a server) would pass for one, and its key holder could enroll a software "TPM".
  const tpm = tpmIdentity(der);
  if (eku === null && tpm.manufacturer === undefined) {
    throw new CustosError('ERR_EK_CERT_INVALID', 'The EK certificate has neither the tcg-kp-EKCertificate EKU nor a TPM manufacturer in its subject alternative name.');
  }

  const extra: X509Certificate[] = [];
  for (const b of input.intermediates ?? []) for (const d of certificatesFromBytes(b)) extra.push(parseCert(d, 'An intermediate certificate'));
  const pool = [...extra, ...input.anchors.certificates];

  let built: X509Certificate[];
  try {
    built = [...(await new X509ChainBuilder({ certificates: pool }).build(cert))];
  } catch (cause) {
    throw new CustosError('ERR_EK_CERT_CHAIN', undefined, { cause });
  }
  // Trust stops at the first configured anchor (an anchored intermediate suffices).
  const anchorAt = built.findIndex((c, i) => i > 0 && input.anchors.certificates.some((a) => same(a, c)));
  if (anchorAt < 0) throw new CustosError('ERR_EK_CERT_CHAIN');
  const chain = built.slice(0, anchorAt + 1);

  // The builder picks issuers by signature; check every link again so the result does not rest
  // on a library's search heuristics, and require intermediates (not anchors) to be CAs.
  for (let i = 0; i < chain.length - 1; i++) {
    const child = chain[i]!;
    const parent = chain[i + 1]!;
    let ok = false;
    try {
      ok = new NodeX509(Buffer.from(child.rawData)).verify(new NodeX509(Buffer.from(parent.rawData)).publicKey);
    } catch {
      ok = false;
    }
    if (!ok) throw new CustosError('ERR_EK_CERT_CHAIN', 'A signature in the EK certificate chain does not verify.');
    if (i + 1 < chain.length - 1) {
      // An intermediate (the anchor's own constraints are the configuration's business): a CA
      // allowed to sign certificates, with no more CAs below it than its path length allows
      // (RFC 5280 §4.2.1.9; the CAs between it and the EK certificate are i of them).
      if (isCa(parent) !== true) throw new CustosError('ERR_EK_CERT_CHAIN', 'An intermediate is not a CA certificate.');
      if (!mayCertSign(parent)) throw new CustosError('ERR_EK_CERT_CHAIN', 'An intermediate may not sign certificates (keyUsage without keyCertSign).');
      const max = pathLength(parent);
      if (max !== undefined && i > max) throw new CustosError('ERR_EK_CERT_CHAIN', 'The chain is longer than an intermediate allows (pathLenConstraint).');
    }
  }

  const now = input.now.getTime();
  const entries: ChainEntry[] = chain.map((c, i) => ({
    subject: c.subject,
    issuer: c.issuer,
    serialNumber: c.serialNumber,
    notBefore: c.notBefore,
    notAfter: c.notAfter,
    outsideValidity: now < c.notBefore.getTime() || now > c.notAfter.getTime(),
    anchor: i === chain.length - 1,
  }));
  const expired = entries.filter((e) => e.outsideValidity).map((e) => e.subject);
  if (input.requireValidity === true && expired.length > 0) {
    throw new CustosError('ERR_EK_CERT_CHAIN', 'A certificate in the EK chain is outside its validity period.', { details: { certificates: expired } });
  }

  return {
    subject: cert.subject,
    issuer: cert.issuer,
    chain: entries,
    ekPublicHash: sha256hex(spki),
    expiredCertificates: expired,
    ekuPresent: eku !== null,
    tpm,
    ekCertDer: der,
  };
}
