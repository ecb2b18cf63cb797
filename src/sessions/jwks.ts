/**
 * The JWK Set of custos's token issuer keys (RFC 7517 §5), served at `/.well-known/jwks.json`.
 *
 * It lists every version a token may still carry: states pre-active, active and deactivated. A
 * destroyed or destroy-scheduled version is gone (its tokens must stop verifying), and a
 * compromised one must not vouch for anything, so neither is listed even though the KeyService
 * still verifies with a compromised version on explicit request.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';
import { keyTypeInfo, isKeyType } from '../hsm/key-types.js';
import type { KeyState, KeyVersionRecord } from '../store/records.js';
import type { Store } from '../store/store.js';
import { jwsAlgFor } from './token.js';

/** The reserved keys whose versions tokens may carry. */
const TOKEN_RESERVATIONS = ['session-token', 'attestation-result'] as const;

/** States whose public key is published. */
export const JWKS_STATES: ReadonlySet<KeyState> = new Set(['pre-active', 'active', 'deactivated']);

export interface IssuerJwk extends JWK {
  readonly kid: string;
  readonly alg: string;
  readonly use: 'sig';
}

export interface JwkSet {
  readonly keys: IssuerJwk[];
}

/** One issuer key version as a JWK, with the store record it came from. */
export interface PublishedVersion {
  readonly jwk: IssuerJwk;
  readonly version: KeyVersionRecord;
}

/**
 * Builds the JWK Set from the store: the versions of the named keys in a publishable state.
 * Keys that do not exist yet (the issuer creates them on first use), symmetric keys and keys that
 * cannot sign JWS are left out rather than failing the whole set. Public keys are converted once
 * per HSM object and memoised (a version's public key never changes).
 */
export class JwksBuilder {
  readonly #jwkOf = new Map<string, JWK>();

  constructor(private readonly store: Store, private readonly keyNames: () => readonly string[]) {}

  /**
   * Every published version with its record (for introspection's state checks): of the keys the
   * loaded configuration names, and of every key ever reserved for tokens — a policy that now
   * names another issuer key leaves live tokens of the old one, which must keep verifying until
   * their versions are destroyed.
   */
  async versions(): Promise<PublishedVersion[]> {
    const out: PublishedVersion[] = [];
    const names = new Set(this.keyNames());
    for (const k of await this.store.listReservedKeys(TOKEN_RESERVATIONS)) names.add(k.name);
    for (const name of [...names].sort()) {
      const key = await this.store.getKey(name);
      if (!key || key.purpose !== 'sign' || !isKeyType(key.type) || keyTypeInfo(key.type).kind === 'aes') continue;
      let alg: string;
      try {
        alg = jwsAlgFor(key.type);
      } catch {
        continue;
      }
      const versions = (await this.store.listVersions(name)).filter((v) => JWKS_STATES.has(v.state) && v.publicKey !== null);
      versions.sort((a, b) => a.version - b.version);
      for (const v of versions) out.push({ version: v, jwk: { ...this.#publicJwk(v), kid: v.kid, alg, use: 'sig' } });
    }
    return out;
  }

  /** The JWK Set document. */
  async jwks(): Promise<JwkSet> {
    return { keys: (await this.versions()).map((p) => p.jwk) };
  }

  #publicJwk(v: KeyVersionRecord): JWK {
    let jwk = this.#jwkOf.get(v.hsmId);
    if (!jwk) {
      const ko: KeyObject = createPublicKey({ key: Buffer.from(v.publicKey as string, 'base64'), format: 'der', type: 'spki' });
      jwk = ko.export({ format: 'jwk' }) as JWK;
      this.#jwkOf.set(v.hsmId, jwk);
    }
    return { ...jwk };
  }
}
