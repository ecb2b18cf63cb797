/**
 * Audit export verification throughput: an export of 500k events (with a checkpoint every 1,000
 * events, signed with an ES256 key) is written to a temp file, then verified by
 * verifyAuditExport as `custos audit verify` does, reading the file from disk.
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { finished } from 'node:stream/promises';
import { once } from 'node:events';
import { GENESIS_HASH, checkpointSigningInput, computeEventHash, type AuditEvent } from '../src/audit/chain.js';
import { checkpointLine, eventLine, headerLine, keyLine } from '../src/audit/export-format.js';
import { verifyAuditExport } from '../src/audit/verify.js';

export interface AuditVerifyBenchResult {
  events: number;
  eventsPerSecond: number;
  ms: number;
  megabytes: number;
  checkpoints: number;
  ok: boolean;
}

function* events(n: number): Generator<AuditEvent> {
  let prevHash = GENESIS_HASH;
  const t0 = Date.UTC(2026, 0, 1);
  for (let seq = 1; seq <= n; seq++) {
    const body = {
      seq,
      time: new Date(t0 + seq * 37).toISOString(),
      actor: seq % 5 === 0 ? 'system:scheduler' : `host:h-${seq % 997}`,
      action: seq % 5 === 0 ? 'key.rotate' : 'session.issue',
      subject: seq % 5 === 0 ? `key:issuer-${seq % 31}/v${seq % 9}` : `session:${(seq * 2654435761) % 4294967296}`,
      outcome: (seq % 50 === 0 ? 'denied' : 'success') as AuditEvent['outcome'],
      details: seq % 5 === 0 ? { policy: 'issuer-keys', reason: 'scheduled rotation' } : { aud: 'ledger', policy: 'enclaves', evidence: 'sha256:' + (seq * 7919).toString(16).padStart(16, '0') },
    };
    const hash = computeEventHash(prevHash, body);
    yield { ...body, prevHash, hash };
    prevHash = hash;
  }
}

export async function auditVerifyBench(n = 500_000): Promise<AuditVerifyBenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'custos-bench-audit-'));
  try {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const kid = 'audit-checkpoint/v1';
    const file = join(dir, 'audit.jsonl');
    // Written line by line with the export helpers, so that no event stays in memory while the
    // verifier runs (the figure is the verifier's, not the garbage collector's).
    const out = createWriteStream(file);
    let batch = headerLine({ exportedAt: new Date().toISOString(), issuer: 'bench', range: { firstSeq: 1, lastSeq: n } });
    batch += keyLine({ kid, alg: 'ES256', jwk: publicKey.export({ format: 'jwk' }) as Record<string, unknown> });
    for (const e of events(n)) {
      batch += eventLine(e);
      if (e.seq % 1000 === 0) {
        const cp = { seq: e.seq, hash: e.hash, time: e.time, kid };
        const signature = sign('sha256', checkpointSigningInput(cp), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64');
        batch += checkpointLine({ ...cp, alg: 'ES256', signature });
      }
      if (batch.length > 1 << 20) {
        if (!out.write(batch)) await once(out, 'drain');
        batch = '';
      }
    }
    out.end(batch);
    await finished(out);
    const size = (await stat(file)).size;
    // One warm-up pass so that the page cache and the JIT are warm, as for any second run of the
    // tool; the figure is the second pass.
    await verifyAuditExport(file);
    const t = performance.now();
    const r = await verifyAuditExport(file);
    const ms = performance.now() - t;
    return {
      events: r.events,
      eventsPerSecond: Math.round(r.events / (ms / 1000)),
      ms: Math.round(ms),
      megabytes: Math.round((size / 1e6) * 10) / 10,
      checkpoints: r.validCheckpoints,
      ok: r.ok,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
