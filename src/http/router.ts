import express, { type Request, type Response } from 'express';
import type { Principal } from '../auth/token-service.js';
import type { Permission } from '../auth/roles.js';
import type { AppDeps } from './app.js';
import { authorize } from './context.js';

type Handler = (req: Request, res: Response, principal: Principal) => Promise<unknown> | unknown;
type PublicHandler = (req: Request, res: Response) => Promise<unknown> | unknown;

/**
 * A thin route builder: names the route for metrics, authorizes before the handler runs, and
 * sends the handler's result as JSON (status 200, or what the handler set).
 */
export class Routes {
  readonly router = express.Router();
  constructor(private readonly deps: AppDeps) {}

  private add(method: 'get' | 'post' | 'delete', path: string, permission: Permission | null, handler: Handler | PublicHandler, status: number): this {
    this.router[method](path, async (req: Request, res: Response) => {
      res.locals.route = `${method.toUpperCase()} ${path}`;
      const principal = permission === null ? undefined : await authorize(this.deps, req, res, permission);
      // The default status is set first so that a handler may still choose another (e.g. 503).
      res.status(status);
      const out = await (handler as Handler)(req, res, principal as Principal);
      if (!res.headersSent) {
        if (typeof out === 'string') res.type('text/plain').send(out);
        else res.json(out);
      }
    });
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
  /** Unauthenticated by API token: the request carries its own proof (TPM evidence, provisioning token). */
  publicGet(path: string, handler: PublicHandler): this {
    return this.add('get', path, null, handler, 200);
  }
  publicPost(path: string, handler: PublicHandler, status = 200): this {
    return this.add('post', path, null, handler, status);
  }
}
