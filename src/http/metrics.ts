import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one process, on a registry of its own (no global state). */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests = new Counter({ name: 'custos_http_requests_total', help: 'HTTP requests', labelNames: ['method', 'route', 'status'], registers: [this.registry] });
  readonly httpDuration = new Histogram({
    name: 'custos_http_request_duration_seconds', help: 'HTTP request latency', labelNames: ['method', 'route'],
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [this.registry],
  });
  readonly hsmOps = new Counter({ name: 'custos_hsm_operations_total', help: 'HSM operations', labelNames: ['op', 'outcome'], registers: [this.registry] });
  readonly hsmDuration = new Histogram({
    name: 'custos_hsm_operation_duration_seconds', help: 'HSM operation latency', labelNames: ['op'],
    buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1], registers: [this.registry],
  });
  readonly hsmPool = new Gauge({ name: 'custos_hsm_pool_sessions', help: 'HSM session pool', labelNames: ['state'], registers: [this.registry] });
  readonly auditEvents = new Counter({ name: 'custos_audit_events_total', help: 'Audit events appended', labelNames: ['action', 'outcome'], registers: [this.registry] });
  readonly rotationFailures = new Counter({ name: 'custos_rotation_failures_total', help: 'Rotation steps that failed', labelNames: ['action'], registers: [this.registry] });
  readonly rotationSteps = new Counter({ name: 'custos_rotation_steps_total', help: 'Rotation steps applied', labelNames: ['action'], registers: [this.registry] });
  readonly attestations = new Counter({ name: 'custos_attestations_total', help: 'Attestation verdicts', labelNames: ['status'], registers: [this.registry] });
  readonly sessions = new Counter({ name: 'custos_sessions_total', help: 'Session requests', labelNames: ['outcome'], registers: [this.registry] });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'custos_' });
  }

  #group: (() => Promise<string>) | undefined;

  /** In a process of a cluster (src/cluster.ts): scrapes answer with the whole group's metrics. */
  reportGroup(group: () => Promise<string>): void {
    this.#group = group;
  }

  /** What a scrape gets: this process's metrics, or its cluster's, summed. */
  render(): Promise<string> {
    return this.#group ? this.#group() : this.registry.metrics();
  }

  /**
   * Reports the HSM worker pool at each scrape: operations in flight and queued, workers,
   * recoveries, re-readings of the token for objects another process made (each pauses the
   * pool's operations; see Pkcs11KeyStore's `seeing`), and whether signatures use session
   * copies of the keys (1/0).
   */
  watchHsmPool(stats: () => { inFlight: number; queued: number; workers: number; recoveries: number; viewRefreshes: number; sessionCopies: boolean }): void {
    this.#watch('custos_hsm_pool', 'HSM worker pool: operations in flight, queued; workers; recoveries; token re-readings; signing with session copies (1/0)', () => {
      const s = stats();
      return { in_flight: s.inFlight, queued: s.queued, workers: s.workers, recoveries: s.recoveries, view_refreshes: s.viewRefreshes, session_copies: s.sessionCopies ? 1 : 0 };
    });
  }

  /**
   * Reports the HPKE ephemeral-key pool of the ECDH worker at each scrape: keys ready, keys
   * served from it and requests it could not serve (done on the event loop instead), and whether
   * the worker is available.
   */
  watchEcdhPool(stats: () => { ready: number; served: number; missed: number; available: boolean }): void {
    this.#watch('custos_ecdh_pool', 'HPKE ephemeral keys: ready, served from the pool, missed (made on the event loop); worker available (1/0)', () => {
      const s = stats();
      return { ready: s.ready, served: s.served, missed: s.missed, available: s.available ? 1 : 0 };
    });
  }

  /** A gauge with a `measure` label whose values are read at each scrape. */
  #watch(name: string, help: string, read: () => Record<string, number>): void {
    new Gauge({
      name, help, labelNames: ['measure'], registers: [this.registry],
      collect() {
        for (const [measure, v] of Object.entries(read())) this.set({ measure }, v);
      },
    });
  }

  // Label-bound children, made once per label set: prom-client otherwise hashes the label object
  // on every observation, twice or more per request.
  readonly #httpChildren = new Map<string, { count: Counter.Internal; duration: Histogram.Internal<string> }>();
  readonly #hsmChildren = new Map<string, { ok: Counter.Internal; error: Counter.Internal; duration: Histogram.Internal<string> }>();

  /** Counts and times one answered HTTP request. */
  observeHttp(method: string, route: string, status: number, seconds: number): void {
    const key = `${method} ${status} ${route}`;
    let c = this.#httpChildren.get(key);
    if (c === undefined) {
      c = { count: this.httpRequests.labels({ method, route, status: String(status) }), duration: this.httpDuration.labels({ method, route }) };
      this.#httpChildren.set(key, c);
    }
    c.count.inc();
    c.duration.observe(seconds);
  }

  /** Wraps a KeyStore-like call, counting and timing it. */
  async timeHsm<T>(op: string, fn: () => Promise<T>): Promise<T> {
    let c = this.#hsmChildren.get(op);
    if (c === undefined) {
      c = { ok: this.hsmOps.labels({ op, outcome: 'ok' }), error: this.hsmOps.labels({ op, outcome: 'error' }), duration: this.hsmDuration.labels({ op }) };
      this.#hsmChildren.set(op, c);
    }
    const start = performance.now();
    try {
      const r = await fn();
      c.ok.inc();
      return r;
    } catch (e) {
      c.error.inc();
      throw e;
    } finally {
      c.duration.observe((performance.now() - start) / 1000);
    }
  }
}
