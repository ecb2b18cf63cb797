import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { GENESIS_HASH, checkpointSigningInput, computeEventHash, type AuditCheckpoint, type AuditEvent } from '../../../src/audit/chain.js';
import { writeAuditExport, type ExportKey } from '../../../src/audit/export-format.js';

export interface Signer {
  readonly kid: string;
  readonly alg: 'ES256' | 'ES384' | 'RS256' | 'PS256';
  readonly privateKey: KeyObject;
  readonly keyLine: Omit<ExportKey, 'type'>;
  /** Produce the checkpoint signature (raw r‖s for ECDSA unless `der`). */
  sign(data: Buffer, der?: boolean): Buffer;
}

export function makeSigner(alg: Signer['alg'] = 'ES256', kid = `audit-${alg.toLowerCase()}`, usePem = false): Signer {
  const { privateKey, publicKey } =
    alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : alg === 'ES384' ? generateKeyPairSync('ec', { namedCurve: 'P-384' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const hash = alg === 'ES384' ? 'sha384' : 'sha256';
  const keyLine = usePem
    ? { kid, alg, pem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), states: [{ state: 'active', at: '2026-01-01T00:00:00.000Z' }] }
    : { kid, alg, jwk: publicKey.export({ format: 'jwk' }) as Record<string, unknown>, states: [{ state: 'active', at: '2026-01-01T00:00:00.000Z' }] };
  return {
    kid,
    alg,
    privateKey,
    keyLine,
    sign(data, der = false) {
      if (alg === 'PS256') return sign(hash, data, { key: privateKey, padding: 6, saltLength: 32 });
      if (alg === 'RS256') return sign(hash, data, privateKey);
      return sign(hash, data, { key: privateKey, dsaEncoding: der ? 'der' : 'ieee-p1363' });
    },
  };
}

/** A valid chain of n events starting at seq 1. */
export function makeEvents(n: number, start = 1, prev = GENESIS_HASH): AuditEvent[] {
  const out: AuditEvent[] = [];
  let prevHash = prev;
  for (let seq = start; seq < start + n; seq++) {
    const body = {
      seq,
      time: new Date(Date.UTC(2026, 0, 1) + seq * 1000).toISOString(),
      actor: seq % 3 === 0 ? 'system:scheduler' : 'user:alice',
      action: seq % 2 === 0 ? 'key.rotate' : 'key.sign',
      subject: `key:k${seq % 7}/v${seq % 5}`,
      outcome: (seq % 11 === 0 ? 'denied' : 'success') as AuditEvent['outcome'],
      details: { policy: 'issuer-keys', n: seq, note: seq % 13 === 0 ? 'ünïcødé "quoted" \\ ✓' : 'plain', nested: { b: [1, 2, { z: null, a: true }], a: 1.5 } },
    };
    const hash = computeEventHash(prevHash, body);
    out.push({ ...body, prevHash, hash });
    prevHash = hash;
  }
  return out;
}

export function makeCheckpoint(signer: Signer, e: AuditEvent, der = false): AuditCheckpoint {
  const cp = { seq: e.seq, hash: e.hash, time: new Date(Date.parse(e.time) + 500).toISOString(), kid: signer.kid };
  return { ...cp, alg: signer.alg, signature: signer.sign(checkpointSigningInput(cp), der).toString('base64') };
}

export async function writeExport(
  path: string,
  events: AuditEvent[],
  checkpoints: AuditCheckpoint[],
  keys: Omit<ExportKey, 'type'>[],
  range: { firstSeq: number; lastSeq: number } | null = events.length ? { firstSeq: events[0]!.seq, lastSeq: events[events.length - 1]!.seq } : null,
): Promise<void> {
  const out = createWriteStream(path);
  await writeAuditExport(out, { exportedAt: '2026-06-01T00:00:00.000Z', issuer: 'https://custos.test', range, keys, events, checkpoints });
  out.end();
  await finished(out);
}
