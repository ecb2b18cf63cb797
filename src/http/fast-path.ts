/**
 * The request path that most API calls take: node:http's request and response objects, one route
 * table lookup, a bounded JSON body read, and the route's handler — without Express.
 *
 * Why it exists: Express gives every request its own prototypes (`Object.setPrototypeOf(req,
 * app.request)`, the same for `res`). On Node 20 that alone makes node's HTTP internals handle
 * each request's objects through slow paths: on the 2-core bench machine, a server that answers
 * a fixed JSON body costs 14–15 µs of CPU per request on node:http, 53–56 µs when it only swaps
 * the prototypes, and 100–108 µs with Express's router, type-is and body-parser (the `floor:`
 * rows of `npm run bench`, bench/http-floor.ts). A whole ec-p256 signature through custos cost
 * 223–251 µs of server CPU before this path, 125–150 µs after.
 *
 * What it takes: a request whose method and path match a route of the {@link RouteTable} in
 * canonical form, with either no body or a body whose Content-Length is known and within the
 * limit, of media type `application/json` (optionally `charset=utf-8`), without Content-Encoding.
 * Everything else — HEAD, chunked or compressed bodies, other charsets, oversized bodies, paths
 * in another form, unknown paths, streaming routes — goes to Express exactly as before, where
 * the same handlers are mounted; so every request ends in the same handler with the same checks
 * either way, and the odd cases keep Express's well-trodden handling.
 *
 * The handlers see {@link ApiRequest} / {@link ApiResponse}: the small part of Express's request
 * and response they use, which Express's own objects also satisfy.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { parse as parseQueryString } from 'node:querystring';
import { CustosError } from '../lib/errors.js';

/** What a route handler may use of a request (Express's Request satisfies it too). */
export interface ApiRequest {
  readonly method: string;
  /** The path without the query string, as sent (not decoded). */
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly socket: Socket;
  /** The peer address (no proxy headers are trusted). */
  readonly ip: string | undefined;
  /** Route parameters, decoded (Express types them wider, for wildcard routes custos has none of). */
  params: Record<string, string | string[]>;
  body?: unknown;
  readonly query: Record<string, unknown>;
}

/** What a route handler may use of a response (Express's Response satisfies it too). */
export interface ApiResponse {
  readonly locals: Record<string, unknown>;
  readonly headersSent: boolean;
  statusCode: number;
  status(code: number): ApiResponse;
  /** A full media type (`text/plain`, `application/jwk-set+json`, …). */
  type(mediaType: string): ApiResponse;
  setHeader(name: string, value: string | number | readonly string[]): unknown;
  /** Sends a text body (UTF-8) and ends the response. */
  send(body: string): unknown;
  end(body?: string): unknown;
}

/** A route as the fast path runs it. */
export interface FastRoute {
  /** The route's name in metrics. */
  readonly label: string;
  run(req: ApiRequest, res: ApiResponse): Promise<void>;
}

export interface FastPathDeps {
  bodyLimitBytes: number;
  /** Finds the route for a method and canonical path, with its decoded parameters; null to let Express answer. */
  match(method: string, path: string): { route: FastRoute; params: Record<string, string> } | null;
  /** Headers and bookkeeping every answer gets (request id, cache-control, metrics when it ends). */
  begin(req: ApiRequest, res: FastResponse): void;
  /** Writes the error envelope for a failed request. */
  fail(err: unknown, req: ApiRequest, res: ApiResponse): void;
}

class FastRequest implements ApiRequest {
  body?: unknown;
  #query: Record<string, unknown> | undefined;

  constructor(
    readonly raw: IncomingMessage,
    readonly method: string,
    readonly path: string,
    readonly search: string,
    public params: Record<string, string>,
  ) {}

  get headers(): IncomingHttpHeaders {
    return this.raw.headers;
  }
  get socket(): Socket {
    return this.raw.socket;
  }
  get ip(): string | undefined {
    return this.raw.socket.remoteAddress;
  }
  /** Parsed like Express's default ("simple") query parser: node:querystring. */
  get query(): Record<string, unknown> {
    this.#query ??= this.search === '' ? {} : { ...parseQueryString(this.search) };
    return this.#query;
  }
}

/** The response side: node's ServerResponse under the few methods handlers call. */
export class FastResponse implements ApiResponse {
  readonly locals: Record<string, unknown> = {};
  #onEnd: (() => void) | undefined;

  constructor(readonly raw: ServerResponse) {}

  /** Runs once, when the response has been handed to node in full (metrics and the request log). */
  onEnd(fn: () => void): void {
    this.#onEnd = fn;
  }

  get headersSent(): boolean {
    return this.raw.headersSent;
  }
  get statusCode(): number {
    return this.raw.statusCode;
  }
  set statusCode(code: number) {
    this.raw.statusCode = code;
  }
  status(code: number): this {
    this.raw.statusCode = code;
    return this;
  }
  type(mediaType: string): this {
    this.raw.setHeader('content-type', mediaType);
    return this;
  }
  setHeader(name: string, value: string | number | readonly string[]): this {
    this.raw.setHeader(name, value);
    return this;
  }
  send(body: string): this {
    // As Express's res.send does for a string: UTF-8, and the charset named in the media type.
    const type = this.raw.getHeader('content-type');
    if (typeof type !== 'string') this.raw.setHeader('content-type', 'text/html; charset=utf-8');
    else if (!/;\s*charset=/i.test(type)) this.raw.setHeader('content-type', `${type}; charset=utf-8`);
    this.raw.setHeader('content-length', Buffer.byteLength(body));
    return this.end(body);
  }
  end(body?: string): this {
    if (body === undefined) this.raw.end();
    else this.raw.end(body);
    const fn = this.#onEnd;
    this.#onEnd = undefined;
    fn?.();
    return this;
  }
}

/** `application/json`, optionally with `charset=utf-8` (any case, optional spaces), and nothing else. */
const JSON_MEDIA_TYPE = /^application\/json\s*(?:;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;

/**
 * Handles the request on the fast path and returns true, or returns false having touched
 * nothing (the caller hands it to Express).
 */
export function tryFastPath(deps: FastPathDeps, req: IncomingMessage, res: ServerResponse): boolean {
  const method = req.method;
  const url = req.url;
  if (method === undefined || url === undefined || method === 'HEAD') return false;
  const h = req.headers;
  if (h['content-encoding'] !== undefined || h['transfer-encoding'] !== undefined) return false;
  const declared = h['content-length'];
  const length = declared === undefined ? 0 : Number(declared);
  if (!Number.isSafeInteger(length) || length < 0 || length > deps.bodyLimitBytes) return false;
  if (length > 0) {
    const type = h['content-type'];
    if (type === undefined || !JSON_MEDIA_TYPE.test(type)) return false;
  }
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const found = deps.match(method, path);
  if (found === null) return false;

  const freq = new FastRequest(req, method, path, q < 0 ? '' : url.slice(q + 1), found.params);
  const fres = new FastResponse(res);
  deps.begin(freq, fres);
  // Known from here on, so that a body refused below is counted under its route.
  fres.locals.route = found.route.label;
  const run = (): void => {
    found.route.run(freq, fres).catch((e: unknown) => {
      if (fres.headersSent) {
        res.destroy();
        return;
      }
      deps.fail(e, freq, fres);
    });
  };
  if (length === 0) {
    // Read (and drop) whatever a body-less request carries, so the connection stays usable.
    req.resume();
    run();
    return true;
  }
  const chunks: Buffer[] = [];
  let received = 0;
  req.on('data', (c: Buffer) => {
    received += c.length;
    chunks.push(c);
  });
  req.on('error', () => res.destroy());
  req.on('end', () => {
    // node's parser delivers exactly Content-Length bytes; anything else is not a request to answer.
    if (received !== length) {
      res.destroy();
      return;
    }
    const text = (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received)).toString('utf8');
    try {
      freq.body = parseStrictJson(text);
    } catch (e) {
      deps.fail(e, freq, fres);
      return;
    }
    run();
  });
  return true;
}

/**
 * JSON.parse with body-parser's strict mode: only an object or an array at the top level.
 * @throws CustosError ERR_BAD_JSON
 */
function parseStrictJson(text: string): unknown {
  let i = 0;
  while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  const first = text[i];
  if (first !== '{' && first !== '[') throw new CustosError('ERR_BAD_JSON');
  try {
    return JSON.parse(text);
  } catch {
    throw new CustosError('ERR_BAD_JSON');
  }
}
