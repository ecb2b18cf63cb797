/**
 * Quote verification rate in-process: verifyQuote (AK KeyObject cached, as the hosts service
 * keeps it) next to a bare crypto.verify of the same signature with the same key, for the RSA and
 * ECC AK vectors of test/vectors/tpm2. The gap is the cost of parsing and the other checks.
 * The same quote is verified again and again, as a host re-attesting with unchanged PCRs: the
 * PCR digest is then found in verifyQuote's digest memo (a byte comparison instead of a hash).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { verify as cryptoVerify } from 'node:crypto';
import { checkAkPublic } from '../src/attestation/ak.js';
import { verifyQuote, type VerifyQuoteInput } from '../src/attestation/quote.js';
import { parseTpmtSignature, toNodeVerify } from '../src/attestation/tpm2/signature.js';

/** Operations per second for one AK type. */
export interface VerifyRate {
  /** verifyQuote calls per second (all checks, cached KeyObject). */
  verify: number;
  /** crypto.verify calls per second on the same quote, signature and key. */
  raw: number;
  /** verify / raw: the median over adjacent slice pairs. */
  ratio: number;
}

function findVectors(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const c = join(d, 'test/vectors/tpm2');
    if (existsSync(join(c, 'ak-rsa.pub'))) return c;
    d = resolve(d, '..');
  }
  return resolve(process.cwd(), 'test/vectors/tpm2');
}

function run(fn: () => boolean, ns: bigint): { n: number; ns: bigint } {
  let n = 0;
  const start = process.hrtime.bigint();
  let now = start;
  while (now - start < ns) {
    for (let i = 0; i < 16; i++) if (!fn()) throw new Error('benchmark input does not verify');
    n += 16;
    now = process.hrtime.bigint();
  }
  return { n, ns: now - start };
}

// The two figures are measured in alternating 50 ms slices so load changes on a shared machine
// hit both alike. Each figure is the median of its slice rates, and the ratio the median of the
// ratios of adjacent slice pairs: a burst of load from another process spoils a few slices, not
// the result.
function rates(a: () => boolean, b: () => boolean, durationMs: number): { a: number; b: number; ratio: number } {
  for (let i = 0; i < 200; i++) if (!a() || !b()) throw new Error('benchmark input does not verify');
  const slice = 50_000_000n;
  const ra: number[] = [];
  const rb: number[] = [];
  const pairs: number[] = [];
  for (let s = 0; s < Math.max(1, Math.round(durationMs / 50)); s++) {
    const x = run(a, slice);
    const y = run(b, slice);
    const rx = (x.n * 1e9) / Number(x.ns);
    const ry = (y.n * 1e9) / Number(y.ns);
    ra.push(rx);
    rb.push(ry);
    pairs.push(rx / ry);
  }
  const median = (v: number[]): number => {
    const sorted = [...v].sort((p, q) => p - q);
    const m = sorted.length >> 1;
    return sorted.length % 2 ? sorted[m]! : (sorted[m - 1]! + sorted[m]!) / 2;
  };
  return { a: Math.round(median(ra)), b: Math.round(median(rb)), ratio: Math.round(median(pairs) * 100) / 100 };
}

function measure(dir: string, ak: string, q: string, durationMs: number): VerifyRate {
  const read = (n: string) => readFileSync(join(dir, n));
  const akPublic = checkAkPublic(read(`${ak}.pub`));
  const quote = read(`${q}.quote`);
  const signature = read(`${q}.sig`);
  const [bank, list] = read(`${q}.pcrlist`).toString().trim().split(':') as [string, string];
  const indices = list.split(',').map(Number);
  const values = read(`${q}.pcrs`);
  const size = values.length / indices.length;
  const pcrs = { [bank]: Object.fromEntries(indices.map((i, n) => [String(i), values.subarray(n * size, (n + 1) * size)])) };
  const input: VerifyQuoteInput = {
    akPublic,
    quote,
    signature,
    pcrs,
    expectedExtraData: Buffer.from(read(`${q}.nonce.hex`).toString().trim(), 'hex'),
    requiredSelection: { bank, indices },
  };
  const args = toNodeVerify(parseTpmtSignature(signature), akPublic.key)!;
  const r = rates(() => verifyQuote(input).ok, () => cryptoVerify(args.algorithm, quote, args.key, args.signature), durationMs);
  return { verify: r.a, raw: r.b, ratio: r.ratio };
}

/**
 * Measures verifyQuote/s and raw crypto.verify/s for the RSA-2048 and ECC P-256 AK vectors,
 * about `durationMs` (default 1000) per figure.
 */
export async function quoteVerifyRate(opts: { durationMs?: number; vectorsDir?: string } = {}): Promise<{ rsa: VerifyRate; ecc: VerifyRate }> {
  const dir = opts.vectorsDir ?? findVectors();
  const d = opts.durationMs ?? 1000;
  return { rsa: measure(dir, 'ak-rsa', 'quote-rsa-sha256', d), ecc: measure(dir, 'ak-ecc', 'quote-ecc-sha256', d) };
}
