import pkcs11js from 'pkcs11js';
import { CustosError } from '../../lib/errors.js';
import { ckrError } from './ckr.js';

export interface InitTokenOptions {
  module: string;
  label: string;
  soPin: string;
  pin: string;
}

function isReady(flags: number): boolean {
  return (flags & pkcs11js.CKF_TOKEN_INITIALIZED) !== 0;
}

/**
 * Initializes a free token slot with `label` (C_InitToken), then sets the user PIN as SO
 * (C_Login(CKU_SO) + C_InitPIN), all through PKCS#11 so that no PIN reaches a command line.
 * Idempotent: when a token with `label` exists already, nothing is changed.
 *
 * @returns whether a token was created.
 * @throws CustosError ERR_HSM_UNAVAILABLE (module missing, no free slot), ERR_HSM_AUTH (SO PIN
 *   refused), ERR_BAD_REQUEST (label longer than 32 bytes), ERR_HSM otherwise.
 */
export async function initToken(options: InitTokenOptions): Promise<{ created: boolean }> {
  // PKCS#11 v2.40 §3.2 CK_TOKEN_INFO.label: 32 bytes, blank padded.
  if (Buffer.byteLength(options.label, 'utf8') > 32 || options.label.trim() === '') {
    throw new CustosError('ERR_BAD_REQUEST', 'token label must be 1..32 bytes');
  }
  const m = new pkcs11js.PKCS11();
  try {
    m.load(options.module);
  } catch (e) {
    throw new CustosError('ERR_HSM_UNAVAILABLE', 'the PKCS#11 module could not be loaded', { cause: e });
  }
  let initialized = false;
  let step = 'C_Initialize';
  try {
    try {
      m.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
      initialized = true;
    } catch (e) {
      if ((e as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw e;
    }
    step = 'C_GetSlotList';
    let free: Buffer | undefined;
    for (const slot of m.C_GetSlotList(true)) {
      const info = m.C_GetTokenInfo(slot);
      if (!isReady(info.flags)) free ??= slot;
      else if (info.label.trimEnd() === options.label) return { created: false };
    }
    if (!free) throw new CustosError('ERR_HSM_UNAVAILABLE', 'no free token slot');
    step = 'C_InitToken';
    m.C_InitToken(free, options.soPin, options.label.padEnd(32, ' '));
    // SoftHSM2 moves the new token to a fresh slot id (RIG-FACTS): find it again by label.
    step = 'C_GetSlotList';
    const slot = m.C_GetSlotList(true).find((s) => {
      const info = m.C_GetTokenInfo(s);
      return isReady(info.flags) && info.label.trimEnd() === options.label;
    });
    if (!slot) throw new CustosError('ERR_HSM', 'the initialized token did not appear');
    step = 'C_OpenSession';
    const session = m.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      step = 'C_Login';
      m.C_Login(session, pkcs11js.CKU_SO, options.soPin);
      step = 'C_InitPIN';
      m.C_InitPIN(session, options.pin);
      step = 'C_Logout';
      m.C_Logout(session);
    } finally {
      m.C_CloseSession(session);
    }
    return { created: true };
  } catch (e) {
    if (e instanceof CustosError) throw e;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'number' && code !== 0) throw ckrError(code, 'init-token', step);
    throw new CustosError('ERR_HSM', `token initialization failed at ${step}`, { cause: e });
  } finally {
    if (initialized) {
      try {
        m.C_Finalize();
      } catch {
        // Finalizing is best effort here.
      }
    }
  }
}
