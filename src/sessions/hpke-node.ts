/**
 * node:crypto-backed primitives for @hpke/core's CipherSuite, for the session-key suite
 * DHKEM(P-256, HKDF-SHA256) / HKDF-SHA256 / AES-GCM.
 *
 * Why: the stock suite runs every primitive through WebCrypto, whose calls are asynchronous jobs
 * (a thread-pool hop each). One seal made ~18 of them (the HKDF key schedule's importKey/sign and
 * importKey/deriveBits pairs were most of it) and cost 1.3–2.7 ms of wall time. Here the same
 * operations are synchronous OpenSSL calls through node:crypto (HMAC, HKDF, ECDH, AES-GCM).
 *
 * What stays with the library: the whole RFC 9180 protocol — the labeled extract/expand inputs
 * (§4, buildLabeledIkm/buildLabeledInfo), the DHKEM shared-secret derivation and kem_context
 * (§4.1, Dhkem.encap/decap), the key schedule (§5.1), nonce/sequence handling (§5.2), the
 * parameter checks, and the errors. These classes only replace the primitive functions the
 * library calls through its own extension points (KdfInterface, AeadInterface, and the DHKEM's
 * primitives object). test/unit/sessions/hpke-node.test.ts checks them against the RFC 9180
 * Appendix A vectors and against the stock WebCrypto suite in both directions.
 */
import {
  createCipheriv, createDecipheriv, createECDH, createHmac, createPrivateKey, createPublicKey, createSecretKey, diffieHellman, ECDH, KeyObject,
  type ECDH as EcdhObject, type webcrypto,
} from 'node:crypto';
import {
  AeadId,
  DeserializeError,
  DhkemP256HkdfSha256,
  HkdfSha256,
  SerializeError,
  type AeadEncryptionContext,
  type AeadInterface,
} from '@hpke/core';
import type { EcdhOffload } from './ecdh-worker.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type Bytes = ArrayBufferLike | ArrayBufferView;

/** A Buffer view of the library's byte arguments (no copy). */
function view(b: Bytes): Buffer {
  return ArrayBuffer.isView(b) ? Buffer.from(b.buffer, b.byteOffset, b.byteLength) : Buffer.from(b as ArrayBuffer);
}

/** A fresh ArrayBuffer holding exactly these bytes (the library's return type). */
function toAb(b: Buffer): ArrayBuffer {
  const out = new ArrayBuffer(b.length);
  new Uint8Array(out).set(b);
  return out;
}

const HASH_LEN = 32;
/** RFC 5869 §2.2: the salt when none is given, HashLen zero bytes. */
const ZERO_SALT = Buffer.alloc(HASH_LEN);

/**
 * HKDF-SHA256 (RFC 5869) on node:crypto. Extends the library's class so that init(),
 * buildLabeledIkm(), buildLabeledInfo(), labeledExtract() and labeledExpand() — the RFC 9180
 * labeling — remain the library's own code.
 */
export class NodeHkdfSha256 extends HkdfSha256 {
  override async extract(salt: Bytes, ikm: Bytes): Promise<ArrayBuffer> {
    return toAb(extractSync(view(salt), view(ikm)));
  }

  override async expand(prk: Bytes, info: Bytes, len: number): Promise<ArrayBuffer> {
    return toAb(expandSync(view(prk), view(info), len));
  }

  override async extractAndExpand(salt: Bytes, ikm: Bytes, info: Bytes, len: number): Promise<ArrayBuffer> {
    // HMAC calls rather than hkdfSync: the same RFC 5869 computation at about half the CPU
    // (hkdfSync makes key objects of its inputs and validates them on each call).
    return toAb(expandSync(extractSync(view(salt), view(ikm)), view(info), len));
  }
}

/** RFC 5869 §2.2 HKDF-Extract with HMAC-SHA256; like the library, a salt is empty or HashLen bytes. */
function extractSync(salt: Buffer, ikm: Buffer): Buffer {
  if (salt.length !== 0 && salt.length !== HASH_LEN) throw new Error('The salt length must be the same as the hashSize');
  // An absent salt is HashLen zero bytes.
  return createHmac('sha256', salt.length === 0 ? ZERO_SALT : salt).update(ikm).digest();
}

/** RFC 5869 §2.3 HKDF-Expand with HMAC-SHA256. */
function expandSync(prk: Buffer, info: Buffer, len: number): Buffer {
  if (len > 255 * HASH_LEN) throw new Error('Entropy limit reached');
  const out = Buffer.alloc(Math.ceil(len / HASH_LEN) * HASH_LEN);
  let prev = Buffer.alloc(0);
  for (let i = 1, off = 0; off < len; i++, off += HASH_LEN) {
    prev = createHmac('sha256', prk).update(prev).update(info).update(Buffer.from([i])).digest();
    prev.copy(out, off);
  }
  return out.subarray(0, len);
}

/** AES-GCM (RFC 9180 §7.3: Nk 16 or 32, Nn 12, Nt 16) on node:crypto. */
export class NodeAesGcm implements AeadInterface {
  readonly nonceSize = 12;
  readonly tagSize = 16;
  readonly #cipher: 'aes-128-gcm' | 'aes-256-gcm';

  constructor(
    readonly id: typeof AeadId.Aes128Gcm | typeof AeadId.Aes256Gcm,
    readonly keySize: 16 | 32,
  ) {
    if ((id === AeadId.Aes128Gcm) !== (keySize === 16)) throw new Error('AEAD id and key size disagree');
    this.#cipher = keySize === 16 ? 'aes-128-gcm' : 'aes-256-gcm';
  }

  createEncryptionContext(key: Bytes): AeadEncryptionContext {
    const raw = view(key);
    if (raw.length !== this.keySize) throw new Error('AEAD key of the wrong size');
    // Like the library's WebCrypto context: the key lives on in a key object only, and the raw
    // bytes handed in by the key schedule are wiped.
    const k = createSecretKey(Buffer.from(raw));
    raw.fill(0);
    const cipher = this.#cipher;
    const tagSize = this.tagSize;
    return {
      async seal(iv: Bytes, data: Bytes, aad: Bytes): Promise<ArrayBuffer> {
        const c = createCipheriv(cipher, k, view(iv), { authTagLength: tagSize });
        c.setAAD(view(aad));
        const body = c.update(view(data));
        return toAb(Buffer.concat([body, c.final(), c.getAuthTag()]));
      },
      async open(iv: Bytes, data: Bytes, aad: Bytes): Promise<ArrayBuffer> {
        const d = view(data);
        if (d.length < tagSize) throw new Error('ciphertext shorter than the tag');
        const c = createDecipheriv(cipher, k, view(iv), { authTagLength: tagSize });
        c.setAAD(view(aad));
        c.setAuthTag(d.subarray(d.length - tagSize));
        const body = c.update(d.subarray(0, d.length - tagSize));
        // final() throws when the tag does not authenticate; no plaintext is returned then.
        return toAb(Buffer.concat([body, c.final()]));
      },
    };
  }
}

const P256_POINT_BYTES = 65;
const P256_SCALAR_BYTES = 32;
const ECDH_P256 = { name: 'ECDH', namedCurve: 'P-256' } as const;

/**
 * A P-256 key held by node:crypto, shaped as a CryptoKey so the library can carry it (the same
 * way @hpke/common's XCryptoKey carries keys of its non-WebCrypto curves). A private key keeps its
 * ECDH object; a public key its SEC1 uncompressed point, already checked to be on the curve.
 */
class NodeP256Key implements CryptoKey {
  readonly algorithm = ECDH_P256;
  readonly extractable = true;
  readonly usages: webcrypto.KeyUsage[];
  #keyObject: KeyObject | undefined;

  constructor(
    readonly type: 'public' | 'private',
    readonly point: Buffer,
    readonly ecdh?: EcdhObject,
    /** A private key held by the ECDH worker (see ecdh-worker.ts): its handle there. */
    readonly handle?: number,
  ) {
    this.usages = type === 'private' ? ['deriveBits'] : [];
  }

  /** The same key as a KeyObject, for an ECDH whose other side is a WebCrypto key. */
  keyObject(): KeyObject {
    if (!this.#keyObject) {
      const jwk = { kty: 'EC', crv: 'P-256', x: this.point.subarray(1, 33).toString('base64url'), y: this.point.subarray(33).toString('base64url') };
      this.#keyObject = this.ecdh === undefined
        ? createPublicKey({ key: jwk, format: 'jwk' })
        : createPrivateKey({ key: { ...jwk, d: padScalar(this.ecdh.getPrivateKey()).toString('base64url') }, format: 'jwk' });
    }
    return this.#keyObject;
  }
}

/** The SEC1 uncompressed point of a P-256 public KeyObject. */
function publicPoint(k: KeyObject): Buffer {
  if (k.type !== 'public') throw new Error('DH needs a public key');
  const jwk = k.export({ format: 'jwk' });
  if (jwk.crv !== 'P-256' || jwk.x === undefined || jwk.y === undefined) throw new Error('not a P-256 key');
  return Buffer.concat([Buffer.from([0x04]), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]);
}

function padScalar(d: Buffer): Buffer {
  return d.length >= P256_SCALAR_BYTES ? d : Buffer.concat([Buffer.alloc(P256_SCALAR_BYTES - d.length), d]);
}

/** The DhkemPrimitives shape (not exported by @hpke/core under that name; it is KemInterface's helper). */
interface Primitives {
  serializePublicKey(key: CryptoKey): Promise<ArrayBuffer>;
  deserializePublicKey(key: Bytes): Promise<CryptoKey>;
  serializePrivateKey(key: CryptoKey): Promise<ArrayBuffer>;
  deserializePrivateKey(key: Bytes): Promise<CryptoKey>;
  importKey(format: 'raw' | 'jwk', key: ArrayBuffer | webcrypto.JsonWebKey, isPublic: boolean): Promise<CryptoKey>;
  generateKeyPair(): Promise<CryptoKeyPair>;
  deriveKeyPair(ikm: Bytes): Promise<CryptoKeyPair>;
  derivePublicKey(key: CryptoKey): Promise<CryptoKey>;
  dh(sk: CryptoKey, pk: CryptoKey): Promise<ArrayBuffer>;
}

/**
 * P-256 primitives for the library's DHKEM: the hot ones (generate, deserialize and serialize a
 * public key, DH) on node:crypto; the rest (derive a key pair from ikm, import a JWK or a raw
 * private key) left to the library's WebCrypto primitives, whose keys the DH here also accepts.
 */
class NodeP256Primitives implements Primitives {
  constructor(
    private readonly stock: Primitives,
    private readonly offload?: EcdhOffload,
  ) {}

  async serializePublicKey(key: CryptoKey): Promise<ArrayBuffer> {
    if (key instanceof NodeP256Key) {
      if (key.type !== 'public') throw new SerializeError(new Error('not a public key'));
      return toAb(key.point);
    }
    return this.stock.serializePublicKey(key);
  }

  async deserializePublicKey(key: Bytes): Promise<CryptoKey> {
    const raw = Buffer.from(view(key));
    // RFC 9180 §7.1.1: SerializePublicKey is the SEC1 uncompressed point (0x04 ‖ X ‖ Y).
    // ECDH.convertKey decodes the point and fails unless it is on the curve, the check WebCrypto's
    // raw import makes (§7.1.4 requires public-key validation for the NIST curves).
    if (raw.length !== P256_POINT_BYTES || raw[0] !== 0x04) throw new DeserializeError(new Error('Invalid public key for the ciphersuite'));
    try {
      ECDH.convertKey(raw, 'prime256v1', undefined, undefined, 'uncompressed');
    } catch (e) {
      throw new DeserializeError(e);
    }
    return new NodeP256Key('public', raw);
  }

  async serializePrivateKey(key: CryptoKey): Promise<ArrayBuffer> {
    if (key instanceof NodeP256Key) {
      // An ephemeral key of the worker's pool never leaves the worker.
      if (key.ecdh === undefined) throw new SerializeError(new Error(key.handle !== undefined ? 'ephemeral key held by the ECDH worker' : 'Not private key'));
      return toAb(padScalar(key.ecdh.getPrivateKey()));
    }
    return this.stock.serializePrivateKey(key);
  }

  deserializePrivateKey(key: Bytes): Promise<CryptoKey> {
    return this.stock.deserializePrivateKey(key);
  }

  importKey(format: 'raw' | 'jwk', key: ArrayBuffer | webcrypto.JsonWebKey, isPublic: boolean): Promise<CryptoKey> {
    return this.stock.importKey(format, key, isPublic);
  }

  async generateKeyPair(): Promise<CryptoKeyPair> {
    // OpenSSL's CSPRNG picks the scalar, as it does under WebCrypto's generateKey: in the ECDH
    // worker ahead of time when there is one, else here. A pooled key serves one DH (the
    // sender's, in encap): this is the suite for sealing, not for keys a recipient keeps.
    const pooled = this.offload?.take();
    if (pooled !== undefined) {
      return { privateKey: new NodeP256Key('private', pooled.point, undefined, pooled.handle), publicKey: new NodeP256Key('public', pooled.point) };
    }
    const ecdh = createECDH('prime256v1');
    const point = ecdh.generateKeys();
    return { privateKey: new NodeP256Key('private', point, ecdh), publicKey: new NodeP256Key('public', point) };
  }

  deriveKeyPair(ikm: Bytes): Promise<CryptoKeyPair> {
    return this.stock.deriveKeyPair(ikm);
  }

  async derivePublicKey(key: CryptoKey): Promise<CryptoKey> {
    if (key instanceof NodeP256Key) {
      if (key.type !== 'private') throw new DeserializeError(new Error('Not private key'));
      return new NodeP256Key('public', key.point);
    }
    return this.stock.derivePublicKey(key);
  }

  async dh(sk: CryptoKey, pk: CryptoKey): Promise<ArrayBuffer> {
    if (sk instanceof NodeP256Key && sk.handle !== undefined) {
      // A pooled ephemeral key: the worker that holds it computes the DH, once.
      try {
        const peer = pk instanceof NodeP256Key ? pk.point : publicPoint(KeyObject.from(pk));
        if (!this.offload) throw new Error('no ECDH worker');
        return toAb(await this.offload.dh(sk.handle, peer));
      } catch (e) {
        throw new SerializeError(e);
      }
    }
    try {
      // RFC 9180 §7.1.1: DH() for P-256 is the x-coordinate of the shared point (32 bytes), which
      // is what OpenSSL's ECDH derivation returns on both paths below.
      if (sk instanceof NodeP256Key && pk instanceof NodeP256Key && sk.ecdh !== undefined) return toAb(sk.ecdh.computeSecret(pk.point));
      const priv = sk instanceof NodeP256Key ? sk.keyObject() : KeyObject.from(sk);
      const pub = pk instanceof NodeP256Key ? pk.keyObject() : KeyObject.from(pk);
      if (priv.type !== 'private' || pub.type !== 'public') throw new Error('DH needs a private and a public key');
      return toAb(diffieHellman({ privateKey: priv, publicKey: pub }));
    } catch (e) {
      throw new SerializeError(e);
    }
  }
}

/** "KEM" ‖ I2OSP(kem_id = 0x0010, 2): the suite_id of DHKEM(P-256, HKDF-SHA256) (RFC 9180 §4.1). */
const KEM_P256_SUITE_ID = new Uint8Array([0x4b, 0x45, 0x4d, 0x00, 0x10]);

/**
 * The library's DHKEM(P-256, HKDF-SHA256) (its encap/decap and shared-secret derivation) with
 * node:crypto primitives and HKDF underneath.
 */
export class NodeDhkemP256HkdfSha256 extends DhkemP256HkdfSha256 {
  /**
   * @param offload when given, ephemeral key pairs come from its worker's pool and their DH runs
   * there (off the event loop); without it, or when its worker is down, both run here.
   */
  constructor(offload?: EcdhOffload) {
    super();
    this._prim = new NodeP256Primitives(this._prim as unknown as Primitives, offload) as unknown as typeof this._prim;
    const kdf = new NodeHkdfSha256();
    kdf.init(KEM_P256_SUITE_ID);
    this._kdf = kdf;
  }

  /**
   * The recipient key for a SEC1 uncompressed point that the caller has already checked to be
   * on P-256 (parseEphemeralJwk does, for every session request), without decoding it a second
   * time as deserializePublicKey would. Only the form is checked here.
   */
  publicKeyFromCheckedPoint(point: Buffer): CryptoKey {
    if (point.length !== P256_POINT_BYTES || point[0] !== 0x04) throw new DeserializeError(new Error('Invalid public key for the ciphersuite'));
    return new NodeP256Key('public', point);
  }
}
