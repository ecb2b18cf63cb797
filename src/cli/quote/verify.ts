/**
 * `custos quote verify`: verifies a TPM 2.0 quote offline from files, with the same checks the
 * server runs (src/attestation/quote.ts). No server is contacted.
 */
import { Command } from 'commander';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { checkAkPublic } from '../../attestation/ak.js';
import { verifyQuote, type QuoteCheck, type VerifyQuoteInput } from '../../attestation/quote.js';
import { parseTpmsAttest } from '../../attestation/tpm2/attest.js';
import { tpmHashByNodeName } from '../../attestation/tpm2/algorithms.js';
import { parseTpm2bPublic, type TpmtPublic } from '../../attestation/tpm2/public.js';
import { CustosError, isCustosError } from '../../lib/errors.js';

/** Options of `custos quote verify` (file paths as given on the command line). */
export interface QuoteVerifyOptions {
  readonly akPublic: string;
  readonly quote: string;
  readonly signature: string;
  readonly pcrs: string;
  /** `bank:i,j,k`, e.g. `sha256:0,1,2` (required with a binary PCR file). */
  readonly pcrList?: string;
  /** Expected extraData, hex. Without it the nonce is not checked (reported as skipped). */
  readonly nonce?: string;
  /** YAML/JSON reference values: `{sha256: {"0": hex | [hex, …]}}`. */
  readonly policy?: string;
  readonly allowSha1?: boolean;
}

/** One line of the report. */
export interface CliCheck {
  readonly name: string;
  /** `pass`, `fail`, or `skip` for checks that did not apply. */
  readonly status: 'pass' | 'fail' | 'skip';
  readonly code?: string;
  readonly detail?: string;
}

/** Result of {@link runQuoteVerify}. */
export interface QuoteVerifyReport {
  readonly ok: boolean;
  readonly checks: CliCheck[];
  readonly quote?: { selection: Array<{ bank: string; indices: readonly number[] }>; clock: string; resetCount: number; restartCount: number; firmwareVersion: string; signature: string };
}

function usage(message: string): CustosError {
  return new CustosError('ERR_BAD_REQUEST', message);
}

function parsePcrList(s: string): { bank: string; indices: number[] } {
  const m = /^([a-z0-9]+):([0-9]+(?:,[0-9]+)*)$/i.exec(s.trim());
  if (!m) throw usage(`--pcr-list must look like sha256:0,1,2 (got "${s}")`);
  const bank = m[1]!.toLowerCase();
  if (tpmHashByNodeName(bank) === undefined) throw usage(`unknown PCR bank ${bank}`);
  const indices = m[2]!.split(',').map(Number);
  if (indices.some((i) => i > 255)) throw usage('PCR index out of range');
  return { bank, indices };
}

const HEX = /^(?:[0-9a-fA-F]{2})*$/;

function hex(v: unknown, where: string): Buffer {
  if (typeof v !== 'string' || !HEX.test(v.replace(/^0x/, ''))) throw usage(`${where} must be a hex string`);
  return Buffer.from(v.replace(/^0x/, ''), 'hex');
}

async function loadAk(path: string): Promise<{ ak: VerifyQuoteInput['akPublic']; check: CliCheck }> {
  const bytes = await readFile(path);
  if (bytes.toString('latin1').includes('-----BEGIN')) {
    let key: KeyObject;
    try {
      key = createPublicKey(bytes);
    } catch {
      throw usage('--ak-public PEM is not a public key');
    }
    return { ak: key, check: { name: 'akAttributes', status: 'skip', detail: 'PEM key: TPM attributes unknown' } };
  }
  try {
    const ak = checkAkPublic(bytes);
    return { ak, check: { name: 'akAttributes', status: 'pass' } };
  } catch (e) {
    if (isCustosError(e, 'ERR_AK_ATTRIBUTES') || isCustosError(e, 'ERR_AK_ALGORITHM')) {
      const pub: TpmtPublic = parseTpm2bPublic(bytes);
      return { ak: pub, check: { name: 'akAttributes', status: 'fail', code: e.code, detail: e.message } };
    }
    throw e;
  }
}

async function loadPcrs(path: string, list: { bank: string; indices: number[] } | undefined): Promise<{ pcrs: Record<string, Record<string, Buffer>>; selection: { bank: string; indices: number[] } }> {
  const bytes = await readFile(path);
  const text = bytes.toString('utf8').trim();
  if (text.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw usage('--pcrs is not valid JSON');
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw usage('--pcrs JSON must be an object of banks');
    const pcrs: Record<string, Record<string, Buffer>> = {};
    for (const [bank, values] of Object.entries(json as Record<string, unknown>)) {
      if (tpmHashByNodeName(bank) === undefined) throw usage(`unknown PCR bank ${bank}`);
      if (typeof values !== 'object' || values === null) throw usage(`--pcrs ${bank} must be an object`);
      pcrs[bank.toLowerCase()] = Object.fromEntries(Object.entries(values as Record<string, unknown>).map(([i, v]) => [String(Number(i)), hex(v, `PCR ${bank}:${i}`)]));
    }
    const banks = Object.keys(pcrs);
    const selection = list ?? (banks.length === 1 ? { bank: banks[0]!, indices: Object.keys(pcrs[banks[0]!]!).map(Number).sort((a, b) => a - b) } : undefined);
    if (selection === undefined) throw usage('--pcr-list is needed when the PCR file has several banks');
    return { pcrs, selection };
  }
  // `tpm2_quote -o FILE -F values`: the values concatenated in selection order.
  if (list === undefined) throw usage('--pcr-list is needed with a binary PCR values file');
  const size = tpmHashByNodeName(list.bank)!.digestSize;
  const ordered = [...new Set(list.indices)].sort((a, b) => a - b);
  if (bytes.length !== size * ordered.length) throw usage(`the PCR values file has ${bytes.length} bytes, expected ${size * ordered.length} for ${list.bank}:${ordered.join(',')}`);
  const values: Record<string, Buffer> = {};
  ordered.forEach((i, n) => (values[String(i)] = bytes.subarray(n * size, (n + 1) * size)));
  return { pcrs: { [list.bank]: values }, selection: list };
}

async function loadPolicy(path: string, bank: string): Promise<Record<string, Buffer[]>> {
  let doc: unknown;
  try {
    doc = parseYaml(await readFile(path, 'utf8'));
  } catch {
    throw usage('--policy is not valid YAML/JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw usage('--policy must map banks to PCR reference values');
  const out: Record<string, Buffer[]> = {};
  for (const [b, values] of Object.entries(doc as Record<string, unknown>)) {
    if (b.toLowerCase() !== bank) throw usage(`--policy names bank ${b}, the quote is checked on ${bank}`);
    if (typeof values !== 'object' || values === null) throw usage(`--policy ${b} must be an object`);
    for (const [i, v] of Object.entries(values as Record<string, unknown>)) {
      const list = Array.isArray(v) ? v : [v];
      out[String(Number(i))] = list.map((x) => hex(x, `policy ${b}:${i}`));
    }
  }
  return out;
}

/**
 * Runs the checks of `custos quote verify` and returns them (the command prints them).
 * @throws CustosError ERR_BAD_REQUEST for unusable input files or options; ERR_TPM_MARSHAL /
 * ERR_TPM_UNSUPPORTED_ALG when the quote, signature or AK do not parse.
 */
export async function runQuoteVerify(o: QuoteVerifyOptions): Promise<QuoteVerifyReport> {
  const list = o.pcrList !== undefined ? parsePcrList(o.pcrList) : undefined;
  const { ak, check: akCheck } = await loadAk(o.akPublic);
  const quote = await readFile(o.quote);
  const signature = await readFile(o.signature);
  const { pcrs, selection } = await loadPcrs(o.pcrs, list);
  const referenceValues = o.policy !== undefined ? await loadPolicy(o.policy, selection.bank) : undefined;
  const nonce = o.nonce !== undefined ? hex(o.nonce, '--nonce') : undefined;
  const v = verifyQuote({
    akPublic: ak,
    quote,
    signature,
    pcrs,
    expectedExtraData: nonce ?? parseTpmsAttest(quote).extraData,
    requiredSelection: selection,
    allowSha1: o.allowSha1 === true,
    ...(referenceValues !== undefined ? { referenceValues } : {}),
  });
  const toCli = (c: QuoteCheck): CliCheck => {
    if (c.name === 'nonce' && nonce === undefined) return { name: c.name, status: 'skip', detail: 'no --nonce given: freshness not checked' };
    if (!c.applied) return { name: c.name, status: 'skip', ...(c.detail !== undefined ? { detail: c.detail } : {}) };
    return c.ok ? { name: c.name, status: 'pass' } : { name: c.name, status: 'fail', code: c.code, ...(c.detail !== undefined ? { detail: c.detail } : {}) };
  };
  const checks = [akCheck, ...v.checks.map(toCli)];
  return {
    ok: checks.every((c) => c.status !== 'fail'),
    checks,
    quote: {
      selection: v.parsed.selection.map((s) => ({ bank: s.bank, indices: s.indices })),
      clock: v.parsed.clockInfo.clock.toString(),
      resetCount: v.parsed.clockInfo.resetCount,
      restartCount: v.parsed.clockInfo.restartCount,
      firmwareVersion: `0x${v.parsed.firmwareVersion.toString(16)}`,
      signature: `${v.parsed.signatureAlg}/${v.parsed.signatureHash}`,
    },
  };
}

/** Renders the report as text, one check per line. */
export function renderQuoteVerifyReport(r: QuoteVerifyReport): string {
  const lines = r.checks.map((c) => `${c.status.toUpperCase().padEnd(4)}  ${c.name.padEnd(13)}${c.code ? ` ${c.code}` : ''}${c.detail ? `  ${c.detail}` : ''}`);
  if (r.quote) lines.push(`quote: ${r.quote.selection.map((s) => `${s.bank}:${s.indices.join(',')}`).join('+')}  ${r.quote.signature}  clock=${r.quote.clock} reset=${r.quote.resetCount} restart=${r.quote.restartCount} fw=${r.quote.firmwareVersion}`);
  lines.push(r.ok ? 'OK: the quote verifies' : 'FAILED: the quote does not verify');
  return lines.join('\n');
}

/** The `verify` subcommand: `custos quote verify --ak-public … --quote … --signature … --pcrs …`. */
export function quoteVerifyCommand(): Command {
  return new Command('verify')
    .description('verify a TPM 2.0 quote offline (tpm2_quote -m/-s output)')
    .requiredOption('--ak-public <file>', 'AK public: TPM2B_PUBLIC (tpm2_createak -u) or PEM')
    .requiredOption('--quote <file>', 'TPMS_ATTEST (tpm2_quote -m)')
    .requiredOption('--signature <file>', 'TPMT_SIGNATURE (tpm2_quote -s)')
    .requiredOption('--pcrs <file>', 'PCR values: JSON {"sha256":{"0":"hex",…}} or tpm2_quote -o FILE -F values')
    .option('--pcr-list <list>', 'required selection, e.g. sha256:0,1,2 (needed with a binary PCR file)')
    .option('--nonce <hex>', 'expected qualifying data (extraData), hex')
    .option('--policy <file>', 'YAML/JSON reference values: {sha256: {"0": hex | [hex, …]}}')
    .option('--allow-sha1', 'accept SHA-1 PCR banks and signatures')
    .option('--json', 'machine-readable output')
    .action(async (o: QuoteVerifyOptions & { json?: boolean }, cmd: Command) => {
      const json = o.json === true || cmd.optsWithGlobals<{ json?: boolean }>().json === true;
      const report = await runQuoteVerify(o);
      process.stdout.write(`${json ? JSON.stringify(report, null, 2) : renderQuoteVerifyReport(report)}\n`);
      if (!report.ok) process.exitCode = 1;
    });
}

/** The `quote` command group holding `verify`. */
export function quoteCommand(): Command {
  return new Command('quote').description('TPM 2.0 quotes').addCommand(quoteVerifyCommand());
}
