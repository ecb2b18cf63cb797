/**
 * Session-key sealing with HPKE (RFC 9180) through @hpke/core. The library runs the protocol
 * (DHKEM encap/decap, key schedule, AEAD context); its primitives are the node:crypto-backed ones
 * of ./hpke-node.ts (synchronous OpenSSL calls instead of ~18 WebCrypto jobs per seal), checked
 * against the RFC 9180 vectors and against the stock WebCrypto suite in both directions.
 *
 * Suite (API.md, sessions): base mode (RFC 9180 §5.1.1), DHKEM(P-256, HKDF-SHA256) (KEM 0x0010),
 * HKDF-SHA256 (KDF 0x0001), AES-256-GCM (AEAD 0x0002); info = "custos session key" ‖ jti (UTF-8),
 * empty aad. Binding the jti into `info` (which feeds the key schedule, §5.1) means a sealed key
 * opens only under the token it was issued with. A fresh ephemeral KEM key per seal gives forward
 * secrecy with respect to custos's long-term keys: nothing custos keeps can reopen a past session key.
 */
import type { webcrypto } from 'node:crypto';
import { AeadId, CipherSuite } from '@hpke/core';
import { fromBase64Url } from '../lib/encoding.js';
import { CustosError } from '../lib/errors.js';
import { parseEphemeralJwk, type EphemeralKey } from './ephemeral-key.js';
import { EcdhOffload } from './ecdh-worker.js';
import { NodeAesGcm, NodeDhkemP256HkdfSha256, NodeHkdfSha256 } from './hpke-node.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** ASCII prefix of the HPKE info string; the jti follows it directly. */
export const SESSION_KEY_INFO_PREFIX = 'custos session key';
/** Session keys are 32 bytes (API.md). */
export const SESSION_KEY_BYTES = 32;
/** RFC 9180 §7.1 Nenc for DHKEM(P-256): an uncompressed point. */
const ENC_BYTES = 65;
/** AES-GCM tag (RFC 9180 §7.3, Nt = 16). */
const TAG_BYTES = 16;

export interface SealedSessionKey {
  /** Encapsulated ephemeral public key, base64url (65 bytes). */
  readonly enc: string;
  /** AES-256-GCM ciphertext ‖ tag of the 32-byte session key, base64url (48 bytes). */
  readonly ciphertext: string;
}

/** The session suite and its KEM (made on first use). */
let session: { readonly suite: CipherSuite; readonly kem: NodeDhkemP256HkdfSha256 } | undefined;

/**
 * The ECDH worker of this process: sealing takes its ephemeral keys from the worker's pool and
 * runs the DH there (its thread starts on the first seal; see ecdh-worker.ts).
 */
export const sessionEcdhOffload = new EcdhOffload();

/** The one HPKE suite custos uses for session keys. */
export function sessionHpkeSuite(): CipherSuite {
  return sessionHpke().suite;
}

function sessionHpke(): { readonly suite: CipherSuite; readonly kem: NodeDhkemP256HkdfSha256 } {
  if (session === undefined) {
    const kem = new NodeDhkemP256HkdfSha256(sessionEcdhOffload);
    session = { kem, suite: new CipherSuite({ kem, kdf: new NodeHkdfSha256(), aead: new NodeAesGcm(AeadId.Aes256Gcm, 32) }) };
  }
  return session;
}

function checkJti(jti: string): void {
  if (typeof jti !== 'string' || jti.length === 0) throw new CustosError('ERR_BAD_REQUEST', 'jti must be a non-empty string');
}

function checkSessionKey(sessionKey: Buffer): void {
  if (!Buffer.isBuffer(sessionKey) || sessionKey.length !== SESSION_KEY_BYTES) {
    throw new CustosError('ERR_INTERNAL', `the session key must be ${SESSION_KEY_BYTES} bytes`);
  }
}

/** info = utf8("custos session key") ‖ utf8(jti). */
export function sessionKeyInfo(jti: string): Buffer {
  checkJti(jti);
  return Buffer.concat([Buffer.from(SESSION_KEY_INFO_PREFIX, 'utf8'), Buffer.from(jti, 'utf8')]);
}

/**
 * Seals a 32-byte session key to the enclave's ephemeral P-256 public key. The JWK is validated
 * with the same rules as the session request (off-curve points and private members refused).
 * `ekm` fixes the sender's ephemeral key pair; it exists only so tests can reproduce known
 * answers and must never be passed in production.
 * @throws CustosError ERR_EPHEMERAL_KEY (bad recipient key), ERR_INTERNAL (session key not 32
 *   bytes, HPKE failure)
 */
export async function sealSessionKey(
  recipientJwk: unknown,
  sessionKey: Buffer,
  jti: string,
  testOnly?: { readonly ekm?: CryptoKeyPair },
): Promise<SealedSessionKey> {
  // Same order of checks as before the parsed-key variant existed: size, jti, then the JWK.
  checkSessionKey(sessionKey);
  checkJti(jti);
  return sealSessionKeyTo(parseEphemeralJwk(recipientJwk), sessionKey, jti, testOnly);
}

/**
 * {@link sealSessionKey} for a key parseEphemeralJwk already validated (the session request's),
 * so the JWK is not parsed and checked a second time per session.
 * @throws CustosError ERR_INTERNAL (session key not 32 bytes, HPKE failure), ERR_BAD_REQUEST (empty jti)
 */
export async function sealSessionKeyTo(
  recipient: EphemeralKey,
  sessionKey: Buffer,
  jti: string,
  testOnly?: { readonly ekm?: CryptoKeyPair },
): Promise<SealedSessionKey> {
  checkSessionKey(sessionKey);
  return (await sessionKeySealer(recipient, jti, testOnly)).seal(sessionKey);
}

/** The second half of a seal: the HPKE context exists, the session key is sealed when it comes. */
export interface SessionKeySealer {
  /** @throws CustosError ERR_INTERNAL (session key not 32 bytes, HPKE failure) */
  seal(sessionKey: Buffer): Promise<SealedSessionKey>;
}

/**
 * The part of {@link sealSessionKeyTo} that does not need the session key: HPKE's encapsulation
 * (an ephemeral key pair and the ECDH with the recipient's key) and key schedule. A session starts
 * it while the HSM makes the session key, so that neither waits for the other. The context seals
 * exactly one key (sequence number 0, as the single-shot API does).
 * @throws CustosError ERR_INTERNAL (HPKE failure), ERR_BAD_REQUEST (empty jti)
 */
export async function sessionKeySealer(
  recipient: EphemeralKey,
  jti: string,
  testOnly?: { readonly ekm?: CryptoKeyPair },
): Promise<SessionKeySealer> {
  const info = sessionKeyInfo(jti);
  const { jwk } = recipient;
  const { suite, kem } = sessionHpke();
  // SerializePublicKey for DHKEM(P-256) is the SEC1 uncompressed point (RFC 9180 §7.1.1).
  const point = Buffer.concat([Buffer.from([0x04]), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
  let ctx: Awaited<ReturnType<typeof suite.createSenderContext>>;
  try {
    // parseEphemeralJwk, the only maker of an EphemeralKey, has checked that the point is on
    // P-256 (RFC 9180 §7.1.4 public-key validation); it is not decoded a second time here.
    const recipientPublicKey = kem.publicKeyFromCheckedPoint(point);
    const params = testOnly?.ekm === undefined ? { recipientPublicKey, info } : { recipientPublicKey, info, ekm: testOnly.ekm };
    ctx = await suite.createSenderContext(params);
  } catch (cause) {
    throw new CustosError('ERR_INTERNAL', 'HPKE seal failed', { cause });
  }
  let used = false;
  return {
    async seal(sessionKey: Buffer): Promise<SealedSessionKey> {
      checkSessionKey(sessionKey);
      if (used) throw new CustosError('ERR_INTERNAL', 'a session key sealer seals one key');
      used = true;
      try {
        const ct = await ctx.seal(sessionKey, new Uint8Array(0));
        return { enc: Buffer.from(ctx.enc).toString('base64url'), ciphertext: Buffer.from(ct).toString('base64url') };
      } catch (cause) {
        throw new CustosError('ERR_INTERNAL', 'HPKE seal failed', { cause });
      }
    },
  };
}

async function recipientKeyOf(recipient: PrivateJwk | CryptoKey | CryptoKeyPair): Promise<CryptoKey | CryptoKeyPair> {
  if (typeof recipient === 'object' && recipient !== null && ('privateKey' in recipient || 'algorithm' in recipient)) {
    return recipient as CryptoKey | CryptoKeyPair;
  }
  const jwk = recipient as PrivateJwk;
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.d !== 'string') {
    throw new CustosError('ERR_BAD_REQUEST', 'the recipient key must be an EC P-256 private JWK');
  }
  try {
    return await sessionHpkeSuite().kem.importKey('jwk', { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, d: jwk.d }, false);
  } catch (cause) {
    throw new CustosError('ERR_BAD_REQUEST', 'the recipient private key could not be imported', { cause });
  }
}

/** The JWK shape accepted for a recipient private key. */
export interface PrivateJwk {
  readonly kty?: string;
  readonly crv?: string;
  readonly x?: string;
  readonly y?: string;
  readonly d?: string;
  readonly [member: string]: unknown;
}

/**
 * Opens a sealed session key with the ephemeral private key (the enclave side, and tests).
 * Any mismatch (another key, another jti, a changed enc or ciphertext) fails the AEAD tag.
 * @throws CustosError ERR_BAD_BASE64 (enc/ciphertext not base64url), ERR_DECRYPT (wrong sizes,
 *   decapsulation or authentication failure), ERR_BAD_REQUEST (unusable recipient key)
 */
export async function openSessionKey(
  recipient: PrivateJwk | CryptoKey | CryptoKeyPair,
  enc: string,
  ciphertext: string,
  jti: string,
): Promise<Buffer> {
  const info = sessionKeyInfo(jti);
  const encBytes = fromBase64Url(enc, 'enc');
  const ct = fromBase64Url(ciphertext, 'ciphertext');
  if (encBytes.length !== ENC_BYTES) throw new CustosError('ERR_DECRYPT', `enc must be ${ENC_BYTES} bytes`);
  if (ct.length !== SESSION_KEY_BYTES + TAG_BYTES) throw new CustosError('ERR_DECRYPT', 'the sealed session key has the wrong size');
  const recipientKey = await recipientKeyOf(recipient);
  let pt: ArrayBuffer;
  try {
    pt = await sessionHpkeSuite().open({ recipientKey, enc: encBytes, info }, ct, new Uint8Array(0));
  } catch (cause) {
    throw new CustosError('ERR_DECRYPT', 'the sealed session key did not open', { cause });
  }
  const key = Buffer.from(pt);
  if (key.length !== SESSION_KEY_BYTES) throw new CustosError('ERR_DECRYPT', 'the session key has the wrong size');
  return key;
}
