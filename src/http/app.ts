import express, { type NextFunction, type Request, type Response } from 'express';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TokenService } from '../auth/token-service.js';
import type { ClientRoleRule } from '../config/config.js';
import type { KeyStore } from '../hsm/key-store.js';
import type { KeyService } from '../keys/key-service.js';
import type { Clock } from '../lib/clock.js';
import { CustosError, ERROR_TABLE } from '../lib/errors.js';
import type { Logger } from '../lib/logger.js';
import type { RefusalAudit } from './refusal-audit.js';
import type { Store } from '../store/store.js';
import type { Metrics } from './metrics.js';
import { tryFastPath, type ApiRequest, type ApiResponse, type FastPathDeps } from './fast-path.js';
import { RouteTable, routeEntries, sendJson } from './router.js';
import { keyRoutes } from './routes/keys.js';
import { serviceRoutes } from './routes/service.js';
import { tokenRoutes } from './routes/tokens.js';

export interface AppDeps {
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  store: Store;
  hsm: KeyStore;
  tokens: TokenService;
  keys: KeyService;
  clientRoles: readonly ClientRoleRule[];
  bodyLimitBytes: number;
  /** Feature routers mounted after the core ones (hosts, sessions, audit, rotation, …). */
  extraRoutes?: ((deps: AppDeps) => express.Router)[];
  /**
   * Routes whose every refusal must be in the audit log, by path, with the audit action: a POST
   * there whose body was refused before the route ran (too large, not JSON, not JSON's media
   * type) is recorded through `refusals`.
   */
  auditedBodies?: Readonly<Record<string, string>>;
  /** Where authentication and authorization refusals are audited (coalesced: ./refusal-audit.ts). */
  refusals: RefusalAudit;
}

const BODY_REFUSALS: ReadonlySet<string> = new Set(['ERR_BODY_TOO_LARGE', 'ERR_BAD_JSON', 'ERR_UNSUPPORTED_MEDIA_TYPE']);

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** Builds the express application: one error envelope, strict JSON, auth per route, metrics. */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('trust proxy', false);

  // What every answer gets, on either path: a request id, no caching, metrics and a log line.
  const begin = (req: ApiRequest, res: ApiResponse): (() => void) => {
    const given = req.headers['x-request-id'];
    res.locals.requestId = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    res.setHeader('x-request-id', res.locals.requestId as string);
    res.setHeader('cache-control', 'no-store');
    const start = process.hrtime.bigint();
    return () => {
      const route = (res.locals.route as string | undefined) ?? 'unmatched';
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      deps.metrics.observeHttp(req.method ?? 'GET', route, res.statusCode, seconds);
      if (res.statusCode >= 500) deps.log.warn({ requestId: res.locals.requestId, method: req.method, route, status: res.statusCode, ms: seconds * 1000 }, 'request failed');
      else if (deps.log.isLevelEnabled('debug')) deps.log.debug({ requestId: res.locals.requestId, method: req.method, route, status: res.statusCode, ms: seconds * 1000 }, 'request');
    };
  };
  app.use((req: Request, res: Response, next: NextFunction) => {
    res.on('finish', begin(req, res));
    next();
  });

  // Bodies: JSON only, bounded, strict (objects/arrays at top level).
  app.use((req: Request, _res: Response, next: NextFunction) => {
    const hasBody = req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0' || req.headers['transfer-encoding'] !== undefined;
    if (hasBody && !req.is('application/json')) return next(new CustosError('ERR_UNSUPPORTED_MEDIA_TYPE'));
    next();
  });
  app.use(express.json({ limit: deps.bodyLimitBytes, strict: true, type: 'application/json' }));

  const routers = [serviceRoutes(deps), tokenRoutes(deps), keyRoutes(deps), ...(deps.extraRoutes ?? []).map((r) => r(deps))];
  const table = new RouteTable(routers.flatMap(routeEntries));
  app.use(table.middleware());
  for (const r of routers) app.use(r);

  app.use((req: Request, res: Response, next: NextFunction) => {
    res.locals.route = 'unmatched';
    // A known path asked with a method it does not serve: 405 with the methods it does (RFC 9110 §15.5.6).
    const allowed = table.allowed(req.path.length > 1 && req.path.endsWith('/') ? req.path.slice(0, -1) : req.path);
    if (allowed.length > 0) {
      res.setHeader('allow', allowed.join(', '));
      return next(new CustosError('ERR_METHOD_NOT_ALLOWED', undefined, { details: { allow: allowed } }));
    }
    next(new CustosError('ERR_NOT_FOUND'));
  });

  // The error envelope of API.md, on either path.
  const fail = (err: unknown, req: ApiRequest, res: ApiResponse): void => {
    const e = toCustosError(err);
    const action = req.method === 'POST' && BODY_REFUSALS.has(e.code) ? deps.auditedBodies?.[req.path] : undefined;
    if (action !== undefined) void deps.refusals.record({ actor: 'anonymous', action, subject: '-', reason: e.code, ip: req.ip ?? null, details: { code: e.code } });
    if (e.status >= 500 && e.code !== 'ERR_HSM_UNAVAILABLE' && e.code !== 'ERR_HSM_AUTH') {
      deps.log.error({ requestId: res.locals.requestId, method: req.method, path: req.path, code: e.code, err: e.cause ?? e }, 'internal error');
    } else if (e.status >= 500) {
      deps.log.warn({ requestId: res.locals.requestId, code: e.code, err: e.cause ?? e }, 'dependency unavailable');
    }
    const message = e.status >= 500 ? ERROR_TABLE[e.code][1] : e.message;
    const body: Record<string, unknown> = { code: e.code, message, requestId: res.locals.requestId };
    if (e.details && e.status < 500) body.details = e.details;
    if (e.status === 503) res.setHeader('retry-after', '5');
    res.status(e.status);
    sendJson(res, { error: body });
  };
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => fail(err, req, res));

  // Most API calls never reach Express (fast-path.ts): Express's handle is wrapped so that every
  // server made from this app (node:http, node:https, app.listen) tries the fast path first.
  const fast: FastPathDeps = {
    bodyLimitBytes: deps.bodyLimitBytes,
    match: (method, path) => table.fastMatch(method, path),
    begin: (req, res) => res.onEnd(begin(req, res)),
    fail,
  };
  type Handle = (req: IncomingMessage, res: ServerResponse, next?: NextFunction) => void;
  const handled = app as unknown as { handle: Handle };
  const expressHandle = handled.handle.bind(app);
  handled.handle = (req, res, next) => {
    if (!tryFastPath(fast, req, res)) expressHandle(req, res, next);
  };
  return app;
}

function toCustosError(err: unknown): CustosError {
  if (err instanceof CustosError) return err;
  const e = err as { type?: string; status?: number };
  if (e.type === 'entity.too.large') return new CustosError('ERR_BODY_TOO_LARGE');
  if (e.type === 'entity.parse.failed') return new CustosError('ERR_BAD_JSON');
  if (e.type === 'encoding.unsupported' || e.type === 'charset.unsupported') return new CustosError('ERR_UNSUPPORTED_MEDIA_TYPE');
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) return new CustosError('ERR_BAD_REQUEST', undefined, { cause: err });
  return new CustosError('ERR_INTERNAL', undefined, { cause: err });
}
