import { createHash, createPublicKey } from 'node:crypto';
import type { KeyStore } from '../hsm/key-store.js';
import type { KeyType } from '../hsm/key-types.js';
import type { KeyService } from '../keys/key-service.js';
import type { Clock } from '../lib/clock.js';
import { isCustosError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { jwsAlgFor, makeHsmJwsSigner } from '../sessions/token.js';
import type { AuditCheckpointRecord, KeyVersionRecord } from '../store/records.js';
import type { Store } from '../store/store.js';
import { checkpointSigningInput, endorsementSigningInput, type AuditKeyEndorsement } from './chain.js';

/** Meta key prefix of an audit key version's endorsement by the version before it. */
export const ENDORSEMENT_META = 'audit-endorsement:';

export interface CheckpointerDeps {
  store: Store;
  keys: KeyService;
  hsm: KeyStore;
  clock: Clock;
  log: Logger;
  /** Name of the custos key (ec-p256, sign) that signs checkpoints; rotated by its own policy. */
  keyName: string;
  /** Checkpoint after this many new events… */
  every: number;
  /** …or after this many seconds with at least one new event. */
  seconds: number;
}

/**
 * Signs the head of the audit chain with an HSM-held key every N events or T seconds. A
 * checkpoint `(seq, hash)` anchors every event up to seq: rewriting history would need the
 * audit key. Several processes may race to checkpoint the same head; the store keeps one.
 */
export class AuditCheckpointer {
  #timer: NodeJS.Timeout | null = null;
  #busy: Promise<unknown> | null = null;

  /** Versions known to carry their endorsement (or to need none: the first one). */
  readonly #endorsed = new Set<string>();

  constructor(private readonly d: CheckpointerDeps) {}

  /**
   * Before a version's first checkpoint, the version before it (the newest one still in the HSM)
   * signs its public key (chain.ts, endorsementSigningInput), kept in the store's meta under
   * `audit-endorsement:<kid>` and exported with the key. An auditor who pinned an earlier version
   * thus follows rotations without fetching keys again. With no earlier version left to sign
   * (destroyed), there is none, and the auditor must fetch the new key. Best effort: a failure
   * is logged, and the checkpoint is still made.
   */
  async #endorse(keyType: KeyType, version: KeyVersionRecord): Promise<void> {
    try {
      const metaKey = `${ENDORSEMENT_META}${version.kid}`;
      if ((await this.d.store.getMeta(metaKey)) !== null) {
        this.#endorsed.add(version.kid);
        return;
      }
      const prev = (await this.d.keys.versionRecords(this.d.keyName))
        .filter((v) => v.version < version.version && v.state !== 'destroyed' && v.state !== 'compromised' && v.publicKey !== null)
        .sort((a, b) => b.version - a.version)[0];
      if (!prev || version.publicKey === null) {
        this.#endorsed.add(version.kid);
        return;
      }
      const jwk = createPublicKey({ key: Buffer.from(version.publicKey, 'base64'), format: 'der', type: 'spki' }).export({ format: 'jwk' }) as Record<string, unknown>;
      const time = this.d.clock.now().toISOString();
      const signature = await makeHsmJwsSigner(this.d.hsm, prev.hsmId, keyType)(endorsementSigningInput({ kid: version.kid, jwk, by: prev.kid, time }));
      const endorsement: AuditKeyEndorsement = { by: prev.kid, alg: jwsAlgFor(keyType), signature: signature.toString('base64'), time };
      await this.d.store.tx((t) => t.setMeta(metaKey, JSON.stringify(endorsement)));
      this.#endorsed.add(version.kid);
    } catch (e) {
      this.d.log.warn({ kid: version.kid, code: isCustosError(e) ? e.code : 'ERR_INTERNAL' }, 'audit key endorsement failed; retrying at the next checkpoint');
    }
  }

  /** Checkpoints the current head if it is due (or if `force`). Returns the new checkpoint. */
  async run(force = false): Promise<AuditCheckpointRecord | null> {
    const [head, last] = await Promise.all([this.d.store.lastAudit(), this.d.store.lastCheckpoint()]);
    if (!head || (last && last.seq >= head.seq)) return null;
    const now = this.d.clock.now();
    const due = force || !last || head.seq - last.seq >= this.d.every || now.getTime() - Date.parse(last.time) >= this.d.seconds * 1000;
    if (!due) return null;
    await this.d.keys.ensureKey('system:audit', this.d.keyName, 'ec-p256', 'sign', 'audit-checkpoint');
    const { key, version } = await this.d.keys.activeVersion(this.d.keyName);
    if (!this.#endorsed.has(version.kid)) await this.#endorse(key.type as KeyType, version);
    const signer = makeHsmJwsSigner(this.d.hsm, version.hsmId, key.type as KeyType);
    const cp = { seq: head.seq, hash: head.hash, time: now.toISOString(), kid: version.kid };
    const signature = await signer(checkpointSigningInput(cp));
    const record: AuditCheckpointRecord = { ...cp, alg: jwsAlgFor(key.type as KeyType), signature: signature.toString('base64') };
    try {
      await this.d.store.tx((t) => t.insertCheckpoint(record));
    } catch (e) {
      if (isCustosError(e, 'ERR_CONFLICT')) return null; // another process checkpointed this head
      throw e;
    }
    this.d.log.debug({ seq: record.seq, kid: record.kid, digest: createHash('sha256').update(record.hash).digest('hex').slice(0, 16) }, 'audit checkpoint');
    return record;
  }

  start(pollMs = Math.min(this.d.seconds * 1000, 5000)): void {
    const loop = () => {
      this.#busy = this.run()
        .catch((e: unknown) => this.d.log.warn({ code: isCustosError(e) ? e.code : 'ERR_INTERNAL' }, 'audit checkpoint failed; retrying'))
        .finally(() => {
          this.#busy = null;
          if (this.#timer !== null) this.#timer = setTimeout(loop, pollMs).unref();
        });
    };
    this.#timer = setTimeout(loop, pollMs).unref();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#busy;
  }
}
