/**
 * Attestation results in EAR form (draft-ietf-rats-ear, EAT Attestation Results) and the claims of
 * session tokens.
 *
 * Vocabulary (draft-ietf-rats-ear §3 and draft-ietf-rats-ar4si §2.3):
 * - `ear.status`: the overall tier, one of none / affirming / warning / contraindicated, the worst
 *   tier found in the trustworthiness vector.
 * - `ear.trustworthiness-vector`: per-claim integers. Tiers by value: -1..1 none, 2..31 affirming,
 *   32..95 warning, 96..127 contraindicated (negative values mirror positive ones).
 * - `ear.verifier-id`: `{ developer, build }` of the verifier.
 * - `ear.appraisal-policy-id`: the policy the evidence was appraised against.
 *
 * The whole mapping from verifier failure codes to trustworthiness claims is {@link FAILURE_TABLE};
 * nothing else decides a status.
 */
import { CustosError } from '../lib/errors.js';

export type EarStatus = 'none' | 'affirming' | 'warning' | 'contraindicated';

/** The AR4SI trustworthiness claims custos appraises from TPM evidence. */
export type TrustClaim = 'instance-identity' | 'configuration' | 'executables' | 'hardware';

export type TrustworthinessVector = Partial<Record<TrustClaim, number>>;

/** EAR profile of the attestation result JWT (draft-ietf-rats-ear §3.1, the profile its implementations emit). */
export const EAR_PROFILE = 'tag:github.com,2023:veraison/ear';

// AR4SI §2.3 values used below.
export const AR4SI = {
  NO_CLAIM: 0,
  UNEXPECTED_EVIDENCE: 1,
  CRYPTO_VALIDATION_FAILED: 99,
  instanceIdentity: { TRUSTWORTHY: 2, UNTRUSTWORTHY: 96, UNRECOGNIZED: 97 },
  configuration: { APPROVED: 2, UNSAFE: 32, UNSUPPORTABLE: 96 },
  executables: { APPROVED_RUNTIME: 2, APPROVED_BOOT: 3, UNRECOGNIZED_RUNTIME: 33, CONTRAINDICATED_RUNTIME: 96 },
  hardware: { GENUINE: 2, UNSAFE: 32, CONTRAINDICATED: 96, UNRECOGNIZED: 97 },
} as const;

/** What a verified quote with no failure earns: every appraised claim affirming. */
const AFFIRMING_VECTOR: Readonly<Record<TrustClaim, number>> = {
  'instance-identity': AR4SI.instanceIdentity.TRUSTWORTHY,
  configuration: AR4SI.configuration.APPROVED,
  executables: AR4SI.executables.APPROVED_BOOT,
  hardware: AR4SI.hardware.GENUINE,
};

/**
 * Failure code → the trustworthiness claim it lowers and the value it sets. One table, read top
 * to bottom:
 *
 * | failure | claim | value | tier |
 * |---|---|---|---|
 * | quote signature invalid / not by the registered AK / not TPM-generated / not a quote | instance-identity | 99 crypto validation failed | contraindicated |
 * | nonce unknown, expired, or extraData mismatch (freshness / key binding) | instance-identity | 99 | contraindicated |
 * | host revoked | instance-identity | 96 untrustworthy | contraindicated |
 * | host unknown | instance-identity | 97 unrecognized | contraindicated |
 * | TPM clock, counters or firmware went backwards | instance-identity | 96 untrustworthy | contraindicated |
 * | PCR values do not match the quoted digest | executables | 99 | contraindicated |
 * | PCR value outside the reference values | executables | 96 contraindicated runtime | contraindicated |
 * | quote does not cover exactly the required PCRs | configuration | 96 unsupportable | contraindicated |
 * | quote hash algorithm not allowed | configuration | 96 unsupportable | contraindicated |
 * | EK chain not trusted | hardware | 97 unrecognized | contraindicated |
 * | TPM clock not marked safe | hardware | 32 unsafe | warning |
 * | any other code | instance-identity | 99 | contraindicated (fail closed) |
 */
export const FAILURE_TABLE: Readonly<Record<string, { readonly claim: TrustClaim; readonly value: number }>> = {
  ERR_QUOTE_SIGNATURE: { claim: 'instance-identity', value: AR4SI.CRYPTO_VALIDATION_FAILED },
  ERR_QUOTE_SIGNER: { claim: 'instance-identity', value: AR4SI.CRYPTO_VALIDATION_FAILED },
  ERR_QUOTE_MAGIC: { claim: 'instance-identity', value: AR4SI.CRYPTO_VALIDATION_FAILED },
  ERR_QUOTE_TYPE: { claim: 'instance-identity', value: AR4SI.CRYPTO_VALIDATION_FAILED },
  ERR_TPM_MARSHAL: { claim: 'instance-identity', value: AR4SI.CRYPTO_VALIDATION_FAILED },
  ERR_QUOTE_NONCE_MISMATCH: { claim: 'instance-identity', value: AR4SI.CRYPTO_VALIDATION_FAILED },
  ERR_NONCE_UNKNOWN: { claim: 'instance-identity', value: AR4SI.CRYPTO_VALIDATION_FAILED },
  ERR_NONCE_EXPIRED: { claim: 'instance-identity', value: AR4SI.CRYPTO_VALIDATION_FAILED },
  ERR_HOST_REVOKED: { claim: 'instance-identity', value: AR4SI.instanceIdentity.UNTRUSTWORTHY },
  ERR_HOST_NOT_FOUND: { claim: 'instance-identity', value: AR4SI.instanceIdentity.UNRECOGNIZED },
  ERR_QUOTE_CLOCK_ROLLBACK: { claim: 'instance-identity', value: AR4SI.instanceIdentity.UNTRUSTWORTHY },
  ERR_QUOTE_PCR_DIGEST: { claim: 'executables', value: AR4SI.CRYPTO_VALIDATION_FAILED },
  ERR_QUOTE_PCR_POLICY: { claim: 'executables', value: AR4SI.executables.CONTRAINDICATED_RUNTIME },
  ERR_QUOTE_PCR_SELECTION: { claim: 'configuration', value: AR4SI.configuration.UNSUPPORTABLE },
  ERR_QUOTE_HASH_ALG: { claim: 'configuration', value: AR4SI.configuration.UNSUPPORTABLE },
  ERR_TPM_UNSUPPORTED_ALG: { claim: 'configuration', value: AR4SI.configuration.UNSUPPORTABLE },
  ERR_EK_CERT_CHAIN: { claim: 'hardware', value: AR4SI.hardware.UNRECOGNIZED },
  ERR_QUOTE_NOT_SAFE: { claim: 'hardware', value: AR4SI.hardware.UNSAFE },
};

const UNKNOWN_FAILURE = { claim: 'instance-identity' as TrustClaim, value: AR4SI.CRYPTO_VALIDATION_FAILED };

const TIER_RANK: Readonly<Record<EarStatus, number>> = { none: 0, affirming: 1, warning: 2, contraindicated: 3 };

/** AR4SI §2.3.1 tier of one trustworthiness value. */
export function tierOf(value: number): EarStatus {
  const v = Math.abs(value);
  if (v <= 1) return 'none';
  if (v <= 31) return 'affirming';
  if (v <= 95) return 'warning';
  return 'contraindicated';
}

export interface AppraisalFailure {
  readonly code: string;
  readonly detail?: string;
}

export interface Appraisal {
  readonly status: EarStatus;
  readonly trustworthinessVector: TrustworthinessVector;
}

/**
 * Turns the list of verifier failures into an EAR status and trustworthiness vector: start from
 * the all-affirming vector, let each failure lower its claim (the worse value wins when two hit
 * the same claim), and take the worst tier as the status. No failure → affirming. Unknown codes
 * count as contraindicated so that a new check can never silently pass.
 */
export function appraise(failures: readonly AppraisalFailure[]): Appraisal {
  const vector: Record<TrustClaim, number> = { ...AFFIRMING_VECTOR };
  const touched = new Set<TrustClaim>();
  for (const f of failures) {
    const hit = Object.hasOwn(FAILURE_TABLE, f.code) ? (FAILURE_TABLE[f.code] as { claim: TrustClaim; value: number }) : UNKNOWN_FAILURE;
    const cur = vector[hit.claim];
    const worse =
      !touched.has(hit.claim) ||
      TIER_RANK[tierOf(hit.value)] > TIER_RANK[tierOf(cur)] ||
      (tierOf(hit.value) === tierOf(cur) && Math.abs(hit.value) > Math.abs(cur));
    if (worse) vector[hit.claim] = hit.value;
    touched.add(hit.claim);
  }
  let status: EarStatus = 'none';
  for (const v of Object.values(vector)) if (TIER_RANK[tierOf(v)] > TIER_RANK[status]) status = tierOf(v);
  return { status, trustworthinessVector: vector };
}

export interface VerifierId {
  readonly developer: string;
  readonly build: string;
}

export interface AppraisalResult extends Appraisal {
  readonly policyId: string;
  readonly policyVersion: string | number;
  /** Hex of the quoted PCR digest (TPMS_QUOTE_INFO.pcrDigest). */
  readonly pcrDigest: string;
}

/** `ear.appraisal-policy-id` value: the attestation policy id and version. */
export function appraisalPolicyId(policyId: string, policyVersion: string | number): string {
  return `${policyId}@${String(policyVersion)}`;
}

const toSeconds = (now: Date): number => Math.floor(now.getTime() / 1000);

/** Claim name of the quoted PCR digest (custos-specific, collision-resistant by its prefix). */
export const PCR_DIGEST_CLAIM = 'custos.pcr-digest';

/**
 * Claims a session policy may disclose. Everything else in a token is mandatory: iss, sub, aud,
 * iat, nbf, exp, jti, cnf, eat_nonce (the relying party needs them to check the token at all) and
 * ear.status (the one verdict a token stands for).
 */
export const DISCLOSABLE_CLAIMS = ['ear.trustworthiness-vector', 'ear.verifier-id', 'ear.appraisal-policy-id', PCR_DIGEST_CLAIM] as const;
export type DisclosableClaim = (typeof DISCLOSABLE_CLAIMS)[number];

export interface SessionClaimsInput {
  readonly issuer: string;
  readonly hostId: string;
  readonly audience: string;
  readonly now: Date;
  readonly ttlSeconds: number;
  readonly jti: string;
  /** RFC 7638 thumbprint of the ephemeral key, 32 raw bytes. */
  readonly thumbprint: Buffer;
  readonly nonce: Buffer;
  readonly appraisal: AppraisalResult;
  readonly verifierId: VerifierId;
  /** Names from {@link DISCLOSABLE_CLAIMS}, as the session policy lists them. */
  readonly disclose: readonly string[];
}

export interface SessionClaims {
  readonly iss: string;
  readonly sub: string;
  readonly aud: string;
  readonly iat: number;
  readonly nbf: number;
  readonly exp: number;
  readonly jti: string;
  readonly cnf: { readonly jkt: string };
  readonly eat_nonce: string;
  readonly 'ear.status': EarStatus;
  readonly 'ear.trustworthiness-vector'?: TrustworthinessVector;
  readonly 'ear.verifier-id'?: VerifierId;
  readonly 'ear.appraisal-policy-id'?: string;
  readonly 'custos.pcr-digest'?: string;
}

/** Session tokens live at most 15 minutes (the hard cap of session policies). */
export const MAX_SESSION_TTL_SECONDS = 900;

function nonEmpty(v: unknown, field: string): string {
  if (typeof v !== 'string' || v === '') throw new CustosError('ERR_BAD_REQUEST', `${field} must be a non-empty string`);
  return v;
}

/**
 * Builds the claims of a session token: the mandatory set plus exactly the disclosable claims
 * the session policy names (selective disclosure: nothing beyond them). `cnf.jkt` is the RFC 7638
 * thumbprint (RFC 7800 §3.1 confirmation, jkt as in RFC 9449 §6.1), `eat_nonce` the server nonce
 * (RFC 9711 §4.1), both base64url.
 * @throws CustosError ERR_BAD_REQUEST (bad inputs), ERR_POLICY_INVALID (a claim name that cannot
 *   be disclosed), ERR_ATTESTATION_FAILED (status other than affirming: no token for that)
 */
export function buildSessionClaims(input: SessionClaimsInput): SessionClaims {
  const iss = nonEmpty(input.issuer, 'issuer');
  const sub = nonEmpty(input.hostId, 'hostId');
  const aud = nonEmpty(input.audience, 'audience');
  const jti = nonEmpty(input.jti, 'jti');
  if (!(input.now instanceof Date) || Number.isNaN(input.now.getTime())) throw new CustosError('ERR_BAD_REQUEST', 'now must be a valid Date');
  if (!Number.isInteger(input.ttlSeconds) || input.ttlSeconds <= 0 || input.ttlSeconds > MAX_SESSION_TTL_SECONDS) {
    throw new CustosError('ERR_BAD_REQUEST', `ttlSeconds must be an integer in 1..${MAX_SESSION_TTL_SECONDS}`);
  }
  if (!Buffer.isBuffer(input.thumbprint) || input.thumbprint.length !== 32) throw new CustosError('ERR_BAD_REQUEST', 'thumbprint must be 32 bytes');
  if (!Buffer.isBuffer(input.nonce) || input.nonce.length === 0) throw new CustosError('ERR_BAD_REQUEST', 'nonce must not be empty');
  // A token asserts that the evidence satisfied the policy; anything short of affirming is refused here too.
  if (input.appraisal.status !== 'affirming') throw new CustosError('ERR_ATTESTATION_FAILED');
  const disclose = new Set<string>();
  for (const name of input.disclose) {
    if (!(DISCLOSABLE_CLAIMS as readonly string[]).includes(name)) {
      throw new CustosError('ERR_POLICY_INVALID', `claim "${name}" cannot be disclosed`, { details: { claim: name } });
    }
    disclose.add(name);
  }
  const iat = toSeconds(input.now);
  const claims: Record<string, unknown> = {
    iss,
    sub,
    aud,
    iat,
    nbf: iat,
    exp: iat + input.ttlSeconds,
    jti,
    cnf: { jkt: input.thumbprint.toString('base64url') },
    eat_nonce: input.nonce.toString('base64url'),
    'ear.status': input.appraisal.status,
  };
  if (disclose.has('ear.trustworthiness-vector')) claims['ear.trustworthiness-vector'] = { ...input.appraisal.trustworthinessVector };
  if (disclose.has('ear.verifier-id')) claims['ear.verifier-id'] = { developer: input.verifierId.developer, build: input.verifierId.build };
  if (disclose.has('ear.appraisal-policy-id')) claims['ear.appraisal-policy-id'] = appraisalPolicyId(input.appraisal.policyId, input.appraisal.policyVersion);
  if (disclose.has(PCR_DIGEST_CLAIM)) claims[PCR_DIGEST_CLAIM] = input.appraisal.pcrDigest;
  return claims as unknown as SessionClaims;
}

export interface EarResultInput {
  readonly issuer: string;
  readonly hostId: string;
  readonly now: Date;
  readonly nonce: Buffer;
  readonly appraisal: AppraisalResult;
  readonly verifierId: VerifierId;
  /** Validity of the result JWT in seconds (it is a statement about one point in time). */
  readonly ttlSeconds: number;
}

export interface EarSubmod {
  readonly 'ear.status': EarStatus;
  readonly 'ear.trustworthiness-vector': TrustworthinessVector;
  readonly 'ear.appraisal-policy-id': string;
  readonly 'custos.pcr-digest': string;
}

export interface EarResult {
  readonly eat_profile: string;
  readonly iss: string;
  readonly iat: number;
  readonly exp: number;
  readonly eat_nonce: string;
  readonly 'ear.verifier-id': VerifierId;
  readonly submods: Readonly<Record<string, EarSubmod>>;
}

/**
 * The body of the attestation-result EAR JWT answered by `POST /v1/hosts/{id}/attest`: profile,
 * issue time, verifier id and nonce at the top, one submodule per attester (here: the host's TPM,
 * named by the host id) carrying status, trustworthiness vector, policy id and the quoted PCR
 * digest (draft-ietf-rats-ear §3). Unlike a session token it is produced for every outcome,
 * including contraindicated.
 * @throws CustosError ERR_BAD_REQUEST on bad inputs
 */
export function buildEarResult(input: EarResultInput): EarResult {
  const iss = nonEmpty(input.issuer, 'issuer');
  const hostId = nonEmpty(input.hostId, 'hostId');
  if (!(input.now instanceof Date) || Number.isNaN(input.now.getTime())) throw new CustosError('ERR_BAD_REQUEST', 'now must be a valid Date');
  if (!Number.isInteger(input.ttlSeconds) || input.ttlSeconds <= 0) throw new CustosError('ERR_BAD_REQUEST', 'ttlSeconds must be a positive integer');
  if (!Buffer.isBuffer(input.nonce) || input.nonce.length === 0) throw new CustosError('ERR_BAD_REQUEST', 'nonce must not be empty');
  const iat = toSeconds(input.now);
  return {
    eat_profile: EAR_PROFILE,
    iss,
    iat,
    exp: iat + input.ttlSeconds,
    eat_nonce: input.nonce.toString('base64url'),
    'ear.verifier-id': { developer: input.verifierId.developer, build: input.verifierId.build },
    submods: {
      [hostId]: {
        'ear.status': input.appraisal.status,
        'ear.trustworthiness-vector': { ...input.appraisal.trustworthinessVector },
        'ear.appraisal-policy-id': appraisalPolicyId(input.appraisal.policyId, input.appraisal.policyVersion),
        'custos.pcr-digest': input.appraisal.pcrDigest,
      },
    },
  };
}
