import express, { type Request, type Response } from 'express';
import type { Principal } from '../auth/token-service.js';
import type { Permission } from '../auth/roles.js';
import type { AppDeps } from './app.js';
import { authorize } from './context.js';
import type { ApiRequest, ApiResponse, FastRoute } from './fast-path.js';

type Handler = (req: ApiRequest, res: ApiResponse, principal: Principal) => Promise<unknown> | unknown;
type PublicHandler = (req: ApiRequest, res: ApiResponse) => Promise<unknown> | unknown;
/** A handler that writes to the response as a stream: Express's response, never the fast path. */
type StreamHandler = (req: ApiRequest, res: Response, principal: Principal) => Promise<unknown> | unknown;

/** One route as {@link RouteTable} dispatches it. */
interface RouteEntry extends FastRoute {
  readonly method: string;
  readonly pattern: RegExp;
  readonly params: readonly string[];
  /** Served through Express only (a streaming answer). */
  readonly expressOnly: boolean;
  /** `METHOD /path/:param`, the route's name in metrics. */
  readonly label: string;
}

const ROUTE_ENTRIES = Symbol('custos.routes');

/** The routes a {@link Routes} builder registered on its router, in registration order. */
export function routeEntries(router: express.Router): readonly RouteEntry[] {
  return ((router as unknown as Record<symbol, RouteEntry[] | undefined>)[ROUTE_ENTRIES]) ?? [];
}

/**
 * Dispatches requests to the routes of several routers with one table lookup, ahead of Express's
 * own walk through every router and layer (a measurable share of a request's CPU at thousands
 * of requests a second). It matches only the canonical form of a path: exact case, no trailing
 * slash, parameters that decode. Anything else goes on to the Express routers, where the same
 * routes are mounted, so every request ends in the same handler either way.
 */
export class RouteTable {
  readonly #byMethod = new Map<string, RouteEntry[]>();

  constructor(entries: readonly RouteEntry[]) {
    for (const e of entries) {
      const list = this.#byMethod.get(e.method) ?? [];
      list.push(e);
      this.#byMethod.set(e.method, list);
    }
  }

  /** The methods some route serves on this path (canonical form), HEAD with GET; empty if none. */
  allowed(path: string): string[] {
    const out: string[] = [];
    for (const [method, list] of this.#byMethod) if (list.some((e) => e.pattern.test(path))) out.push(method);
    if (out.includes('GET')) out.push('HEAD');
    return out.sort();
  }

  /**
   * The route serving `method` on this canonical path and its decoded parameters; null when none
   * does, or when a parameter does not decode (Express answers those).
   */
  match(method: string, path: string): { route: RouteEntry; params: Record<string, string> } | null {
    const list = this.#byMethod.get(method);
    if (list === undefined) return null;
    for (const e of list) {
      const m = e.pattern.exec(path);
      if (m === null) continue;
      const params: Record<string, string> = {};
      try {
        for (let i = 0; i < e.params.length; i++) params[e.params[i]!] = decodeURIComponent(m[i + 1]!);
      } catch {
        return null;
      }
      return { route: e, params };
    }
    return null;
  }

  /** As {@link match}, for the fast path: streaming routes are left to Express. */
  fastMatch(method: string, path: string): { route: RouteEntry; params: Record<string, string> } | null {
    const found = this.match(method, path);
    return found === null || found.route.expressOnly ? null : found;
  }

  middleware(): express.RequestHandler {
    return (req, res, next) => {
      const found = this.match(req.method, req.path);
      if (found === null) return next();
      req.params = found.params;
      found.route.run(req, res).catch(next);
    };
  }
}

/**
 * What res.json does (content type, length, body) as one string, so that node writes the head and
 * the body in one `write` instead of a `writev` of two buffers; the body is left out for HEAD by
 * node itself.
 */
export function sendJson(res: ApiResponse, value: unknown): void {
  const body = JSON.stringify(value);
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}

/** `/v1/keys/:name/sign` → an exact, case-sensitive pattern and its parameter names. */
function compilePath(path: string): { pattern: RegExp; params: string[] } {
  const params: string[] = [];
  const source = path
    .split('/')
    .map((seg) => {
      if (seg.startsWith(':')) {
        params.push(seg.slice(1));
        return '([^/]+)';
      }
      return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return { pattern: new RegExp(`^${source}$`), params };
}

/**
 * A thin route builder: names the route for metrics, authorizes before the handler runs, and
 * sends the handler's result as JSON (status 200, or what the handler set).
 */
export class Routes {
  readonly router = express.Router();
  readonly #entries: RouteEntry[] = [];
  constructor(private readonly deps: AppDeps) {
    (this.router as unknown as Record<symbol, RouteEntry[]>)[ROUTE_ENTRIES] = this.#entries;
  }

  private add(method: 'get' | 'post' | 'delete', path: string, permission: Permission | null, handler: Handler | PublicHandler, status: number, expressOnly = false): this {
    const label = `${method.toUpperCase()} ${path}`;
    const run = async (req: ApiRequest, res: ApiResponse): Promise<void> => {
      res.locals.route = label;
      const principal = permission === null ? undefined : await authorize(this.deps, req, res, permission);
      // The default status is set first so that a handler may still choose another (e.g. 503).
      res.status(status);
      const out = await (handler as Handler)(req, res, principal as Principal);
      if (!res.headersSent) {
        if (typeof out === 'string') res.type('text/plain').send(out);
        else sendJson(res, out);
      }
    };
    this.router[method](path, (req: Request, res: Response, next: express.NextFunction) => {
      run(req, res).catch(next);
    });
    this.#entries.push({ method: method.toUpperCase(), ...compilePath(path), run, expressOnly, label });
    return this;
  }

  get(path: string, permission: Permission, handler: Handler): this {
    return this.add('get', path, permission, handler, 200);
  }
  post(path: string, permission: Permission, handler: Handler, status = 200): this {
    return this.add('post', path, permission, handler, status);
  }
  delete(path: string, permission: Permission, handler: Handler): this {
    return this.add('delete', path, permission, handler, 200);
  }
  /** A GET whose handler streams its answer into Express's response (served through Express only). */
  streamGet(path: string, permission: Permission, handler: StreamHandler): this {
    return this.add('get', path, permission, handler as unknown as Handler, 200, true);
  }
  /** Unauthenticated by API token: the request carries its own proof (TPM evidence, provisioning token). */
  publicGet(path: string, handler: PublicHandler): this {
    return this.add('get', path, null, handler, 200);
  }
  publicPost(path: string, handler: PublicHandler, status = 200): this {
    return this.add('post', path, null, handler, status);
  }
}
