import type { TLSSocket } from 'node:tls';
import type { Principal } from '../auth/token-service.js';
import { roleMay, type Permission } from '../auth/roles.js';
import type { ClientRoleRule } from '../config/config.js';
import { CustosError } from '../lib/errors.js';
import type { AppDeps } from './app.js';
import type { ApiRequest, ApiResponse } from './fast-path.js';

export function requestId(res: ApiResponse): string {
  return res.locals.requestId as string;
}

/** Maps a verified client certificate to a role by the configured rules (first match wins). */
export function principalFromCertificate(req: ApiRequest, rules: readonly ClientRoleRule[]): Principal | null {
  const socket = req.socket as TLSSocket;
  if (typeof socket.getPeerCertificate !== 'function' || !socket.authorized) return null;
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return null;
  const cn = typeof cert.subject?.CN === 'string' ? cert.subject.CN : undefined;
  const sans = (cert.subjectaltname ?? '').split(/,\s*/).filter(Boolean);
  for (const rule of rules) {
    let matched = false;
    if (rule.match === 'subject-cn') matched = cn === rule.value;
    else {
      const prefix = rule.match === 'san-dns' ? 'DNS:' : rule.match === 'san-uri' ? 'URI:' : 'email:';
      matched = sans.includes(prefix + rule.value);
    }
    if (matched) return { actor: `cert:${cn ?? rule.value}:${cert.fingerprint256}`, role: rule.role };
  }
  return null;
}

/**
 * Resolves the caller (bearer token, else client certificate) and checks the permission.
 * Every refusal is audited; the refusal itself does not depend on the audit write succeeding.
 */
export async function authorize(deps: AppDeps, req: ApiRequest, res: ApiResponse, permission: Permission): Promise<Principal> {
  const header = req.headers.authorization;
  let principal: Principal | null = null;
  let reason = 'no credentials';
  if (header !== undefined) {
    const m = /^Bearer ([^\s]+)$/.exec(header);
    principal = m ? await deps.tokens.authenticate(m[1]!) : null;
    reason = m ? 'unknown, expired or revoked token' : 'malformed Authorization header';
  } else if (deps.clientRoles.length > 0) {
    principal = principalFromCertificate(req, deps.clientRoles);
    reason = 'no bearer token and no client certificate mapped to a role';
  }
  if (!principal) {
    await auditRefusal(deps, 'anonymous', 'auth.failure', req, reason);
    throw new CustosError('ERR_UNAUTHENTICATED');
  }
  if (!roleMay(principal.role, permission)) {
    await auditRefusal(deps, principal.actor, 'auth.forbidden', req, `role ${principal.role} lacks ${permission}`);
    throw new CustosError('ERR_FORBIDDEN', `role ${principal.role} may not ${permission}`);
  }
  res.locals.principal = principal;
  return principal;
}

async function auditRefusal(deps: AppDeps, actor: string, action: string, req: ApiRequest, reason: string): Promise<void> {
  await deps.refusals.record({ actor, action, subject: `${req.method} ${req.path}`, reason, ip: req.ip ?? null });
}
