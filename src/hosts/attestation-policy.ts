import { addDurationMs, parseDuration } from '../rotation/durations.js';
import { CustosError } from '../lib/errors.js';
import type { LoadedPolicy, PolicyIssue } from '../policy/loader.js';
import { registerPolicyKind } from '../policy/registry.js';

/**
 * Attestation policies (`policies/attestation/*.yaml`): which hosts they govern, which PCRs a
 * quote must cover and what values are acceptable, how long a nonce lives, and how a host proves
 * its TPM at enrollment (EK certificate chain, or an explicit EK allowlist for TPMs without one).
 */
export interface AttestationPolicy {
  id: string;
  version: string | number;
  description?: string;
  /** Which hosts: every listed criterion must hold (`all: true` matches every host). */
  hosts: {
    all?: boolean;
    ids?: string[];
    /** Operator-assigned labels (from the provisioning token), all must match. */
    labels?: Record<string, string>;
    /** Substrings that must occur in the EK certificate issuer DN (e.g. a vendor CA CN). */
    ekIssuerContains?: string[];
    /** TPM manufacturer from the EK certificate SAN (e.g. "id:49465800" for Infineon). */
    tpmManufacturer?: string[];
  };
  enrollment?: {
    /** Hosts must present an EK certificate that chains to a trust anchor (default true). */
    requireEkCertificate?: boolean;
    /** Refuse chain certificates outside their validity period (default false: TCG EK profile). */
    requireValidChainDates?: boolean;
    /** For TPMs without EK certificates: hex SHA-256 of the EK SubjectPublicKeyInfo, one per TPM. */
    ekAllowlist?: string[];
    /** Lifetime of a pending enrollment (credential activation window), default PT5M. */
    activationTtl?: string;
  };
  pcrs: {
    bank: 'sha1' | 'sha256' | 'sha384' | 'sha512';
    indices: number[];
    /** Acceptable values per PCR index; several allowed per PCR. PCRs not listed are quoted, not compared. */
    referenceValues?: Record<string, string[]>;
  };
  /** Nonce lifetime, default PT60S. */
  nonceTtl?: string;
  /** Accept SHA-1 signatures and banks (default false). */
  allowSha1?: boolean;
}

const HEX_DIGEST = '^(?:[0-9a-f]{40}|[0-9a-f]{64}|[0-9a-f]{96}|[0-9a-f]{128})$';

export const ATTESTATION_POLICY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'version', 'hosts', 'pcrs'],
  properties: {
    id: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' },
    version: { type: ['string', 'integer'] },
    description: { type: 'string' },
    hosts: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: {
        all: { type: 'boolean' },
        ids: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 },
        labels: { type: 'object', additionalProperties: { type: 'string' }, minProperties: 1 },
        ekIssuerContains: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 },
        tpmManufacturer: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1 },
      },
    },
    enrollment: {
      type: 'object',
      additionalProperties: false,
      properties: {
        requireEkCertificate: { type: 'boolean' },
        requireValidChainDates: { type: 'boolean' },
        ekAllowlist: { type: 'array', items: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
        activationTtl: { type: 'string', format: 'iso8601-duration' },
      },
    },
    pcrs: {
      type: 'object',
      additionalProperties: false,
      required: ['bank', 'indices'],
      properties: {
        bank: { enum: ['sha1', 'sha256', 'sha384', 'sha512'] },
        indices: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 23 }, minItems: 1, uniqueItems: true },
        referenceValues: {
          type: 'object',
          propertyNames: { pattern: '^(?:[0-9]|1[0-9]|2[0-3])$' },
          additionalProperties: { type: 'array', items: { type: 'string', pattern: HEX_DIGEST }, minItems: 1 },
        },
      },
    },
    nonceTtl: { type: 'string', format: 'iso8601-duration' },
    allowSha1: { type: 'boolean' },
  },
} as const;

const DIGEST_BYTES = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 } as const;

/** Semantic checks beyond the schema: reference values match the bank and the selection. */
export function checkAttestationPolicy(p: AttestationPolicy): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  if (p.pcrs.bank === 'sha1' && p.allowSha1 !== true) issues.push({ path: ['pcrs', 'bank'], reason: 'the sha1 bank needs allowSha1: true' });
  for (const [idx, values] of Object.entries(p.pcrs.referenceValues ?? {})) {
    if (!p.pcrs.indices.includes(Number(idx))) issues.push({ path: ['pcrs', 'referenceValues', idx], reason: `PCR ${idx} has reference values but is not in indices` });
    values.forEach((v, i) => {
      if (v.length !== DIGEST_BYTES[p.pcrs.bank] * 2) issues.push({ path: ['pcrs', 'referenceValues', idx, i], reason: `not a ${p.pcrs.bank} digest` });
    });
  }
  for (const [field, max] of [['nonceTtl', 15 * 60_000], ['enrollment.activationTtl', 60 * 60_000]] as const) {
    const v = field === 'nonceTtl' ? p.nonceTtl : p.enrollment?.activationTtl;
    if (v !== undefined) {
      const ms = addDurationMs(0, parseDuration(v));
      if (ms <= 0 || ms > max) issues.push({ path: field.split('.'), reason: `must be positive and at most ${max / 60_000} minutes` });
    }
  }
  if (p.hosts.all === false) issues.push({ path: ['hosts', 'all'], reason: 'use all: true or leave it out' });
  if (p.hosts.all === true && Object.keys(p.hosts).length > 1) issues.push({ path: ['hosts'], reason: 'all: true cannot be combined with other criteria' });
  return issues;
}

export function registerAttestationPolicyKind(): void {
  registerPolicyKind<AttestationPolicy>('attestation', ATTESTATION_POLICY_SCHEMA, checkAttestationPolicy);
}

/** What is known about a host when its policy is chosen. */
export interface HostFacts {
  id?: string;
  labels: Record<string, string>;
  ekIssuer: string | null;
  tpmManufacturer: string | null;
}

export function policyMatches(p: AttestationPolicy, h: HostFacts): boolean {
  const s = p.hosts;
  if (s.all === true) return true;
  if (s.ids && (h.id === undefined || !s.ids.includes(h.id))) return false;
  if (s.labels && !Object.entries(s.labels).every(([k, v]) => h.labels[k] === v)) return false;
  if (s.ekIssuerContains && (h.ekIssuer === null || !s.ekIssuerContains.some((x) => h.ekIssuer!.includes(x)))) return false;
  if (s.tpmManufacturer && (h.tpmManufacturer === null || !s.tpmManufacturer.includes(h.tpmManufacturer))) return false;
  // An id-only policy must not match at enrollment, before the host has an id.
  return Object.keys(s).length > 0;
}

/**
 * The one policy governing a host. None → ERR_POLICY_NOT_FOUND; several → ERR_POLICY_INVALID:
 * an ambiguous match is a configuration mistake and is refused rather than resolved by order.
 */
export function resolveAttestationPolicy(policies: readonly LoadedPolicy<AttestationPolicy>[], h: HostFacts): LoadedPolicy<AttestationPolicy> {
  const hits = policies.filter((p) => policyMatches(p.doc, h));
  if (hits.length === 0) throw new CustosError('ERR_POLICY_NOT_FOUND', 'no attestation policy governs this host');
  if (hits.length > 1) {
    throw new CustosError('ERR_POLICY_INVALID', `attestation policies ${hits.map((p) => p.id).join(', ')} all govern this host`, { details: { policies: hits.map((p) => p.id) } });
  }
  return hits[0]!;
}

export function nonceTtlMs(p: AttestationPolicy): number {
  return p.nonceTtl ? addDurationMs(0, parseDuration(p.nonceTtl)) : 60_000;
}

export function activationTtlMs(p: AttestationPolicy): number {
  return p.enrollment?.activationTtl ? addDurationMs(0, parseDuration(p.enrollment.activationTtl)) : 5 * 60_000;
}
