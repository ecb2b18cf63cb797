import type { Express } from 'express';
import { TokenService } from './auth/token-service.js';
import { readPin, type Config } from './config/config.js';
import type { KeyStore } from './hsm/key-store.js';
import { MeteredKeyStore } from './hsm/metered-key-store.js';
import { openPkcs11KeyStore } from './hsm/pkcs11/pkcs11-key-store.js';
import { createApp, type AppDeps } from './http/app.js';
import { Metrics } from './http/metrics.js';
import { KeyService } from './keys/key-service.js';
import { systemClock, type Clock } from './lib/clock.js';
import type { Logger } from './lib/logger.js';
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
}

export interface Service {
  app: Express;
  deps: AppDeps;
  close(): Promise<void>;
}

export async function composeService(config: Config, log: Logger, overrides: Overrides = {}): Promise<Service> {
  const clock = overrides.clock ?? systemClock;
  const metrics = overrides.metrics ?? new Metrics();
  const store = overrides.store ?? openStore(config.database);
  let hsm: KeyStore;
  if (overrides.hsm) {
    hsm = overrides.hsm;
  } else {
    // lazy: the service starts even when the token is absent or the PIN refused; requests that
    // need the HSM answer 503 and /readyz names the failing part until it is back.
    hsm = await openPkcs11KeyStore({
      module: config.pkcs11.module,
      tokenLabel: config.pkcs11.tokenLabel,
      pin: readPin(config.pkcs11.pinFile),
      workers: config.pkcs11.workers,
      poolSize: config.pkcs11.poolSize,
      logger: log.child({ part: 'pkcs11' }),
      lazy: true,
    });
    const h = await hsm.health();
    if (h.ok) log.info({ module: config.pkcs11.module, token: config.pkcs11.tokenLabel }, 'HSM ready');
    else log.error({ part: h.part, code: h.code, reason: h.reason }, 'HSM not ready; requests needing it answer 503 until it is');
  }
  const meteredHsm = new MeteredKeyStore(hsm, metrics);
  const tokens = new TokenService(store, clock);
  const keys = new KeyService({ store, hsm: meteredHsm, clock });
  const deps: AppDeps = {
    log, metrics, clock, store, hsm: meteredHsm, tokens, keys,
    clientRoles: config.tls?.clientRoles ?? [],
    bodyLimitBytes: config.bodyLimitBytes,
  };
  const app = createApp(deps);
  return {
    app,
    deps,
    async close() {
      await hsm.close();
      await store.close();
    },
  };
}
