/**
 * Session policies (`policies/sessions/*.yaml`): which hosts may open sessions, which attestation
 * policy their evidence must satisfy (affirming), for which audiences, how long tokens live, which
 * claims tokens disclose, and which custos key signs them.
 *
 * The JSON Schema copy in policies/schema/session.schema.json is kept equal to
 * {@link SESSION_POLICY_SCHEMA} by a test. Token lifetimes are capped at PT15M whatever a file says:
 * a longer tokenTtl is a validation error, not a silent clamp, so reviewers see what runs.
 */
import { CustosError } from '../lib/errors.js';
import type { LoadedPolicy, PolicyIssue } from '../policy/loader.js';
import { registerPolicyKind } from '../policy/registry.js';
import { tryParseDuration } from '../rotation/durations.js';
import { DISCLOSABLE_CLAIMS, MAX_SESSION_TTL_SECONDS, type DisclosableClaim } from './claims.js';

export const DEFAULT_TOKEN_TTL = 'PT5M';
export const MAX_TOKEN_TTL = 'PT15M';

export interface SessionPolicy {
  readonly id: string;
  readonly version: string | number;
  readonly description?: string;
  /** A host matches when its id is listed, or when it carries every listed label. */
  readonly hosts: { readonly ids?: readonly string[]; readonly labels?: Readonly<Record<string, string>> };
  /** Id of the attestation policy the evidence must satisfy with status affirming. */
  readonly attestationPolicy: string;
  readonly audiences: readonly string[];
  /** ISO 8601 duration; default PT5M, at most PT15M. */
  readonly tokenTtl?: string;
  /** Claims beyond the mandatory set; default none. */
  readonly disclose?: readonly DisclosableClaim[];
  /** Name of the custos key (purpose sign) whose active version signs the tokens. */
  readonly issuerKey: string;
}

const ID_PATTERN = '^[a-z0-9][a-z0-9._-]{0,62}$';

/** JSON Schema (ajv draft-07 mode) of a session policy. */
export const SESSION_POLICY_SCHEMA = {
  $id: 'https://custos.dev/schema/session-policy.json',
  title: 'custos session policy',
  type: 'object',
  additionalProperties: false,
  required: ['id', 'version', 'hosts', 'attestationPolicy', 'audiences', 'issuerKey'],
  properties: {
    id: { type: 'string', pattern: ID_PATTERN },
    version: { anyOf: [{ type: 'integer', minimum: 1 }, { type: 'string', minLength: 1, maxLength: 64 }] },
    description: { type: 'string', maxLength: 2000 },
    hosts: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: {
        ids: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', minLength: 1, maxLength: 128 } },
        labels: {
          type: 'object',
          minProperties: 1,
          propertyNames: { pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$' },
          additionalProperties: { type: 'string', maxLength: 256 },
        },
      },
    },
    attestationPolicy: { type: 'string', pattern: ID_PATTERN },
    audiences: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', minLength: 1, maxLength: 512 } },
    tokenTtl: { type: 'string', format: 'iso8601-duration', default: DEFAULT_TOKEN_TTL },
    disclose: { type: 'array', uniqueItems: true, items: { type: 'string', enum: [...DISCLOSABLE_CLAIMS] } },
    issuerKey: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' },
  },
} as const;

/** Token lifetime in whole seconds, or a reason why the text is not acceptable. */
function ttlSecondsOf(text: string): number | string {
  const d = tryParseDuration(text);
  if (!d) return 'must be an ISO 8601 duration such as PT5M';
  // Calendar parts have no fixed length; a token lifetime is a clock duration.
  if (d.years !== 0 || d.months !== 0) return 'must be a clock duration (hours, minutes, seconds)';
  const ms = d.days * 86_400_000 + d.ms;
  if (ms <= 0) return 'must be longer than zero';
  if (ms % 1000 !== 0) return 'must be a whole number of seconds';
  if (ms > MAX_SESSION_TTL_SECONDS * 1000) return `must not exceed ${MAX_TOKEN_TTL} (the hard cap for session tokens)`;
  return ms / 1000;
}

/** Per-file checks beyond the schema: the TTL cap and a host selector that selects something. */
export function checkSessionPolicy(doc: SessionPolicy): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  const ttl = ttlSecondsOf(doc.tokenTtl ?? DEFAULT_TOKEN_TTL);
  if (typeof ttl === 'string') issues.push({ path: ['tokenTtl'], reason: `tokenTtl ${ttl}` });
  if ((doc.hosts.ids?.length ?? 0) === 0 && Object.keys(doc.hosts.labels ?? {}).length === 0) {
    issues.push({ path: ['hosts'], reason: 'hosts must list ids or labels (no policy applies to every host implicitly)' });
  }
  return issues;
}

/**
 * Across files: the same host id and audience in two policies would make the choice depend on
 * file order, so it is refused. (Label selectors can still overlap at run time; resolution
 * refuses that too.)
 */
export function checkSessionPolicySet(policies: readonly LoadedPolicy<SessionPolicy>[]): (PolicyIssue & { index: number })[] {
  const seen = new Map<string, string>();
  const issues: (PolicyIssue & { index: number })[] = [];
  policies.forEach((p, index) => {
    for (const hostId of p.doc.hosts.ids ?? []) {
      for (const aud of p.doc.audiences) {
        const k = JSON.stringify([hostId, aud]);
        const prev = seen.get(k);
        if (prev !== undefined && prev !== p.id) {
          issues.push({ index, path: ['hosts', 'ids'], reason: `host "${hostId}" with audience "${aud}" is also covered by session policy "${prev}"` });
        } else {
          seen.set(k, p.id);
        }
      }
    }
  });
  return issues;
}

/** Registers the `session` policy kind (schema + checks) with the policy registry. */
export function registerSessionPolicyKind(): void {
  registerPolicyKind<SessionPolicy>('session', SESSION_POLICY_SCHEMA, checkSessionPolicy, checkSessionPolicySet);
}

registerSessionPolicyKind();

export interface SessionHost {
  readonly id: string;
  readonly labels?: Readonly<Record<string, string>>;
}

export interface ResolvedSessionPolicy {
  readonly id: string;
  readonly version: string | number;
  readonly attestationPolicy: string;
  readonly audience: string;
  readonly tokenTtlSeconds: number;
  readonly disclose: readonly DisclosableClaim[];
  readonly issuerKey: string;
}

function hostMatches(p: SessionPolicy, host: SessionHost): boolean {
  if (p.hosts.ids?.includes(host.id)) return true;
  const want = Object.entries(p.hosts.labels ?? {});
  if (want.length === 0) return false;
  const have = host.labels ?? {};
  return want.every(([k, v]) => Object.hasOwn(have, k) && have[k] === v);
}

/**
 * Picks the session policy for a host and audience. Deny by default: no policy covering the host
 * → ERR_POLICY_NOT_FOUND; policies cover the host but none allows the audience →
 * ERR_AUDIENCE_NOT_ALLOWED; more than one allows it → ERR_CONFIG (ambiguous, refused rather than
 * picking one). Policies are expected to have passed the schema and checks; the TTL cap is
 * enforced here again so that a policy object built in code cannot exceed it.
 */
export function resolveSessionPolicy(
  policies: readonly (SessionPolicy | LoadedPolicy<SessionPolicy>)[],
  host: SessionHost,
  audience: string,
): ResolvedSessionPolicy {
  const docs = policies.map((p) => ('doc' in p ? p.doc : p));
  const forHost = docs.filter((p) => hostMatches(p, host));
  if (forHost.length === 0) {
    throw new CustosError('ERR_POLICY_NOT_FOUND', 'no session policy covers this host', { details: { hostId: host.id } });
  }
  const allowing = forHost.filter((p) => p.audiences.includes(audience));
  if (allowing.length === 0) throw new CustosError('ERR_AUDIENCE_NOT_ALLOWED', undefined, { details: { audience } });
  if (allowing.length > 1) {
    throw new CustosError('ERR_CONFIG', 'several session policies cover this host and audience', {
      details: { policies: allowing.map((p) => p.id) },
    });
  }
  const p = allowing[0] as SessionPolicy;
  const ttl = ttlSecondsOf(p.tokenTtl ?? DEFAULT_TOKEN_TTL);
  if (typeof ttl === 'string') throw new CustosError('ERR_POLICY_INVALID', `session policy ${p.id}: tokenTtl ${ttl}`);
  return {
    id: p.id,
    version: p.version,
    attestationPolicy: p.attestationPolicy,
    audience,
    tokenTtlSeconds: ttl,
    disclose: [...(p.disclose ?? [])],
    issuerKey: p.issuerKey,
  };
}
