import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import pkcs11js from 'pkcs11js';
import type { KeyStore } from '../src/hsm/key-store.js';

export interface RawSignOptions {
  module: string;
  tokenLabel: string;
  pin: string;
  /** Measuring time per key type (default 2000 ms). */
  durationMs?: number;
}

/**
 * The ceiling the HTTP figures are compared with: synchronous pkcs11js C_SignInit + C_Sign in
 * this process, one session, for ECDSA P-256 and RSA-2048 PKCS#1 v1.5 over a SHA-256 DigestInfo.
 * The keys are session objects (CKA_TOKEN=false) and vanish with the session; the ECDSA rate is
 * also measured on a token object like custos's keys (`ecP256TokenKey`).
 */
export async function rawSignRate(opts: RawSignOptions): Promise<{ ecP256: number; rsa2048: number; ecP256TokenKey: number }> {
  const duration = opts.durationMs ?? 2000;
  const m = new pkcs11js.PKCS11();
  m.load(opts.module);
  let initialized = false;
  try {
    m.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    initialized = true;
  } catch (e) {
    if ((e as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw e;
  }
  try {
    const slot = m.C_GetSlotList(true).find((s) => m.C_GetTokenInfo(s).label.trimEnd() === opts.tokenLabel);
    if (!slot) throw new Error('no token with this label');
    const s = m.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      try {
        m.C_Login(s, pkcs11js.CKU_USER, opts.pin);
      } catch (e) {
        if ((e as { code?: number }).code !== pkcs11js.CKR_USER_ALREADY_LOGGED_IN) throw e;
      }
      const priv = [
        { type: pkcs11js.CKA_TOKEN, value: false },
        { type: pkcs11js.CKA_PRIVATE, value: true },
        { type: pkcs11js.CKA_SENSITIVE, value: true },
        { type: pkcs11js.CKA_SIGN, value: true },
      ];
      const ec = m.C_GenerateKeyPair(
        s,
        { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
        [{ type: pkcs11js.CKA_TOKEN, value: false }, { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') }],
        priv,
      );
      const rsa = m.C_GenerateKeyPair(
        s,
        { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN },
        [
          { type: pkcs11js.CKA_TOKEN, value: false },
          { type: pkcs11js.CKA_MODULUS_BITS, value: 2048 },
          { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
        ],
        priv,
      );
      const digest = randomBytes(32);
      const digestInfo = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), digest]);
      const out = Buffer.alloc(512);
      const rate = (mechanism: number, key: Buffer, data: Buffer): number => {
        let n = 0;
        const start = performance.now();
        let now = start;
        while (now - start < duration) {
          m.C_SignInit(s, { mechanism }, key);
          m.C_Sign(s, data, out);
          n++;
          if ((n & 15) === 0) now = performance.now();
        }
        return Math.round((n * 1000) / (performance.now() - start));
      };
      const ecP256 = rate(pkcs11js.CKM_ECDSA, ec.privateKey, digest);
      const rsa2048 = rate(pkcs11js.CKM_RSA_PKCS, rsa.privateKey, digestInfo);
      // The same ECDSA loop on a token object made like custos's keys (CKA_TOKEN, CKA_PRIVATE,
      // CKA_SENSITIVE, not extractable): SoftHSM2 checks its token files on each use of a token
      // object, so this is the rate at which custos's own keys can sign. Destroyed afterwards.
      const tok = m.C_GenerateKeyPair(
        s,
        { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
        [{ type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') }],
        [...priv.map((a) => (a.type === pkcs11js.CKA_TOKEN ? { type: pkcs11js.CKA_TOKEN, value: true } : a)), { type: pkcs11js.CKA_EXTRACTABLE, value: false }],
      );
      try {
        return { ecP256, rsa2048, ecP256TokenKey: rate(pkcs11js.CKM_ECDSA, tok.privateKey, digest) };
      } finally {
        m.C_DestroyObject(s, tok.privateKey);
        m.C_DestroyObject(s, tok.publicKey);
      }
    } finally {
      m.C_CloseSession(s);
    }
  } finally {
    if (initialized) m.C_Finalize();
  }
}

export interface AdapterRate {
  opsPerSec: number;
  /** Main-thread event-loop utilization while measuring (0..1). */
  mainThreadElu: number;
  /** Main-thread busy time per operation, in microseconds. */
  mainThreadUsPerOp: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * Sign throughput through a KeyStore (the PKCS#11 adapter under test) with `concurrency`
 * callers in this process, for ECDSA P-256 and RSA-2048 PKCS#1 v1.5 keys that it generates and
 * destroys. Compare with {@link rawSignRate}.
 */
export async function adapterSignRate(
  store: KeyStore,
  opts: { concurrency?: number; durationMs?: number } = {},
): Promise<{ ecP256: AdapterRate; rsa2048: AdapterRate }> {
  const concurrency = opts.concurrency ?? 64;
  const duration = opts.durationMs ?? 2000;
  const digest = randomBytes(32);
  const measure = async (id: string, scheme: 'ecdsa' | 'rsa-pkcs1'): Promise<AdapterRate> => {
    const lat: number[] = [];
    const elu0 = performance.eventLoopUtilization();
    const start = performance.now();
    const end = start + duration;
    const worker = async (): Promise<void> => {
      while (performance.now() < end) {
        const t = performance.now();
        await store.sign(id, scheme, 'sha256', digest);
        lat.push(performance.now() - t);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    const elapsed = performance.now() - start;
    const elu = performance.eventLoopUtilization(elu0);
    lat.sort((a, b) => a - b);
    const q = (p: number): number => Math.round((lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] ?? 0) * 100) / 100;
    return {
      opsPerSec: Math.round((lat.length * 1000) / elapsed),
      mainThreadElu: Math.round(elu.utilization * 100) / 100,
      mainThreadUsPerOp: Math.round(((elu.active * 1000) / Math.max(1, lat.length)) * 10) / 10,
      p50Ms: q(0.5),
      p99Ms: q(0.99),
    };
  };
  const ec = await store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: 'custos:bench-ec:v1', type: 'ec-p256' });
  const rsa = await store.generateKeyPair({ id: randomBytes(16).toString('hex'), label: 'custos:bench-rsa:v1', type: 'rsa-2048' });
  try {
    return { ecP256: await measure(ec.id, 'ecdsa'), rsa2048: await measure(rsa.id, 'rsa-pkcs1') };
  } finally {
    await store.destroy(ec.id);
    await store.destroy(rsa.id);
  }
}
