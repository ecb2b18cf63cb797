import { createPublicKey } from 'node:crypto';
import { z } from 'zod';
import type { AppDeps } from '../app.js';
import type { AuditCheckpoint, AuditEvent, AuditKeyEndorsement } from '../../audit/chain.js';
import { ENDORSEMENT_META } from '../../audit/checkpointer.js';
import { writeAuditExport, type ExportKey } from '../../audit/export-format.js';
import { keyTypeInfo } from '../../hsm/key-types.js';
import type { PolicySet } from '../../policy/policy-service.js';
import type { Store } from '../../store/store.js';
import { Routes } from '../router.js';
import { parseQuery } from '../validate.js';

const page = z.strictObject({
  after: z.string().regex(/^\d{1,15}$/).optional(),
  limit: z.string().regex(/^\d{1,5}$/).optional(),
});

const PAGE = 1000;

/**
 * The public key, life and endorsement (by the version before it) of every audit-key version, for
 * offline checkpoint verification.
 */
async function exportKeys(store: Store, auditKey: string): Promise<Omit<ExportKey, 'type'>[]> {
  const key = await store.getKey(auditKey);
  if (!key) return [];
  const alg = keyTypeInfo(key.type).jwsAlg!;
  const versions = (await store.listVersions(auditKey)).filter((v) => v.publicKey !== null);
  const endorsements = await Promise.all(versions.map((v) => store.getMeta(`${ENDORSEMENT_META}${v.kid}`)));
  return versions
    .map((v, i) => {
      const jwk = createPublicKey({ key: Buffer.from(v.publicKey!, 'base64'), format: 'der', type: 'spki' }).export({ format: 'jwk' });
      const states = [
        { state: 'created', at: v.createdAt },
        ...(v.activatedAt ? [{ state: 'active', at: v.activatedAt }] : []),
        ...(v.deactivatedAt ? [{ state: 'deactivated', at: v.deactivatedAt }] : []),
        ...(v.compromisedAt ? [{ state: 'compromised', at: v.compromisedAt }] : []),
        ...(v.destroyedAt ? [{ state: 'destroyed', at: v.destroyedAt }] : []),
      ];
      const endorsement = endorsements[i] ? (JSON.parse(endorsements[i]!) as AuditKeyEndorsement) : undefined;
      return { kid: v.kid, alg, jwk: { ...jwk, kid: v.kid, alg } as Record<string, unknown>, states, ...(endorsement ? { endorsement } : {}) };
    });
}

/** Read-only views for auditors: the audit chain, its checkpoints, and the loaded policies. */
export function auditRoutes(policies: PolicySet, opts: { auditKey: string; issuer: string; checkpointNow?: () => Promise<unknown> }) {
  return (deps: AppDeps) => {
    const r = new Routes(deps);
    r.get('/v1/audit', 'audit.read', async (req) => {
      const q = parseQuery(req, page);
      const limit = Math.min(Number(q.limit ?? 100), 1000);
      return { events: await deps.store.listAudit(Number(q.after ?? 0), limit) };
    });
    r.get('/v1/audit/checkpoints', 'audit.read', async (req) => {
      const q = parseQuery(req, page);
      const limit = Math.min(Number(q.limit ?? 100), 1000);
      return { checkpoints: await deps.store.listCheckpoints(Number(q.after ?? 0), limit) };
    });
    // The audit keys' public halves, for `custos audit verify --trusted-keys`: fetched when a
    // version is made, and kept by the auditor apart from the exports they will check.
    r.get('/v1/audit/keys', 'audit.read', async () => ({ keys: await exportKeys(deps.store, opts.auditKey) }));
    r.get('/v1/policies', 'policies.read', () => ({ policies: policies.list() }));
    // The whole log as one JSON Lines file (events, checkpoints, audit public keys), streamed page
    // by page so its size does not matter; `custos audit verify` checks it offline.
    r.streamGet('/v1/audit/export', 'audit.read', async (_req, res) => {
      const store = deps.store;
      // A checkpoint of the head as it is now, so that the export ends anchored. Best effort: with
      // the HSM down the export still goes out, and the verifier reports the unanchored tail.
      await opts.checkpointNow?.().catch(() => undefined);
      const [first, last, keys] = await Promise.all([store.listAudit(0, 1), store.lastAudit(), exportKeys(store, opts.auditKey)]);
      // Both streams page by seq through the store.
      async function* pages<T extends { seq: number }>(list: (after: number, limit: number) => Promise<T[]>): AsyncGenerator<T> {
        for (let after = 0; ; ) {
          const page = await list(after, PAGE);
          yield* page;
          if (page.length < PAGE) return;
          after = page[page.length - 1]!.seq;
        }
      }
      res.status(200).type('application/x-ndjson');
      res.setHeader('content-disposition', 'attachment; filename="custos-audit.jsonl"');
      await writeAuditExport(res, {
        exportedAt: deps.clock.now().toISOString(),
        issuer: opts.issuer,
        range: first[0] && last ? { firstSeq: first[0].seq, lastSeq: last.seq } : null,
        keys,
        events: pages<AuditEvent>((a, l) => store.listAudit(a, l)),
        checkpoints: pages<AuditCheckpoint>((a, l) => store.listCheckpoints(a, l)),
      });
      res.end();
    });
    return r.router;
  };
}
