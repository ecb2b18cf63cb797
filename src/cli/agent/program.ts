/**
 * `custos-agent`: the host/enclave side of enrollment, attestation and sessions (API.md, hosts
 * and sessions). It drives the TPM through tpm2-tools and talks JSON to custos.
 *
 * Exit codes: 0 ok (attest: affirming), 1 refused or not affirming, 2 usage, 3 server or TPM
 * unavailable. Errors are printed as `code: message`. Secrets (provisioning tokens, API tokens,
 * the activation secret, the session key) are read from or written to files only; none is
 * printed.
 */
import { createECDH, type JsonWebKey as NodeJwk } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { calculateJwkThumbprint, decodeJwt } from 'jose';
import { CustosError } from '../../lib/errors.js';
import { sessionExtraData } from '../../sessions/ephemeral-key.js';
import { openSessionKey } from '../../sessions/hpke.js';
import { apiClient, CliError, EXIT, type ApiClient } from '../client.js';
import { parsePcrList } from './pcr.js';
import { defaultStatePath, loadState, saveState, writePrivateFile, type AgentState } from './state.js';
import { DEFAULT_AK_HANDLE, handleHex, parsePersistentHandle, resolveTcti, TpmDriver, type AkAlg, type EkAlg, type QuoteOutput } from './tpm.js';

/** Where the agent writes its output; the process streams by default. */
export interface AgentIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly env: NodeJS.ProcessEnv;
}

/** PCRs quoted when `--pcrs` is not given. */
export const DEFAULT_PCRS = 'sha256:0,1,2,3,4,5,6,7';

interface GlobalOptions {
  url?: string;
  tcti?: string;
  ownerAuthFile?: string;
  endorsementAuthFile?: string;
  state?: string;
  caFile?: string;
  json?: boolean;
}

/** Timings of the steps of one command, in ms (printed with --json). */
type Timings = Record<string, number>;

async function timed<T>(timings: Timings, step: string, body: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await body();
  } finally {
    timings[step] = Math.round((performance.now() - t0) * 10) / 10;
  }
}

function usage(message: string): never {
  throw new CliError(message, EXIT.usage);
}

async function readSecretFile(path: string, what: string): Promise<string> {
  let text: string;
  try {
    text = (await readFile(path, 'utf8')).trim();
  } catch (e) {
    usage(`cannot read the ${what} file ${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (text === '') usage(`the ${what} file ${path} is empty`);
  return text;
}

function parseLabel(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const m = /^([a-z0-9][a-z0-9._/-]{0,62})=(.{0,256})$/.exec(value);
  if (m === null) throw new CliError(`--label must be key=value, got "${value}"`, EXIT.usage);
  return { ...previous, [m[1]!]: m[2]! };
}

function b64(buf: Buffer): string {
  return buf.toString('base64');
}

function fromB64(value: unknown, field: string): Buffer {
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) {
    throw new CliError(`ERR_BAD_RESPONSE: the server sent a bad ${field}`, EXIT.unavailable, 'ERR_BAD_RESPONSE');
  }
  return Buffer.from(value, 'base64');
}

function str(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new CliError(`ERR_BAD_RESPONSE: the server sent no ${field}`, EXIT.unavailable, 'ERR_BAD_RESPONSE');
  return value;
}

/** The attestation evidence fields of API.md from a quote. */
function evidence(q: QuoteOutput): { quote: string; signature: string; pcrs: QuoteOutput['pcrs'] } {
  return { quote: b64(q.quote), signature: b64(q.signature), pcrs: q.pcrs };
}

class Agent {
  constructor(
    private readonly io: AgentIo,
    private readonly globals: () => GlobalOptions,
  ) {}

  get json(): boolean {
    return this.globals().json === true;
  }

  statePath(): string {
    const g = this.globals();
    return resolve(g.state ?? this.io.env.CUSTOS_AGENT_STATE ?? defaultStatePath(this.io.env));
  }

  async state(): Promise<AgentState> {
    const path = this.statePath();
    const s = await loadState(path);
    if (s === undefined) usage(`this host is not enrolled (no state file ${path}): run custos-agent enroll`);
    return s;
  }

  client(state: AgentState | undefined, tokenFile?: string): ApiClient {
    const g = this.globals();
    const url = g.url ?? this.io.env.CUSTOS_URL ?? state?.url;
    if (url === undefined || url === '') usage('no server URL: pass --url or set CUSTOS_URL');
    if (!/^https?:\/\/[^\s]+$/.test(url)) usage(`--url must be an http(s) URL, got "${url}"`);
    const caFile = g.caFile ?? this.io.env.CUSTOS_CA_FILE;
    return apiClient({ url, ...(caFile ? { caFile } : {}), ...(tokenFile ? { tokenFile } : {}) }, tokenFile !== undefined);
  }

  async tpm(): Promise<TpmDriver> {
    const g = this.globals();
    return TpmDriver.open({
      tcti: resolveTcti(g.tcti, this.io.env),
      ...(g.ownerAuthFile ? { ownerAuthFile: g.ownerAuthFile } : {}),
      ...(g.endorsementAuthFile ? { endorsementAuthFile: g.endorsementAuthFile } : {}),
    });
  }

  print(value: unknown, readable: () => string): void {
    this.io.stdout(this.json ? JSON.stringify(value, null, 2) + '\n' : readable() + '\n');
  }

  async enroll(opts: {
    provisioningTokenFile?: string;
    tokenFile?: string;
    ek?: EkAlg;
    ak: AkAlg;
    akHandle: string;
    label?: Record<string, string>;
  }): Promise<number> {
    const akHandle = this.handle(opts.akHandle);
    const provisioningToken = opts.provisioningTokenFile ? await readSecretFile(opts.provisioningTokenFile, 'provisioning token') : undefined;
    const previous = await loadState(this.statePath());
    const api = this.client(previous, opts.tokenFile);
    const timings: Timings = {};
    const tpm = await this.tpm();
    try {
      const certs = await timed(timings, 'readEkCertificates', () => tpm.readEkCertificates());
      const ekAlg: EkAlg = opts.ek ?? (certs.rsa ? 'rsa' : certs.ecc384 ? 'ecc384' : 'rsa');
      const ekCert = certs[ekAlg];
      const ek = await timed(timings, 'createEk', () => tpm.createEk(ekAlg));
      const ak = await timed(timings, 'createAk', () => tpm.createAk(ek, opts.ak));
      const body: Record<string, unknown> = { ekPublic: b64(ek.public), akPublic: b64(ak.public) };
      if (ekCert) body.ekCertificate = b64(ekCert);
      if (provisioningToken !== undefined) body.provisioningToken = provisioningToken;
      if (opts.label && Object.keys(opts.label).length > 0) body.labels = opts.label;
      const enrolled = await timed(timings, 'postEnroll', () => api.call<Record<string, unknown>>('POST', '/v1/hosts/enroll', body));
      const enrollmentId = str(enrolled.enrollmentId, 'enrollmentId');
      const secret = await timed(timings, 'activateCredential', () =>
        tpm.activateCredential(ek, ak, fromB64(enrolled.credentialBlob, 'credentialBlob'), fromB64(enrolled.encryptedSecret, 'encryptedSecret')),
      );
      const activated = await timed(timings, 'postActivate', () =>
        api.call<Record<string, unknown>>('POST', `/v1/hosts/enroll/${encodeURIComponent(enrollmentId)}/activate`, { secret: b64(secret) }),
      );
      secret.fill(0);
      const hostId = str(activated.hostId, 'hostId');
      // Persist only once custos has registered the host: a refused enrollment leaves an earlier
      // enrollment's AK in place.
      await timed(timings, 'persistAk', () => tpm.persistAk(ak, akHandle));
      const state: AgentState = {
        version: 1,
        hostId,
        akHandle: handleHex(akHandle),
        akName: ak.name.toString('hex'),
        akAlg: opts.ak,
        ekAlg,
        url: api.url,
        enrolledAt: new Date().toISOString(),
        ...(opts.label && Object.keys(opts.label).length > 0 ? { labels: opts.label } : {}),
      };
      await saveState(this.statePath(), state);
      this.print(
        { hostId, akName: state.akName, akHandle: state.akHandle, ekAlg, akAlg: opts.ak, ekCertificate: ekCert !== undefined, stateFile: this.statePath(), timings },
        () =>
          [
            `enrolled host ${hostId}`,
            `  AK name:   ${state.akName}`,
            `  AK handle: ${state.akHandle} (${opts.ak}, under the ${ekAlg} EK${ekCert ? ' with its certificate' : ', no EK certificate'})`,
            `  state:     ${this.statePath()}`,
          ].join('\n'),
      );
      return EXIT.ok;
    } finally {
      await tpm.close();
    }
  }

  private handle(text: string): number {
    try {
      return parsePersistentHandle(text);
    } catch (e) {
      usage(`--ak-handle: ${(e as Error).message}`);
    }
  }

  private pcrs(text: string): string {
    try {
      parsePcrList(text);
    } catch (e) {
      usage(`--pcrs: ${(e as Error).message}`);
    }
    return text;
  }

  private async challenge(api: ApiClient, hostId: string): Promise<{ nonce: Buffer; nonceText: string }> {
    const res = await api.call<Record<string, unknown>>('POST', '/v1/challenges', { hostId });
    const nonceText = str(res.nonce, 'nonce');
    const nonce = fromB64(nonceText, 'nonce');
    if (nonce.length === 0 || nonce.length > 64) throw new CliError('ERR_BAD_RESPONSE: the server sent a nonce of a bad size', EXIT.unavailable, 'ERR_BAD_RESPONSE');
    return { nonce, nonceText };
  }

  async attest(opts: { pcrs: string }): Promise<number> {
    const pcrList = this.pcrs(opts.pcrs);
    const state = await this.state();
    const api = this.client(state);
    const timings: Timings = {};
    const tpm = await this.tpm();
    let verdict: Record<string, unknown>;
    try {
      const { nonce, nonceText } = await timed(timings, 'challenge', () => this.challenge(api, state.hostId));
      const q = await timed(timings, 'quote', () => tpm.quote(parsePersistentHandle(state.akHandle), pcrList, nonce));
      verdict = await timed(timings, 'postAttest', () =>
        api.call<Record<string, unknown>>('POST', `/v1/hosts/${encodeURIComponent(state.hostId)}/attest`, { nonce: nonceText, ...evidence(q) }),
      );
    } finally {
      await tpm.close();
    }
    const status = typeof verdict.status === 'string' ? verdict.status : 'unknown';
    const failures = Array.isArray(verdict.failures) ? (verdict.failures as Array<{ code?: unknown; detail?: unknown }>) : [];
    this.print({ hostId: state.hostId, status, failures, result: verdict.result, timings }, () =>
      [`host ${state.hostId}: ${status}`, ...failures.map((f) => `  ${String(f.code)}: ${String(f.detail ?? '')}`)].join('\n'),
    );
    return status === 'affirming' ? EXIT.ok : EXIT.refused;
  }

  async session(opts: { audience: string; pcrs: string; keyOut?: string; tokenOut?: string; ephemeralKeyOut?: string }): Promise<number> {
    if (opts.audience.trim() === '') usage('--audience must not be empty');
    const pcrList = this.pcrs(opts.pcrs);
    const state = await this.state();
    const api = this.client(state);
    const stateDir = dirname(this.statePath());
    const keyOut = resolve(opts.keyOut ?? join(stateDir, 'session.key'));
    const tokenOut = resolve(opts.tokenOut ?? join(stateDir, 'session.jwt'));
    const ephemeralOut = opts.ephemeralKeyOut === undefined ? undefined : resolve(opts.ephemeralKeyOut);
    const outputs = [keyOut, tokenOut, ...(ephemeralOut === undefined ? [] : [ephemeralOut])];
    if (new Set(outputs).size !== outputs.length) usage('--key-out, --token-out and --ephemeral-key-out must differ');
    const timings: Timings = {};

    // The ephemeral key lives only in this process unless --ephemeral-key-out keeps it: the
    // session key is sealed to it and the token is bound to its thumbprint (cnf.jkt), so only
    // with it can the workload prove to a relying party that it holds the token's key.
    // Generated with ECDH and written as a JWK by hand, not exported from a generated KeyObject:
    // Node 20 can deadlock when a GC finalises the key-generation job during that export.
    const ecdh = createECDH('prime256v1');
    const point = ecdh.generateKeys();
    const scalar = ecdh.getPrivateKey();
    const priv: NodeJwk = {
      kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33, 65).toString('base64url'),
      d: Buffer.concat([Buffer.alloc(32 - scalar.length), scalar]).toString('base64url'),
    };
    scalar.fill(0);
    const publicJwk = { kty: 'EC', crv: 'P-256', x: String(priv.x), y: String(priv.y) };
    const jkt = await calculateJwkThumbprint(publicJwk, 'sha256');
    const thumbprint = Buffer.from(jkt, 'base64url');

    const tpm = await this.tpm();
    let res: Record<string, unknown>;
    try {
      const { nonce, nonceText } = await timed(timings, 'challenge', () => this.challenge(api, state.hostId));
      const extraData = sessionExtraData(nonce, thumbprint);
      const q = await timed(timings, 'quote', () => tpm.quote(parsePersistentHandle(state.akHandle), pcrList, extraData));
      res = await timed(timings, 'postSession', () =>
        api.call<Record<string, unknown>>('POST', '/v1/sessions', {
          hostId: state.hostId,
          nonce: nonceText,
          ...evidence(q),
          ephemeralPublicKey: publicJwk,
          audience: opts.audience,
        }),
      );
    } finally {
      await tpm.close();
    }
    const token = str(res.token, 'token');
    const sealed = res.sessionKey as { enc?: unknown; ciphertext?: unknown } | undefined;
    let claims: Record<string, unknown>;
    try {
      claims = decodeJwt(token) as Record<string, unknown>;
    } catch {
      throw new CliError('ERR_BAD_RESPONSE: the session token is not a JWT', EXIT.unavailable, 'ERR_BAD_RESPONSE');
    }
    // The token must be the one asked for before anything is kept: this host, this audience,
    // this ephemeral key.
    const cnf = claims.cnf as { jkt?: unknown } | undefined;
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (cnf?.jkt !== jkt || claims.sub !== state.hostId || !aud.includes(opts.audience) || typeof claims.jti !== 'string') {
      throw new CliError('ERR_TOKEN_INVALID: the session token is not bound to this host, audience and ephemeral key', EXIT.refused, 'ERR_TOKEN_INVALID');
    }
    const sessionKey = await timed(timings, 'openSessionKey', () => openSessionKey(priv as Record<string, unknown>, str(sealed?.enc, 'sessionKey.enc'), str(sealed?.ciphertext, 'sessionKey.ciphertext'), claims.jti as string));
    try {
      await writePrivateFile(keyOut, sessionKey);
    } finally {
      sessionKey.fill(0);
    }
    await writePrivateFile(tokenOut, token + '\n');
    if (ephemeralOut !== undefined) await writePrivateFile(ephemeralOut, JSON.stringify(priv) + '\n');
    const ear = claims['ear.status'];
    const summary = {
      iss: claims.iss,
      sub: claims.sub,
      aud: claims.aud,
      iat: claims.iat,
      exp: claims.exp,
      jti: claims.jti,
      kid: res.kid,
      'ear.status': ear,
      'cnf.jkt': jkt,
    };
    this.print({ claims: summary, expiresAt: res.expiresAt, token, tokenFile: tokenOut, keyFile: keyOut, ...(ephemeralOut ? { ephemeralKeyFile: ephemeralOut } : {}), timings }, () =>
      [
        `session ${String(claims.jti)} for ${String(claims.sub)} (audience ${opts.audience})`,
        `  issuer:     ${String(claims.iss)}  kid ${String(res.kid)}`,
        `  status:     ${String(ear)}`,
        `  expires:    ${typeof claims.exp === 'number' ? new Date(claims.exp * 1000).toISOString() : String(res.expiresAt)}`,
        `  bound key:  ${jkt}`,
        `  token:      ${tokenOut}`,
        `  session key (32 bytes, raw): ${keyOut}`,
        ...(ephemeralOut ? [`  ephemeral private key (JWK, for proof of possession): ${ephemeralOut}`] : []),
      ].join('\n'),
    );
    return EXIT.ok;
  }

  async pcrExtend(opts: { index: string; data: string; bank: string }): Promise<number> {
    if (!/^\d{1,2}$/.test(opts.index) || Number(opts.index) > 23) usage('--index must be a PCR number from 0 to 23');
    const banks = opts.bank.split(',').map((b) => b.trim());
    for (const b of banks) if (!['sha1', 'sha256', 'sha384', 'sha512'].includes(b)) usage(`--bank: unknown PCR bank "${b}"`);
    const tpm = await this.tpm();
    try {
      const digests = await tpm.pcrExtend(Number(opts.index), Buffer.from(opts.data, 'utf8'), banks);
      const after = await tpm.pcrRead(banks.map((b) => `${b}:${opts.index}`).join('+'));
      this.print({ index: Number(opts.index), extendedWith: digests, values: after }, () =>
        Object.entries(after)
          .map(([bank, v]) => `PCR ${bank}:${opts.index} = ${v[opts.index]}`)
          .join('\n'),
      );
    } finally {
      await tpm.close();
    }
    return EXIT.ok;
  }
}

function exitCodeOf(e: unknown, io: AgentIo): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
  if (e instanceof CliError) {
    io.stderr(`custos-agent: ${e.message}\n`);
    return e.exitCode;
  }
  if (e instanceof CustosError) {
    io.stderr(`custos-agent: ${e.code}: ${e.message}\n`);
    if (e.code === 'ERR_BAD_REQUEST') return EXIT.usage;
    if (e.code === 'ERR_TPM_COMMAND') return EXIT.refused;
    return e.status >= 500 ? EXIT.unavailable : EXIT.refused;
  }
  const err = e as NodeJS.ErrnoException;
  io.stderr(`custos-agent: ${err.code ?? 'ERR_INTERNAL'}: ${err.message}\n`);
  return err.code === 'EACCES' || err.code === 'ENOENT' ? EXIT.usage : EXIT.refused;
}

/** Builds the command tree; `run` receives each command's exit code. */
function buildProgram(io: AgentIo, done: (code: number) => void): Command {
  const program = new Command('custos-agent')
    .description('custos host agent: enroll this TPM, attest, and obtain attested sessions')
    .option('--url <url>', 'custos server URL (else CUSTOS_URL, else the URL recorded at enrollment)')
    .option('--tcti <tcti>', `TCTI for tpm2-tools (else TPM2TOOLS_TCTI, else ${resolveTcti(undefined, {})})`)
    .option('--owner-auth-file <file>', 'file holding the TPM owner hierarchy password (when one is set)')
    .option('--endorsement-auth-file <file>', 'file holding the TPM endorsement hierarchy password (when one is set)')
    .option('--state <file>', 'state file (else CUSTOS_AGENT_STATE, else ~/.config/custos-agent/state.json)')
    .option('--ca-file <file>', 'CA certificate to trust for an HTTPS server (else CUSTOS_CA_FILE)')
    .option('--json', 'machine-readable output')
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr });
  const agent = new Agent(io, () => program.opts<GlobalOptions>());

  program
    .command('enroll')
    .description('create EK and AK, enroll with custos, activate the credential and persist the AK')
    .option('--provisioning-token-file <file>', 'file holding a provisioning token')
    .option('--token-file <file>', 'file holding an API token with the provisioner role (sent as Bearer)')
    .addOption(new Option('--ek <alg>', 'EK type (default: the one with a certificate, RSA first)').choices(['rsa', 'ecc384']))
    .addOption(new Option('--ak <alg>', 'AK type').choices(['rsa', 'ecc']).default('rsa'))
    .option('--ak-handle <handle>', 'persistent handle for the AK', handleHex(DEFAULT_AK_HANDLE))
    .option('--label <key=value>', 'host label (repeatable)', parseLabel)
    .exitOverride()
    .action(async (o) => done(await agent.enroll(o)));

  program
    .command('attest')
    .description('quote the PCRs over a fresh nonce and print the verdict of custos (exit 0 only when affirming)')
    .option('--pcrs <list>', 'PCR selection', DEFAULT_PCRS)
    .exitOverride()
    .action(async (o) => done(await agent.attest(o)));

  program
    .command('session')
    .description('obtain an attested session token and its HPKE-sealed session key')
    .requiredOption('--audience <aud>', 'audience the token is for')
    .option('--pcrs <list>', 'PCR selection', DEFAULT_PCRS)
    .option('--key-out <file>', 'where to write the 32-byte session key (mode 0600; default next to the state file)')
    .option('--token-out <file>', 'where to write the token (mode 0600; default next to the state file)')
    .option('--ephemeral-key-out <file>', "keep the ephemeral private key the token is bound to (JWK, mode 0600), to prove possession to relying parties; by default it dies with this process")
    .exitOverride()
    .action(async (o) => done(await agent.session(o)));

  const pcr = program.command('pcr').description('PCR tools for demos and tests').exitOverride();
  pcr
    .command('extend')
    .description('extend a PCR with the hash of TEXT')
    .requiredOption('--index <n>', 'PCR index (0-23)')
    .requiredOption('--data <text>', 'text whose digest is extended into the PCR')
    .option('--bank <banks>', 'comma-separated banks', 'sha256')
    .exitOverride()
    .action(async (o) => done(await agent.pcrExtend(o)));
  return program;
}

/**
 * Runs the agent with `argv` (as process.argv: node, script, args…) and returns the exit code.
 * Never throws: every error is printed as `code: message`.
 */
export async function runAgent(argv: readonly string[], io: AgentIo = { stdout: (t) => process.stdout.write(t), stderr: (t) => process.stderr.write(t), env: process.env }): Promise<number> {
  let code: number = EXIT.ok;
  const program = buildProgram(io, (c) => (code = c));
  try {
    await program.parseAsync([...argv]);
    return code;
  } catch (e) {
    return exitCodeOf(e, io);
  }
}
