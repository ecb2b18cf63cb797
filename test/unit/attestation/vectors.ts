/** Loads the swtpm-made vectors in test/vectors/tpm2 (see its README). */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const VECTORS = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../vectors/tpm2');

/** Reads a vector file. */
export function vec(name: string): Buffer {
  return readFileSync(join(VECTORS, name));
}

/** A quote vector: bytes plus the PCR values keyed as verifyQuote takes them. */
export interface QuoteVector {
  readonly quote: Buffer;
  readonly signature: Buffer;
  readonly nonce: Buffer;
  readonly bank: string;
  readonly indices: number[];
  readonly pcrs: Record<string, Record<string, Buffer>>;
  readonly pcrValuesFile: Buffer;
}

/** Loads `<name>.quote/.sig/.pcrs/.nonce.hex/.pcrlist`. */
export function quoteVector(name: string): QuoteVector {
  const list = vec(`${name}.pcrlist`).toString().trim();
  const [bank, idx] = list.split(':') as [string, string];
  const indices = idx.split(',').map(Number);
  const size = bank === 'sha1' ? 20 : 32;
  const values = vec(`${name}.pcrs`);
  const pcrs: Record<string, Buffer> = {};
  indices.forEach((i, n) => (pcrs[String(i)] = values.subarray(n * size, (n + 1) * size)));
  return {
    quote: vec(`${name}.quote`),
    signature: vec(`${name}.sig`),
    nonce: Buffer.from(vec(`${name}.nonce.hex`).toString().trim(), 'hex'),
    bank,
    indices,
    pcrs: { [bank]: pcrs },
    pcrValuesFile: values,
  };
}
