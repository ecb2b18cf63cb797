import { createPublicKey } from 'node:crypto';
import { z } from 'zod';
import type { AppDeps } from '../app.js';
import type { AuditCheckpoint, AuditEvent } from '../../audit/chain.js';
import { writeAuditExport, type ExportKey } from '../../audit/export-format.js';
import { keyTypeInfo } from '../../hsm/key-types.js';
import type { PolicySet } from '../../policy/policy-service.js';
import type { KeyVersionRecord } from '../../store/records.js';
import { Routes } from '../router.js';
import { parseQuery } from '../validate.js';

const page = z.strictObject({
  after: z.string().regex(/^\d{1,15}$/).optional(),
  limit: z.string().regex(/^\d{1,5}$/).optional(),
});

const PAGE = 1000;

/** The public key and life of every audit-key version, for offline checkpoint verification. */
function exportKeys(versions: KeyVersionRecord[], keyType: string): Omit<ExportKey, 'type'>[] {
  const alg = keyTypeInfo(keyType).jwsAlg!;
  return versions
    .filter((v) => v.publicKey !== null)
    .map((v) => {
      const jwk = createPublicKey({ key: Buffer.from(v.publicKey!, 'base64'), format: 'der', type: 'spki' }).export({ format: 'jwk' });
      const states = [
        { state: 'created', at: v.createdAt },
        ...(v.activatedAt ? [{ state: 'active', at: v.activatedAt }] : []),
        ...(v.deactivatedAt ? [{ state: 'deactivated', at: v.deactivatedAt }] : []),
        ...(v.compromisedAt ? [{ state: 'compromised', at: v.compromisedAt }] : []),
        ...(v.destroyedAt ? [{ state: 'destroyed', at: v.destroyedAt }] : []),
      ];
      return { kid: v.kid, alg, jwk: { ...jwk, kid: v.kid, alg } as Record<string, unknown>, states };
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
    r.get('/v1/audit/keys', 'audit.read', async () => {
      const key = await deps.store.getKey(opts.auditKey);
      return { keys: key ? exportKeys(await deps.store.listVersions(opts.auditKey), key.type) : [] };
    });
    r.get('/v1/policies', 'policies.read', () => ({ policies: policies.list() }));
    // The whole log as one JSON Lines file (events, checkpoints, audit public keys), streamed page
    // by page so its size does not matter; `custos audit verify` checks it offline.
    r.streamGet('/v1/audit/export', 'audit.read', async (_req, res) => {
      const store = deps.store;
      // A checkpoint of the head as it is now, so that the export ends anchored. Best effort: with
      // the HSM down the export still goes out, and the verifier reports the unanchored tail.
      await opts.checkpointNow?.().catch(() => undefined);
      const [first, last, key] = await Promise.all([store.listAudit(0, 1), store.lastAudit(), store.getKey(opts.auditKey)]);
      const versions = key ? await store.listVersions(opts.auditKey) : [];
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
        keys: key ? exportKeys(versions, key.type) : [],
        events: pages<AuditEvent>((a, l) => store.listAudit(a, l)),
        checkpoints: pages<AuditCheckpoint>((a, l) => store.listCheckpoints(a, l)),
      });
      res.end();
    });
    return r.router;
  };
}
