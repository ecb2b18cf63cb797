/**
 * One error type for the whole service. `code` comes from a closed union; the HTTP layer maps a
 * code to a status and a public message through {@link ERROR_TABLE}. The `message` of a
 * CustosError may be shown to the caller, so it must never carry a secret; internal causes go in
 * `cause` and are only logged.
 */
export const ERROR_TABLE = {
  // request shape
  ERR_BAD_REQUEST: [400, 'The request is malformed.'],
  ERR_BAD_JSON: [400, 'The request body is not valid JSON.'],
  ERR_BODY_TOO_LARGE: [400, 'The request body is too large.'],
  ERR_UNSUPPORTED_MEDIA_TYPE: [415, 'The request body must be application/json.'],
  ERR_BAD_BASE64: [400, 'A binary field is not valid base64.'],
  ERR_BAD_DIGEST_LENGTH: [400, 'The digest length does not match the key hash.'],
  ERR_NOT_FOUND: [404, 'No such resource.'],
  ERR_METHOD_NOT_ALLOWED: [405, 'This path does not serve this method; the Allow header lists those it does.'],
  // auth
  ERR_UNAUTHENTICATED: [401, 'Authentication is required.'],
  ERR_FORBIDDEN: [403, 'The caller may not do this.'],
  // config
  ERR_CONFIG: [500, 'The service is misconfigured.'],
  ERR_NOT_SUPPORTED: [501, 'Not supported.'],
  // keys
  ERR_KEY_NOT_FOUND: [404, 'No such key.'],
  ERR_KEY_EXISTS: [409, 'A key with this name exists.'],
  ERR_KEY_VERSION_NOT_FOUND: [404, 'No such key version.'],
  ERR_KEY_PURPOSE: [400, 'The key cannot be used for this operation.'],
  ERR_KEY_RESERVED: [403, "The key signs only custos's own session tokens, attestation results or audit checkpoints."],
  ERR_KEY_TYPE: [400, 'Unsupported key type.'],
  ERR_KEY_STATE: [409, 'The key version is not in a state that allows this operation.'],
  ERR_KEY_DESTROYED: [410, 'The key version has been destroyed.'],
  ERR_KEY_NO_ACTIVE_VERSION: [409, 'The key has no active version.'],
  ERR_CIPHERTEXT_FORMAT: [400, 'The ciphertext is not in custos format.'],
  ERR_DECRYPT: [400, 'The ciphertext or its associated data failed authentication.'],
  ERR_SIGNATURE_FORMAT: [400, 'The signature is malformed.'],
  // hsm
  ERR_HSM_UNAVAILABLE: [503, 'The HSM is unavailable.'],
  ERR_HSM_AUTH: [503, 'The HSM refused the login.'],
  ERR_HSM_OBJECT_NOT_FOUND: [500, 'The HSM object for this key version is missing.'],
  ERR_HSM: [500, 'The HSM returned an error.'],
  // store / audit
  ERR_STORE_UNAVAILABLE: [503, 'The store is unavailable.'],
  ERR_AUDIT_WRITE: [503, 'The audit log could not be written; the operation was not performed.'],
  ERR_CONFLICT: [409, 'Conflicting concurrent change.'],
  // policy
  ERR_POLICY_INVALID: [400, 'A policy file is invalid.'],
  ERR_POLICY_NOT_FOUND: [403, 'No policy covers this request.'],
  // tpm marshalling
  ERR_TPM_MARSHAL: [400, 'A TPM structure is malformed.'],
  ERR_TPM_UNSUPPORTED_ALG: [400, 'A TPM algorithm is not supported.'],
  ERR_TPM_UNAVAILABLE: [503, 'The TPM is unavailable.'],
  ERR_TPM_COMMAND: [500, 'A TPM command failed.'],
  // enrollment / credential activation
  ERR_PROVISIONING_TOKEN: [403, 'The provisioning token is missing, expired or used up.'],
  ERR_EK_CERT_CHAIN: [403, 'The EK certificate does not chain to a trusted TPM vendor CA.'],
  ERR_EK_CERT_INVALID: [400, 'The EK certificate is malformed or not an EK certificate.'],
  ERR_EK_ATTRIBUTES: [400, 'The EK public area is not a restricted, non-signing decryption key fixed to its TPM.'],
  ERR_EK_MISMATCH: [400, 'The EK certificate key does not match the EK public area.'],
  ERR_EK_NOT_ALLOWED: [403, 'The EK is not on the allowlist.'],
  ERR_AK_ATTRIBUTES: [400, 'The AK attributes are not those of a restricted signing key.'],
  ERR_AK_ALGORITHM: [400, 'The AK algorithm or size is not allowed.'],
  ERR_ENROLLMENT_NOT_FOUND: [404, 'No such enrollment, or it has expired.'],
  ERR_ACTIVATION_FAILED: [403, 'The activation secret is wrong.'],
  ERR_ENROLLMENT_USED: [409, 'The enrollment was already activated or abandoned.'],
  ERR_HOST_NOT_FOUND: [404, 'No such host.'],
  ERR_HOST_REVOKED: [403, 'The host is revoked.'],
  ERR_HOST_EXISTS: [409, 'This AK or EK is already enrolled.'],
  // nonces / quotes
  ERR_NONCE_UNKNOWN: [403, 'The nonce is unknown, already used, or belongs to another host.'],
  ERR_NONCE_EXPIRED: [403, 'The nonce has expired.'],
  ERR_QUOTE_MAGIC: [400, 'The quote is not a TPM-generated attestation.'],
  ERR_QUOTE_TYPE: [400, 'The attestation is not a quote.'],
  ERR_QUOTE_SIGNER: [403, 'The quote was not produced by the registered AK.'],
  ERR_QUOTE_NONCE_MISMATCH: [403, 'The quote extraData does not match the nonce.'],
  ERR_QUOTE_SIGNATURE: [403, 'The quote signature is invalid.'],
  ERR_QUOTE_HASH_ALG: [403, 'The quote signature hash algorithm is not allowed.'],
  ERR_QUOTE_PCR_SELECTION: [403, 'The quote does not cover exactly the required PCRs.'],
  ERR_QUOTE_PCR_DIGEST: [403, 'The PCR values do not match the quoted digest.'],
  ERR_QUOTE_PCR_POLICY: [403, 'A PCR value does not match the reference values.'],
  ERR_QUOTE_CLOCK_ROLLBACK: [403, 'The TPM clock, counters or firmware version went backwards.'],
  ERR_QUOTE_NOT_SAFE: [403, 'The TPM clock is not marked safe.'],
  // sessions
  ERR_AUDIENCE_NOT_ALLOWED: [403, 'The audience is not allowed.'],
  ERR_EPHEMERAL_KEY: [400, 'The ephemeral public key is invalid.'],
  ERR_ATTESTATION_FAILED: [403, 'The evidence did not satisfy the policy.'],
  ERR_POLICY_MISMATCH: [403, 'The host is not governed by the attestation policy the session policy requires.'],
  ERR_TOKEN_INVALID: [401, 'The token is invalid.'],
  // rotation
  ERR_ROTATION_POLICY: [400, 'No single rotation policy governs this key; name one, or manual.'],
  // catch-all
  ERR_INTERNAL: [500, 'Internal error.'],
} as const satisfies Record<string, readonly [number, string]>;

export type ErrorCode = keyof typeof ERROR_TABLE;

export class CustosError extends Error {
  readonly code: ErrorCode;
  /** Extra public fields (never secrets), e.g. which PCR failed. */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message ?? ERROR_TABLE[code][1], options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CustosError';
    this.code = code;
    this.details = options?.details;
  }

  get status(): number {
    return ERROR_TABLE[this.code][0];
  }
}

export function isCustosError(e: unknown, code?: ErrorCode): e is CustosError {
  return e instanceof CustosError && (code === undefined || e.code === code);
}
