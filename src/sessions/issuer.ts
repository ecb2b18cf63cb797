import type { KeyStore } from '../hsm/key-store.js';
import type { KeyType } from '../hsm/key-types.js';
import type { KeyService } from '../keys/key-service.js';
import { CustosError, isCustosError } from '../lib/errors.js';
import type { KeyReservation } from '../store/records.js';
import type { Repos } from '../store/store.js';
import { makeHsmJwsSigner, signJwt } from './token.js';

export interface IssuedJwt {
  token: string;
  kid: string;
  keyName: string;
  keyVersion: number;
}

/**
 * Signs JWTs (session tokens, attestation results) with the active version of a custos key held
 * in the HSM. The key is created on first use when missing (ec-p256, sign). There is no software
 * fallback: when the HSM cannot sign, issuance fails (ERR_HSM_UNAVAILABLE → 503).
 */
export class JwtIssuer {
  /** Keys already known to exist and be reserved, with their use (keys are never deleted, nor unreserved). */
  readonly #ensured = new Map<string, KeyReservation>();

  constructor(private readonly keys: KeyService, private readonly hsm: KeyStore, private readonly actor = 'system:issuer') {}

  /** Signs with the active version of `keyName`, a key reserved for `usage` (created or taken over on first use). */
  async sign(keyName: string, usage: KeyReservation, claims: Record<string, unknown>, typ: string): Promise<IssuedJwt> {
    if (this.#ensured.get(keyName) !== usage) {
      try {
        await this.keys.ensureKey(this.actor, keyName, 'ec-p256', 'sign', usage);
      } catch (e) {
        // The configuration names a key custos cannot take: the operator's problem (logged with
        // its reason as an internal error), not the caller's.
        if (isCustosError(e, 'ERR_KEY_RESERVED')) throw new CustosError('ERR_INTERNAL', `issuer key ${keyName}: ${e.message}`, { cause: e });
        throw e;
      }
      this.#ensured.set(keyName, usage);
    }
    const { key, version } = await this.keys.activeVersion(keyName);
    const signer = makeHsmJwsSigner(this.hsm, version.hsmId, key.type as KeyType);
    const token = await signJwt({ header: { alg: signer.alg, kid: version.kid, typ }, claims }, signer);
    return { token, kid: version.kid, keyName, keyVersion: version.version };
  }

  /**
   * Inside the transaction that records an issued JWT: the signing version must still be active
   * (the key lookup may come from a short cache; another process may have rotated or marked it
   * compromised meanwhile). Otherwise nothing is recorded and the JWT is not released.
   */
  async assertStillActive(t: Repos, signed: IssuedJwt): Promise<void> {
    const state = await t.getVersionState(signed.keyName, signed.keyVersion);
    if (state !== 'active') {
      throw new CustosError('ERR_KEY_STATE', `issuer key ${signed.kid} is ${state ?? 'gone'}`, { details: { state } });
    }
  }
}
