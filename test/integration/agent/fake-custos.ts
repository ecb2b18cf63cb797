/**
 * A minimal stand-in for the custos host endpoints (API.md: enroll, activate, challenges,
 * attest, sessions) built from the real pure pieces (makeCredential, checkAkPublic, verifyQuote,
 * sessionExtraData, sealSessionKey), so that the agent's commands can be driven end to end
 * against swtpm without the service. Test-only: tokens are signed with a software key.
 */
import { randomBytes, randomUUID, timingSafeEqual, X509Certificate } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { generateKeyPair, SignJWT, type CryptoKey as JoseKey } from 'jose';
import { checkAkPublic, type AkPublic } from '../../../src/attestation/ak.js';
import { makeCredential } from '../../../src/attestation/make-credential.js';
import { akQualifiedNameUnderEk } from '../../../src/attestation/qualified-name.js';
import { verifyQuote, type PcrValues } from '../../../src/attestation/quote.js';
import { objectName, parseTpm2bPublic, tpmPublicEqualsKey } from '../../../src/attestation/tpm2/public.js';
import { parseEphemeralJwk, sessionExtraData } from '../../../src/sessions/ephemeral-key.js';
import { sealSessionKey } from '../../../src/sessions/hpke.js';

interface Host {
  ak: AkPublic;
  qualifiedSigner: Buffer;
}

/** What the fake recorded, for assertions. */
export interface FakeCustos {
  readonly url: string;
  /** Reference values per sha256 PCR index the attest/session checks demand. */
  reference: Record<string, Buffer[]>;
  readonly hosts: Map<string, Host>;
  /** Enrollment requests as received (bodies). */
  readonly enrollments: Array<Record<string, unknown>>;
  /** Session keys handed out, by jti. */
  readonly sessionKeys: Map<string, Buffer>;
  /** Authorization headers seen on enroll. */
  readonly enrollAuth: Array<string | undefined>;
  /** Makes /v1/sessions answer with a token naming another key, audience or host. */
  tamper: 'none' | 'jkt' | 'aud' | 'sub';
  close(): Promise<void>;
}

const REQUIRED = { bank: 'sha256', indices: [0, 1, 2, 3, 4, 5, 6, 7] };

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
  ) {
    super(code);
  }
}

function toPcrValues(v: unknown): PcrValues {
  if (typeof v !== 'object' || v === null) throw new HttpError(400, 'ERR_BAD_REQUEST');
  return Object.fromEntries(
    Object.entries(v as Record<string, Record<string, string>>).map(([bank, m]) => [bank, Object.fromEntries(Object.entries(m).map(([i, h]) => [i, Buffer.from(h, 'hex')]))]),
  );
}

function b64(v: unknown): Buffer {
  if (typeof v !== 'string') throw new HttpError(400, 'ERR_BAD_REQUEST');
  return Buffer.from(v, 'base64');
}

/** Starts the fake on a free port of 127.0.0.1. */
export async function startFakeCustos(opts: { provisioningToken?: string } = {}): Promise<FakeCustos> {
  const { privateKey } = await generateKeyPair('ES256');
  const signer: JoseKey = privateKey;
  const pending = new Map<string, { ak: AkPublic; ekName: Buffer; secret: Buffer }>();
  const nonces = new Map<string, string>();
  const state: Omit<FakeCustos, 'url' | 'close'> = { reference: {}, hosts: new Map(), enrollments: [], sessionKeys: new Map(), enrollAuth: [], tamper: 'none' };

  function checkQuote(hostId: string, body: Record<string, unknown>, extra: (nonce: Buffer) => Buffer) {
    const host = state.hosts.get(hostId);
    if (host === undefined) throw new HttpError(404, 'ERR_HOST_NOT_FOUND');
    const nonceText = String(body.nonce);
    if (nonces.get(nonceText) !== hostId) throw new HttpError(403, 'ERR_NONCE_UNKNOWN');
    nonces.delete(nonceText);
    return verifyQuote({
      akPublic: host.ak,
      quote: b64(body.quote),
      signature: b64(body.signature),
      pcrs: toPcrValues(body.pcrs),
      expectedExtraData: extra(Buffer.from(nonceText, 'base64')),
      requiredSelection: REQUIRED,
      referenceValues: state.reference,
      expectedQualifiedSigner: host.qualifiedSigner,
    });
  }

  async function handle(method: string, path: string, body: Record<string, unknown>, req: IncomingMessage): Promise<[number, unknown]> {
    let m: RegExpExecArray | null;
    if (method === 'POST' && path === '/v1/hosts/enroll') {
      state.enrollments.push(body);
      state.enrollAuth.push(req.headers.authorization);
      if (opts.provisioningToken !== undefined && body.provisioningToken !== opts.provisioningToken) throw new HttpError(403, 'ERR_PROVISIONING_TOKEN');
      const ekPub = parseTpm2bPublic(b64(body.ekPublic));
      if (body.ekCertificate !== undefined && !tpmPublicEqualsKey(ekPub, new X509Certificate(b64(body.ekCertificate)).publicKey)) throw new HttpError(400, 'ERR_EK_MISMATCH');
      const ak = checkAkPublic(b64(body.akPublic));
      const secret = randomBytes(32);
      const made = makeCredential(ekPub, ak.name, secret);
      const enrollmentId = randomUUID();
      pending.set(enrollmentId, { ak, ekName: objectName(ekPub), secret });
      return [201, { enrollmentId, credentialBlob: made.credentialBlob.toString('base64'), encryptedSecret: made.encryptedSecret.toString('base64') }];
    }
    if (method === 'POST' && (m = /^\/v1\/hosts\/enroll\/([^/]+)\/activate$/.exec(path))) {
      const p = pending.get(decodeURIComponent(m[1]!));
      if (p === undefined) throw new HttpError(404, 'ERR_ENROLLMENT_NOT_FOUND');
      pending.delete(decodeURIComponent(m[1]!));
      const got = b64(body.secret);
      if (got.length !== p.secret.length || !timingSafeEqual(got, p.secret)) throw new HttpError(403, 'ERR_ACTIVATION_FAILED');
      const hostId = `h-${randomBytes(6).toString('hex')}`;
      state.hosts.set(hostId, { ak: p.ak, qualifiedSigner: akQualifiedNameUnderEk(p.ekName, p.ak.name) });
      return [201, { hostId, akName: p.ak.name.toString('hex') }];
    }
    if (method === 'POST' && path === '/v1/challenges') {
      if (!state.hosts.has(String(body.hostId))) throw new HttpError(404, 'ERR_HOST_NOT_FOUND');
      const nonce = randomBytes(32).toString('base64');
      nonces.set(nonce, String(body.hostId));
      return [200, { nonce, expiresAt: new Date(Date.now() + 60_000).toISOString() }];
    }
    if (method === 'POST' && (m = /^\/v1\/hosts\/([^/]+)\/attest$/.exec(path))) {
      const v = checkQuote(decodeURIComponent(m[1]!), body, (n) => n);
      return [200, { status: v.ok ? 'affirming' : 'contraindicated', result: 'ear', failures: v.failures }];
    }
    if (method === 'POST' && path === '/v1/sessions') {
      const hostId = String(body.hostId);
      const eph = parseEphemeralJwk(body.ephemeralPublicKey);
      const v = checkQuote(hostId, body, (n) => sessionExtraData(n, eph.thumbprint));
      if (!v.ok) throw new HttpError(403, 'ERR_ATTESTATION_FAILED');
      const jti = randomUUID();
      const now = Math.floor(Date.now() / 1000);
      const jkt = state.tamper === 'jkt' ? Buffer.alloc(32, 1).toString('base64url') : eph.thumbprint.toString('base64url');
      const token = await new SignJWT({ cnf: { jkt }, 'ear.status': 'affirming', eat_nonce: String(body.nonce) })
        .setProtectedHeader({ alg: 'ES256', kid: 'issuer/1' })
        .setIssuer('custos-test')
        .setSubject(state.tamper === 'sub' ? 'h-other' : hostId)
        .setAudience(state.tamper === 'aud' ? 'other-audience' : String(body.audience))
        .setIssuedAt(now)
        .setExpirationTime(now + 300)
        .setJti(jti)
        .sign(signer);
      const key = randomBytes(32);
      state.sessionKeys.set(jti, key);
      const sealed = await sealSessionKey(eph.jwk, key, jti);
      return [201, { token, expiresAt: new Date((now + 300) * 1000).toISOString(), sessionKey: sealed, kid: 'issuer/1' }];
    }
    throw new HttpError(404, 'ERR_NOT_FOUND');
  }

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const send = (status: number, value: unknown) => {
        const text = JSON.stringify(value);
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      };
      let body: Record<string, unknown>;
      try {
        body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>) : {};
      } catch {
        return send(400, { error: { code: 'ERR_BAD_JSON', message: 'bad json', requestId: 'r' } });
      }
      handle(req.method ?? 'GET', new URL(req.url ?? '/', 'http://x').pathname, body, req).then(
        ([status, value]) => send(status, value),
        (e: unknown) => {
          const code = e instanceof HttpError ? e.code : ((e as { code?: string }).code ?? 'ERR_INTERNAL');
          const status = e instanceof HttpError ? e.status : (e as { status?: number }).status ?? 500;
          send(status, { error: { code, message: (e as Error).message, requestId: 'r' } });
        },
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    get reference() {
      return state.reference;
    },
    set reference(v) {
      state.reference = v;
    },
    get tamper() {
      return state.tamper;
    },
    set tamper(v) {
      state.tamper = v;
    },
    hosts: state.hosts,
    enrollments: state.enrollments,
    sessionKeys: state.sessionKeys,
    enrollAuth: state.enrollAuth,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
