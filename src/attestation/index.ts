/**
 * custos attestation: pure verifiers over TPM 2.0 bytes (no I/O except loadTrustAnchors reading
 * a folder). The TPM marshalling, MakeCredential and quote verification are hand-written on
 * node:crypto because no maintained npm library does them; X.509 chains use @peculiar/x509.
 */
export { checkAkPublic, type AkPublic } from './ak.js';
export {
  OID_TCG_KP_EK_CERTIFICATE,
  certificatesFromBytes,
  loadTrustAnchors,
  parseTrustAnchors,
  trimCertificatePadding,
  verifyEkCertificate,
  type ChainEntry,
  type EkVerification,
  type TpmIdentity,
  type TrustAnchors,
  type VerifyEkInput,
} from './ek-chain.js';
export { kdfa, kdfe } from './kdf.js';
export { makeCredential, type MadeCredential, type MakeCredentialOptions, type RandomSource } from './make-credential.js';
export { TPM_RH_ENDORSEMENT, TPM_RH_OWNER, akQualifiedNameUnderEk, hierarchyQualifiedName, qualifiedName } from './qualified-name.js';
export {
  verifyQuote,
  type ParsedQuote,
  type PcrValues,
  type QuoteCheck,
  type QuoteCheckName,
  type QuoteCounters,
  type QuoteFailure,
  type QuoteVerdict,
  type VerifyQuoteInput,
} from './quote.js';
export * from './tpm2/index.js';
