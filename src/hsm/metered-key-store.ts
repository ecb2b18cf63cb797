import type { HsmHealth, KeyObjectInfo, KeySpec, KeyStore } from './key-store.js';
import type { HashName, SignScheme } from './key-types.js';

export interface HsmObserver {
  timeHsm<T>(op: string, fn: () => Promise<T>): Promise<T>;
}

/** A KeyStore decorator that counts and times every HSM operation (Prometheus metrics). */
export class MeteredKeyStore implements KeyStore {
  constructor(private readonly inner: KeyStore, private readonly obs: HsmObserver) {}

  generateKeyPair(spec: KeySpec): Promise<KeyObjectInfo> {
    return this.obs.timeHsm('generate_key_pair', () => this.inner.generateKeyPair(spec));
  }
  generateSecretKey(spec: KeySpec): Promise<KeyObjectInfo> {
    return this.obs.timeHsm('generate_secret_key', () => this.inner.generateSecretKey(spec));
  }
  findKey(id: string): Promise<KeyObjectInfo | null> {
    return this.obs.timeHsm('find', () => this.inner.findKey(id));
  }
  listKeys(expected?: readonly string[]): Promise<KeyObjectInfo[]> {
    return this.obs.timeHsm('list', () => this.inner.listKeys(expected));
  }
  getPublicKey(id: string): Promise<Buffer> {
    return this.obs.timeHsm('get_public_key', () => this.inner.getPublicKey(id));
  }
  sign(id: string, scheme: SignScheme, hash: HashName, digest: Buffer): Promise<Buffer> {
    return this.obs.timeHsm('sign', () => this.inner.sign(id, scheme, hash, digest));
  }
  verify(id: string, scheme: SignScheme, hash: HashName, digest: Buffer, signature: Buffer): Promise<boolean> {
    return this.obs.timeHsm('verify', () => this.inner.verify(id, scheme, hash, digest, signature));
  }
  encrypt(id: string, plaintext: Buffer, aad: Buffer): Promise<{ iv: Buffer; ciphertext: Buffer }> {
    return this.obs.timeHsm('encrypt', () => this.inner.encrypt(id, plaintext, aad));
  }
  decrypt(id: string, iv: Buffer, ciphertext: Buffer, aad: Buffer): Promise<Buffer> {
    return this.obs.timeHsm('decrypt', () => this.inner.decrypt(id, iv, ciphertext, aad));
  }
  randomBytes(length: number): Promise<Buffer> {
    return this.obs.timeHsm('random', () => this.inner.randomBytes(length));
  }
  destroy(id: string): Promise<void> {
    return this.obs.timeHsm('destroy', () => this.inner.destroy(id));
  }
  health(): Promise<HsmHealth> {
    return this.inner.health();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
