import { CustosError, isCustosError } from '../lib/errors.js';
import type { HsmHealth, KeyObjectInfo, KeySpec, KeyStore } from './key-store.js';
import type { HashName, SignScheme } from './key-types.js';

/**
 * Opens the real KeyStore lazily and keeps trying while it cannot be opened (module missing,
 * token absent, wrong PIN at start-up), so that the service starts, answers 503 with the failing
 * part, and recovers by itself once the HSM is there. Attempts are spaced by `retryMs` so a wrong
 * PIN is not hammered into a token lockout.
 */
export class ReconnectingKeyStore implements KeyStore {
  #inner: KeyStore | null = null;
  #opening: Promise<KeyStore> | null = null;
  #lastError: CustosError | null = null;
  #lastAttempt = 0;

  constructor(private readonly open: () => Promise<KeyStore>, private readonly retryMs = 2000) {}

  async #get(): Promise<KeyStore> {
    if (this.#inner) return this.#inner;
    if (this.#opening) return this.#opening;
    if (this.#lastError && Date.now() - this.#lastAttempt < this.retryMs) throw this.#lastError;
    this.#lastAttempt = Date.now();
    this.#opening = this.open().then(
      (ks) => {
        this.#inner = ks;
        this.#lastError = null;
        this.#opening = null;
        return ks;
      },
      (e: unknown) => {
        this.#opening = null;
        this.#lastError = isCustosError(e) ? e : new CustosError('ERR_HSM_UNAVAILABLE', undefined, { cause: e });
        throw this.#lastError;
      },
    );
    return this.#opening;
  }

  /** Tries to open now; resolves either way (start-up uses it to log the state). */
  async warmUp(): Promise<HsmHealth> {
    try {
      await this.#get();
    } catch {
      /* reported through health() */
    }
    return this.health();
  }

  async health(): Promise<HsmHealth> {
    try {
      const ks = await this.#get();
      return await ks.health();
    } catch (e) {
      const code = isCustosError(e, 'ERR_HSM_AUTH') ? 'ERR_HSM_AUTH' : 'ERR_HSM_UNAVAILABLE';
      return { ok: false, part: code === 'ERR_HSM_AUTH' ? 'login' : 'module', code, reason: isCustosError(e) ? e.message : 'cannot open the PKCS#11 module' };
    }
  }

  async close(): Promise<void> {
    const ks = this.#inner;
    this.#inner = null;
    if (ks) await ks.close();
  }

  async generateKeyPair(spec: KeySpec): Promise<KeyObjectInfo> {
    return (await this.#get()).generateKeyPair(spec);
  }
  async generateSecretKey(spec: KeySpec): Promise<KeyObjectInfo> {
    return (await this.#get()).generateSecretKey(spec);
  }
  async findKey(id: string): Promise<KeyObjectInfo | null> {
    return (await this.#get()).findKey(id);
  }
  async listKeys(): Promise<KeyObjectInfo[]> {
    return (await this.#get()).listKeys();
  }
  async getPublicKey(id: string): Promise<Buffer> {
    return (await this.#get()).getPublicKey(id);
  }
  async sign(id: string, scheme: SignScheme, hash: HashName, digest: Buffer): Promise<Buffer> {
    return (await this.#get()).sign(id, scheme, hash, digest);
  }
  async verify(id: string, scheme: SignScheme, hash: HashName, digest: Buffer, signature: Buffer): Promise<boolean> {
    return (await this.#get()).verify(id, scheme, hash, digest, signature);
  }
  async encrypt(id: string, plaintext: Buffer, aad: Buffer): Promise<{ iv: Buffer; ciphertext: Buffer }> {
    return (await this.#get()).encrypt(id, plaintext, aad);
  }
  async decrypt(id: string, iv: Buffer, ciphertext: Buffer, aad: Buffer): Promise<Buffer> {
    return (await this.#get()).decrypt(id, iv, ciphertext, aad);
  }
  async randomBytes(length: number): Promise<Buffer> {
    return (await this.#get()).randomBytes(length);
  }
  async destroy(id: string): Promise<void> {
    return (await this.#get()).destroy(id);
  }
}
