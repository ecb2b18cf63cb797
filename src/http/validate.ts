import type { ApiRequest } from './fast-path.js';
import type { z } from 'zod';
import { CustosError } from '../lib/errors.js';

/**
 * Parses a request body with a strict zod schema: unknown fields, wrong types and missing fields
 * are ERR_BAD_REQUEST naming the first offending field; nothing reaches a service unchecked.
 */
export function parseBody<S extends z.ZodType>(req: ApiRequest, schema: S): z.infer<S> {
  const r = schema.safeParse(req.body ?? {});
  if (!r.success) throw zodError(r.error, 'body');
  return r.data;
}

export function parseQuery<S extends z.ZodType>(req: ApiRequest, schema: S): z.infer<S> {
  const r = schema.safeParse({ ...req.query });
  if (!r.success) throw zodError(r.error, 'query');
  return r.data;
}

function zodError(error: z.ZodError, where: string): CustosError {
  const issue = error.issues[0]!;
  const path = issue.path.map(String).join('.');
  const field = issue.code === 'unrecognized_keys' ? [path, ...issue.keys].filter(Boolean).join('.') : path || where;
  const reason = issue.code === 'unrecognized_keys' ? 'unknown field' : issue.message;
  return new CustosError('ERR_BAD_REQUEST', `${field}: ${reason}`, { details: { field, reason } });
}

/** Route parameter as a positive integer version number. */
export function versionParam(s: string | undefined): number {
  if (s === undefined || !/^[1-9][0-9]{0,8}$/.test(s)) throw new CustosError('ERR_BAD_REQUEST', 'version must be a positive integer', { details: { field: 'version' } });
  return Number(s);
}
