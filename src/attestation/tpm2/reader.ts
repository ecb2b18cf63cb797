/**
 * A strict big-endian reader for TPM 2.0 marshalled structures (Part 2, §5 and §10.4 sized
 * buffers). Every read checks the remaining length; `end()` rejects trailing bytes. A failure is
 * CustosError('ERR_TPM_MARSHAL') with `details.field` naming the field that did not fit.
 *
 * Hand-written: no maintained npm library unmarshals TPM 2.0 structures.
 */
import { CustosError } from '../../lib/errors.js';

/** Builds the ERR_TPM_MARSHAL error for `field`. */
export function marshalError(field: string, message: string): CustosError {
  return new CustosError('ERR_TPM_MARSHAL', `${field}: ${message}`, { details: { field } });
}

/** Sequential reader over one buffer; offsets never pass the end. */
export class TpmReader {
  private pos = 0;

  constructor(private readonly buf: Buffer) {}

  /** Bytes not read yet. */
  get remaining(): number {
    return this.buf.length - this.pos;
  }

  /** Current offset. */
  get offset(): number {
    return this.pos;
  }

  private need(n: number, field: string): void {
    if (n > this.remaining) throw marshalError(field, `needs ${n} bytes, ${this.remaining} left`);
  }

  /** A copy of the bytes from offset `start` up to the current offset. */
  since(start: number): Buffer {
    return Buffer.from(this.buf.subarray(start, this.pos));
  }

  /** Reads a UINT8. */
  u8(field: string): number {
    this.need(1, field);
    return this.buf.readUInt8(this.pos++);
  }

  /** Reads a UINT16. */
  u16(field: string): number {
    this.need(2, field);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  /** Reads a UINT32. */
  u32(field: string): number {
    this.need(4, field);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** Reads a UINT64. */
  u64(field: string): bigint {
    this.need(8, field);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  /**
   * Reads `n` raw bytes as a view into the input (no copy: quote verification parses on a hot
   * path). The view shares memory with the input buffer; parsed structures are read-only.
   */
  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** Reads a TPM2B: UINT16 size then that many bytes (a view); `max` bounds the size. */
  tpm2b(field: string, max?: number): Buffer {
    if (this.remaining < 2) throw marshalError(`${field}.size`, `needs 2 bytes, ${this.remaining} left`);
    const size = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    if (max !== undefined && size > max) throw marshalError(field, `size ${size} exceeds ${max}`);
    return this.bytes(size, field);
  }

  /** Reads a TPMI_YES_NO (only 0 or 1). */
  yesNo(field: string): boolean {
    const v = this.u8(field);
    if (v > 1) throw marshalError(field, `TPMI_YES_NO must be 0 or 1, got ${v}`);
    return v === 1;
  }

  /** Reads a TPM2B and parses its contents with `inner`, which must consume it all. */
  sized<T>(field: string, inner: (r: TpmReader) => T): T {
    const body = this.tpm2b(field);
    const r = new TpmReader(body);
    const v = inner(r);
    r.end(field);
    return v;
  }

  /** Fails if bytes are left (TPM structures have no trailing data). */
  end(field: string): void {
    if (this.remaining !== 0) throw marshalError(field, `${this.remaining} trailing bytes`);
  }
}

/** Appends TPM-marshalled values; the output of `toBuffer()` is canonical TPM encoding. */
export class TpmWriter {
  private readonly parts: Buffer[] = [];

  /** Writes a UINT8. */
  u8(v: number): this {
    const b = Buffer.alloc(1);
    b.writeUInt8(v);
    this.parts.push(b);
    return this;
  }

  /** Writes a UINT16. */
  u16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    this.parts.push(b);
    return this;
  }

  /** Writes a UINT32. */
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    this.parts.push(b);
    return this;
  }

  /** Writes a UINT64. */
  u64(v: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(v);
    this.parts.push(b);
    return this;
  }

  /** Writes raw bytes. */
  bytes(v: Uint8Array): this {
    this.parts.push(Buffer.from(v));
    return this;
  }

  /** Writes a TPM2B (UINT16 size ‖ bytes). */
  tpm2b(v: Uint8Array): this {
    if (v.length > 0xffff) throw marshalError('tpm2b', 'longer than 65535 bytes');
    return this.u16(v.length).bytes(v);
  }

  /** The bytes written so far. */
  toBuffer(): Buffer {
    return Buffer.concat(this.parts);
  }
}
