import { randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';

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
 * The keys are session objects (CKA_TOKEN=false) and vanish with the session.
 */
export async function rawSignRate(opts: RawSignOptions): Promise<{ ecP256: number; rsa2048: number }> {
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
      return { ecP256: rate(pkcs11js.CKM_ECDSA, ec.privateKey, digest), rsa2048: rate(pkcs11js.CKM_RSA_PKCS, rsa.privateKey, digestInfo) };
    } finally {
      m.C_CloseSession(s);
    }
  } finally {
    if (initialized) m.C_Finalize();
  }
}
