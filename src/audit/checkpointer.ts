import { createHash } from 'node:crypto';
import type { KeyStore } from '../hsm/key-store.js';
import type { KeyType } from '../hsm/key-types.js';
import type { KeyService } from '../keys/key-service.js';
import type { Clock } from '../lib/clock.js';
import { isCustosError } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import { jwsAlgFor, makeHsmJwsSigner } from '../sessions/token.js';
import type { AuditCheckpointRecord } from '../store/records.js';
import type { Store } from '../store/store.js';
import { checkpointSigningInput } from './chain.js';

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

  constructor(private readonly d: CheckpointerDeps) {}

  /** Checkpoints the current head if it is due (or if `force`). Returns the new checkpoint. */
  async run(force = false): Promise<AuditCheckpointRecord | null> {
    const [head, last] = await Promise.all([this.d.store.lastAudit(), this.d.store.lastCheckpoint()]);
    if (!head || (last && last.seq >= head.seq)) return null;
    const now = this.d.clock.now();
    const due = force || !last || head.seq - last.seq >= this.d.every || now.getTime() - Date.parse(last.time) >= this.d.seconds * 1000;
    if (!due) return null;
    await this.d.keys.ensureKey('system:audit', this.d.keyName, 'ec-p256', 'sign', 'audit-checkpoint');
    const { key, version } = await this.d.keys.activeVersion(this.d.keyName);
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
