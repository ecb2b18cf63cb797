/** TPM 2.0 structures: strict hand-written marshalling (no maintained npm library does this). */
export * from './algorithms.js';
export * from './reader.js';
export * from './public.js';
export * from './pcr-selection.js';
export * from './attest.js';
export * from './signature.js';
export * from './credential.js';
