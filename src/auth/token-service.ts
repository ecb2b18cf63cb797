import { randomBytes, randomUUID } from 'node:crypto';
import type { Clock } from '../lib/clock.js';
import { CustosError } from '../lib/errors.js';
import type { ApiTokenRecord, Role } from '../store/records.js';
import type { Store } from '../store/store.js';
import { ROLES } from './roles.js';
import { sha256hex } from '../lib/encoding.js';

export interface Principal {
  /** Stable, loggable identity: `token:<id>` or `cert:<subject>`; never a secret. */
  actor: string;
  role: Role;
  tokenId?: string;
}

const TOKEN_PREFIX = 'custos_';
const PRINCIPAL_CACHE_MS = 2000;
const TOKEN_PATTERN = /^custos_[A-Za-z0-9_-]{43}$/;

export function hashApiToken(token: string): string {
  return sha256hex(token);
}

/**
 * API bearer tokens: 256 random bits, shown once at creation, stored only as SHA-256 (a
 * high-entropy secret needs no slow hash). Expiry and revocation are checked on every request.
 */
export class TokenService {
  /**
   * Authenticated tokens, by hash, for at most PRINCIPAL_CACHE_MS: every request would otherwise
   * read the token table. Revocation here clears the cache at once; another replica's revocation
   * takes effect here within that time. Expiry is checked against the clock on every request.
   */
  readonly #cache = new Map<string, { principal: Principal; expiresAt: string | null; until: number }>();
  /**
   * Moves on each local revocation, before and after its commit. A login read from the store is
   * cached only if no revocation started meanwhile: a read that raced the revocation (the row not
   * yet updated) must not put the token back into the cache once the revocation has returned.
   */
  #generation = 0;

  constructor(private readonly store: Store, private readonly clock: Clock) {}

  async create(actor: string, input: { name: string; role: Role; ttlSeconds?: number }): Promise<{ id: string; token: string; record: ApiTokenRecord }> {
    if (!ROLES.includes(input.role)) throw new CustosError('ERR_BAD_REQUEST', `role must be one of ${ROLES.join(', ')}`, { details: { field: 'role' } });
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const now = this.clock.now();
    const record: ApiTokenRecord = {
      id: randomUUID(),
      name: input.name,
      role: input.role,
      tokenHash: hashApiToken(token),
      createdAt: now.toISOString(),
      createdBy: actor,
      expiresAt: input.ttlSeconds === undefined ? null : new Date(now.getTime() + input.ttlSeconds * 1000).toISOString(),
      revokedAt: null,
    };
    await this.store.tx(async (t) => {
      await t.insertApiToken(record);
      await t.appendAudit(
        { actor, action: 'token.create', subject: record.id, outcome: 'success', details: { name: record.name, role: record.role, expiresAt: record.expiresAt } },
        now.toISOString(),
      );
    });
    return { id: record.id, token, record };
  }

  async list(): Promise<Omit<ApiTokenRecord, 'tokenHash'>[]> {
    return (await this.store.listApiTokens()).map(({ tokenHash: _h, ...rest }) => rest);
  }

  async revoke(actor: string, id: string): Promise<void> {
    this.#invalidate();
    try {
      await this.store.tx(async (t) => {
        const now = this.clock.now().toISOString();
        if (!(await t.revokeApiToken(id, now))) throw new CustosError('ERR_NOT_FOUND', 'no such live token');
        await t.appendAudit({ actor, action: 'token.revoke', subject: id, outcome: 'success', details: {} }, now);
      });
    } finally {
      this.#invalidate();
    }
  }

  #invalidate(): void {
    this.#generation++;
    this.#cache.clear();
  }

  /** Resolves a bearer token to its principal, or null when unknown, expired or revoked. */
  async authenticate(token: string): Promise<Principal | null> {
    if (!TOKEN_PATTERN.test(token)) return null;
    const hash = hashApiToken(token);
    const now = this.clock.now().toISOString();
    const hit = this.#cache.get(hash);
    if (hit && hit.until > Date.now()) return hit.expiresAt !== null && hit.expiresAt <= now ? null : hit.principal;
    const generation = this.#generation;
    const rec = await this.store.findApiTokenByHash(hash);
    if (!rec || rec.revokedAt !== null) return null;
    if (rec.expiresAt !== null && rec.expiresAt <= now) return null;
    const principal: Principal = { actor: `token:${rec.id}`, role: rec.role, tokenId: rec.id };
    if (generation !== this.#generation) return principal;
    if (this.#cache.size > 10_000) this.#cache.clear();
    this.#cache.set(hash, { principal, expiresAt: rec.expiresAt, until: Date.now() + PRINCIPAL_CACHE_MS });
    return principal;
  }
}
