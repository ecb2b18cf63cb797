import type { Express } from 'express';
import { TokenService } from './auth/token-service.js';
import { readPin, type Config } from './config/config.js';
import type { KeyStore } from './hsm/key-store.js';
import { MeteredKeyStore } from './hsm/metered-key-store.js';
import { openPkcs11KeyStore } from './hsm/pkcs11/pkcs11-key-store.js';
import { createApp, type AppDeps } from './http/app.js';
import { Metrics } from './http/metrics.js';
import { RefusalAudit } from './http/refusal-audit.js';
import { KeyService } from './keys/key-service.js';
import { loadTrustAnchors, type TrustAnchors } from './attestation/ek-chain.js';
import { HostService } from './hosts/host-service.js';
import { auditRoutes } from './http/routes/audit.js';
import { hostRoutes } from './http/routes/hosts.js';
import { sessionRoutes } from './http/routes/sessions.js';
import { PolicySet } from './policy/policy-service.js';
import { AuditCheckpointer } from './audit/checkpointer.js';
import { rotationRoutes } from './http/routes/rotation.js';
import { RotationService } from './rotation/rotation-service.js';
import { JwtIssuer } from './sessions/issuer.js';
import { SessionService } from './sessions/session-service.js';
import { systemClock, type Clock } from './lib/clock.js';
import type { Logger } from './lib/logger.js';
import { sessionEcdhOffload } from './sessions/hpke.js';
import { openStore } from './store/open-store.js';
import type { Store } from './store/store.js';

/**
 * The one place where real or fake parts are wired together. Tests pass their own `hsm`,
 * `store` or `clock`; production takes everything from the configuration.
 */
export interface Overrides {
  hsm?: KeyStore;
  store?: Store;
  clock?: Clock;
  metrics?: Metrics;
  policies?: PolicySet;
  anchors?: TrustAnchors;
}

/** EK trust anchors from one or more folders (CUSTOS_EK_CA_DIR may list several, `:`-separated). */
export async function loadAnchors(dirs: string): Promise<TrustAnchors> {
  const sets = await Promise.all(dirs.split(':').filter(Boolean).map((d) => loadTrustAnchors(d)));
  return { certificates: sets.flatMap((s) => s.certificates) };
}

export interface Service {
  app: Express;
  deps: AppDeps;
  hosts: HostService;
  policies: PolicySet;
  issuer: JwtIssuer;
  rotation: RotationService;
  checkpointer: AuditCheckpointer;
  /** Starts the background work of a serving process: scheduler (lease-guarded) and checkpoints. */
  startBackground(): void;
  sessions: SessionService;
  close(): Promise<void>;
}

export async function composeService(config: Config, log: Logger, overrides: Overrides = {}): Promise<Service> {
  const clock = overrides.clock ?? systemClock;
  // Policies first: an invalid policy file stops start-up with its file, line and reason.
  const policies = overrides.policies ?? PolicySet.load(config.policyDir);
  const anchors = overrides.anchors ?? (await loadAnchors(config.ekCaDir));
  const metrics = overrides.metrics ?? new Metrics();
  const store = overrides.store ?? openStore(config.database, { serving: true });
  let hsm: KeyStore;
  if (overrides.hsm) {
    hsm = overrides.hsm;
  } else {
    // lazy: the service starts even when the token is absent or the PIN refused; requests that
    // need the HSM answer 503 and /readyz names the failing part until it is back.
    const pkcs11 = await openPkcs11KeyStore({
      module: config.pkcs11.module,
      tokenLabel: config.pkcs11.tokenLabel,
      pin: readPin(config.pkcs11.pinFile),
      workers: config.pkcs11.workers,
      poolSize: config.pkcs11.poolSize,
      sessionCopies: config.pkcs11.sessionCopies,
      logger: log.child({ part: 'pkcs11' }),
      lazy: true,
    });
    hsm = pkcs11;
    metrics.watchHsmPool(() => pkcs11.stats());
    const h = await hsm.health();
    if (h.ok) log.info({ module: config.pkcs11.module, tokenLabel: config.pkcs11.tokenLabel }, 'HSM ready');
    else log.error({ part: h.part, code: h.code, reason: h.reason }, 'HSM not ready; requests needing it answer 503 until it is');
  }
  metrics.watchEcdhPool(() => ({ ready: sessionEcdhOffload.ready, ...sessionEcdhOffload.counts, available: sessionEcdhOffload.available }));
  await auditPolicyChanges(store, policies, clock);
  const meteredHsm = new MeteredKeyStore(hsm, metrics);
  const tokens = new TokenService(store, clock);
  const keys = new KeyService({ store, hsm: meteredHsm, clock, rotationPolicies: () => policies.rotation.map((p) => p.doc) });
  const issuer = new JwtIssuer(keys, meteredHsm);
  const hosts = new HostService({ store, clock, policies, anchors, issuer, issuerName: config.issuer, resultKey: config.attestationResultKey });
  const sessions = new SessionService({ store, clock, policies, hosts, issuer, hsm: meteredHsm, issuerName: config.issuer, resultKey: config.attestationResultKey, metrics });
  const rotation = new RotationService({
    store, hsm: meteredHsm, keys, clock, policies, log: log.child({ part: 'rotation' }), metrics,
    reconcileGraceMs: config.rotation.reconcileGraceSeconds * 1000,
  });
  const checkpointer = new AuditCheckpointer({
    store, keys, hsm: meteredHsm, clock, log: log.child({ part: 'audit' }),
    keyName: config.audit.signingKey, every: config.audit.checkpointEvery, seconds: config.audit.checkpointSeconds,
  });
  const refusals = new RefusalAudit(store, clock, log);
  const deps: AppDeps = {
    log, metrics, clock, store, hsm: meteredHsm, tokens, keys, refusals,
    clientRoles: config.tls?.clientRoles ?? [],
    bodyLimitBytes: config.bodyLimitBytes,
    auditedBodies: { '/v1/sessions': 'session.issue' },
    extraRoutes: [hostRoutes(hosts), sessionRoutes(sessions), auditRoutes(policies, { auditKey: config.audit.signingKey, issuer: config.issuer, checkpointNow: () => checkpointer.run(true) }), rotationRoutes(rotation, keys)],
  };
  const app = createApp(deps);
  let janitor: NodeJS.Timeout | null = null;
  return {
    app,
    deps,
    hosts,
    policies,
    issuer,
    sessions,
    rotation,
    checkpointer,
    startBackground() {
      if (config.rotation.enabled) rotation.start(config.rotation.intervalSeconds * 1000);
      checkpointer.start();
      // Expired nonces are refused anyway; the janitor only keeps the table small.
      janitor = setInterval(() => {
        store.tx((t) => t.deleteExpiredNonces(clock.now().toISOString())).catch((e: unknown) => log.warn({ err: e }, 'nonce clean-up failed'));
      }, 60_000);
      janitor.unref();
    },
    async close() {
      if (janitor) clearInterval(janitor);
      await rotation.stop();
      await refusals.flush();
      await checkpointer.stop();
      await hsm.close();
      await store.close();
    },
  };
}

/**
 * Records every policy file that is new or changed since the last start (by SHA-256), so the
 * audit log shows which policy text governed each later decision.
 */
async function auditPolicyChanges(store: Store, policies: PolicySet, clock: Clock): Promise<void> {
  const now = clock.now().toISOString();
  await store.tx(async (t) => {
    for (const p of policies.list()) {
      const metaKey = `policy-sha256:${p.kind}/${p.id}`;
      if ((await t.getMeta(metaKey)) === p.sha256) continue;
      await t.appendAudit({ actor: 'system:startup', action: 'policy.load', subject: `${p.kind}/${p.id}`, outcome: 'success', details: { version: p.version, sha256: p.sha256, file: p.file } }, now);
      await t.setMeta(metaKey, p.sha256);
    }
  });
}
