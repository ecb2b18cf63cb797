import type { Clock } from '../lib/clock.js';
import type { Logger } from '../lib/logger.js';
import type { Store } from '../store/store.js';

/** One refused request as the audit log records it (authentication and authorization refusals). */
export interface Refusal {
  readonly actor: string;
  readonly action: string;
  /** `METHOD path`. */
  readonly subject: string;
  readonly reason: string;
  readonly ip: string | null;
  /** More to record with the first refusal of a kind (its repeats are only counted). */
  readonly details?: Record<string, unknown>;
}

interface Open {
  readonly refusal: Refusal;
  readonly since: string;
  repeats: number;
  readonly timer: NodeJS.Timeout;
}

/**
 * Writes refusals to the audit log without letting anyone who can reach the port grow it at the
 * rate they can send requests (and make the HSM sign a checkpoint every few thousand of them).
 *
 * The first refusal of a kind (same actor, action, subject, reason and peer address) is written at
 * once, with its details. Its repeats within `windowMs` are counted, and written as one event when the
 * window closes: `details.repeated` (how many), `since` and `until`. At most `maxOpen` kinds are
 * counted at a time; past that, refusals are counted per action under one overflow kind (actor
 * `anonymous`, subject `*`, ip null), so that many peers or paths cannot bring back one row per
 * request either. `flush` writes what is counted (at shutdown).
 */
export class RefusalAudit {
  readonly #open = new Map<string, Open>();

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly windowMs = 10_000,
    private readonly maxOpen = 10_000,
  ) {}

  async record(r: Refusal): Promise<void> {
    let key = JSON.stringify([r.actor, r.action, r.subject, r.reason, r.ip]);
    let refusal = r;
    if (!this.#open.has(key) && this.#open.size >= this.maxOpen) {
      refusal = { actor: 'anonymous', action: r.action, subject: '*', reason: 'many distinct refusals (counted together)', ip: null };
      key = JSON.stringify(['overflow', r.action]);
    }
    const open = this.#open.get(key);
    if (open) {
      open.repeats++;
      return;
    }
    const timer = setTimeout(() => void this.#close(key), this.windowMs);
    timer.unref();
    this.#open.set(key, { refusal, since: this.clock.now().toISOString(), repeats: 0, timer });
    await this.#write(refusal, {});
  }

  /** Writes every count still open. */
  async flush(): Promise<void> {
    await Promise.all([...this.#open.keys()].map((k) => this.#close(k)));
  }

  async #close(key: string): Promise<void> {
    const open = this.#open.get(key);
    if (!open) return;
    this.#open.delete(key);
    clearTimeout(open.timer);
    if (open.repeats > 0) await this.#write(open.refusal, { repeated: open.repeats, since: open.since, until: this.clock.now().toISOString() });
  }

  async #write(r: Refusal, extra: Record<string, unknown>): Promise<void> {
    try {
      await this.store.tx((t) =>
        t.appendAudit({ actor: r.actor, action: r.action, subject: r.subject, outcome: 'denied', details: { ...(extra['repeated'] === undefined ? r.details : {}), reason: r.reason, ip: r.ip, ...extra } }, this.clock.now().toISOString()),
      );
    } catch (e) {
      this.log.error({ err: e }, 'could not audit a refused request');
    }
  }
}
