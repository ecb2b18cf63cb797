/**
 * Messages between the PKCS#11 adapter (main thread) and its token workers. Values cross
 * `postMessage`, so only plain data: numbers, strings, booleans, Uint8Arrays.
 */

export interface WorkerConsts {
  CKF_OS_LOCKING_OK: number;
  CKF_SERIAL_SESSION: number;
  CKF_RW_SESSION: number;
  CKU_USER: number;
  CKS_RO_USER_FUNCTIONS: number;
  CKS_RW_USER_FUNCTIONS: number;
  CKR_CRYPTOKI_ALREADY_INITIALIZED: number;
  CKR_USER_ALREADY_LOGGED_IN: number;
  CKR_GENERAL_ERROR: number;
  CKA_CLASS: number;
  CKA_TOKEN: number;
  CKA_ID: number;
  CKA_LABEL: number;
  CKA_KEY_TYPE: number;
  CKA_SENSITIVE: number;
  CKA_EXTRACTABLE: number;
  CKA_EC_PARAMS: number;
  CKA_EC_POINT: number;
  CKA_MODULUS: number;
  CKA_MODULUS_BITS: number;
  CKA_PUBLIC_EXPONENT: number;
  CKA_VALUE_LEN: number;
  CKO_PRIVATE_KEY: number;
  CKO_PUBLIC_KEY: number;
  CKO_SECRET_KEY: number;
  CKK_EC: number;
  CKK_RSA: number;
  CKK_AES: number;
  CKM_AES_GCM: number;
  CK_PARAMS_GCM: number;
}

export interface WireMechanism {
  mechanism: number;
  parameter?: Record<string, number | Uint8Array>;
}

export interface WireAttribute {
  type: number;
  value: boolean | number | Uint8Array | string;
}

export interface WorkerInit {
  pkcs11Path: string;
  module: string;
  tokenLabel: string;
  pin: string;
  consts: WorkerConsts;
  /** Sign/verify mechanisms by key `scheme` or `scheme:hash`. */
  mechs: Record<string, WireMechanism & { kind: 'ec' | 'rsa' }>;
  codes: { sessionGone: number[]; handleStale: number[]; notLoggedIn: number[]; tokenGone: number[]; signatureBad: number[]; copyRefused: number[] };
  /**
   * Sign with a session copy of each private key (C_CopyObject, CKA_TOKEN false) rather than
   * with the token object; see "Session copies" in hsm/README.md.
   */
  sessionCopies: boolean;
  /** How often a copy's token object is checked (one attribute read), and after how long unused a copy is destroyed. */
  copyCheckMs: number;
  copyIdleMs: number;
}

export interface ObjectAttrs {
  cls: 'private' | 'public' | 'secret';
  keyType: number;
  id: string;
  label: string;
  sensitive?: boolean;
  extractable?: boolean;
  ecParams?: Uint8Array;
  modulusBits?: number;
  valueLen?: number;
}

export type WorkerOp =
  | { op: 'connect' }
  | { op: 'health' }
  | { op: 'genPair'; id: string; mech: WireMechanism; pub: WireAttribute[]; priv: WireAttribute[] }
  | { op: 'genSecret'; id: string; mech: WireMechanism; tpl: WireAttribute[] }
  | { op: 'find'; id: string }
  | { op: 'list' }
  | { op: 'pub'; id: string }
  | { op: 'sign'; id: string; mech: string; data: Uint8Array }
  | { op: 'verify'; id: string; mech: string; data: Uint8Array; sig: Uint8Array }
  | { op: 'encrypt'; id: string; data: Uint8Array; aad: Uint8Array }
  | { op: 'decrypt'; id: string; iv: Uint8Array; data: Uint8Array; aad: Uint8Array }
  | { op: 'random'; length: number }
  | { op: 'destroy'; id: string }
  | { op: 'forget'; id: string }
  | { op: 'drop' }
  | { op: 'reinit' }
  | { op: 'closeAllSessions' }
  | { op: 'logout' };

export type WorkerFailure =
  /** A CKR value from `fn`; `gone` when the token itself no longer answers. */
  | { ok: false; ckr: number; fn: string; gone: boolean }
  | { ok: false; kind: 'notfound' | 'purpose' | 'notoken' | 'module'; detail: string };

export type WorkerResult = { ok: true; v: unknown } | WorkerFailure;

export type ToWorker = { t: 'batch'; ops: Array<{ n: number; o: WorkerOp }> };
export type FromWorker = { t: 'results'; r: Array<{ n: number; r: WorkerResult }> } | { t: 'ready'; r: WorkerResult };
