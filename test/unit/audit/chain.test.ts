import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { jcs } from '../../../src/lib/jcs.js';
import {
  GENESIS_HASH,
  canonicalEvent,
  checkpointSigningInput,
  computeEventHash,
  computeEventHashFromCanonical,
  eventBodyJcs,
  isHashHex,
} from '../../../src/audit/chain.js';

const body = {
  seq: 1,
  time: '2026-01-01T00:00:00.000Z',
  actor: 'user:alice',
  action: 'key.create',
  subject: 'key:k1',
  outcome: 'success' as const,
  details: { z: 1, a: 'é', m: [true, null, 1e21] },
};

describe('audit chain', () => {
  it('hashes SHA-256(prevHash hex ‖ JCS(body)) with keys sorted and numbers as ECMAScript prints them', () => {
    const text = '{"action":"key.create","actor":"user:alice","details":{"a":"é","m":[true,null,1e+21],"z":1},"outcome":"success","seq":1,"subject":"key:k1","time":"2026-01-01T00:00:00.000Z"}';
    expect(eventBodyJcs(body)).toBe(text);
    const expected = createHash('sha256').update(Buffer.concat([Buffer.from(GENESIS_HASH, 'ascii'), Buffer.from(text, 'utf8')])).digest('hex');
    expect(computeEventHash(GENESIS_HASH, body)).toBe(expected);
    expect(computeEventHashFromCanonical(GENESIS_HASH, text)).toBe(expected);
  });

  it('writes the event wrapper exactly as the general RFC 8785 canonicaliser does', () => {
    fc.assert(
      fc.property(
        fc.record({
          seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
          time: fc.string(),
          actor: fc.string({ unit: 'binary' }),
          action: fc.string(),
          subject: fc.string({ unit: 'binary' }),
          outcome: fc.constantFrom('success' as const, 'failure' as const, 'denied' as const),
          details: fc.dictionary(fc.string({ unit: 'binary' }), fc.jsonValue()),
        }),
        (b) => {
          const { canonical, details } = canonicalEvent(b);
          expect(canonical).toBe(jcs({ ...b }));
          expect(details).toBe(jcs(b.details));
          expect(JSON.parse(details)).toEqual(JSON.parse(JSON.stringify(b.details)));
        },
      ),
      { numRuns: 2000 },
    );
    expect(() => canonicalEvent({ ...body, seq: 1.5 })).toThrow();
  });

  it('ignores fields outside the body and changes with any body field', () => {
    const h = computeEventHash(GENESIS_HASH, body);
    expect(computeEventHash(GENESIS_HASH, { ...body, prevHash: 'x', hash: 'y' } as typeof body)).toBe(h);
    expect(computeEventHash(GENESIS_HASH, { ...body, outcome: 'denied' })).not.toBe(h);
    expect(computeEventHash(GENESIS_HASH, { ...body, details: { ...body.details, z: 2 } })).not.toBe(h);
    expect(computeEventHash('1'.repeat(64), body)).not.toBe(h);
  });

  it('signs checkpoints over JCS({seq, hash, time, kid}) only', () => {
    const cp = { seq: 9, hash: 'ab'.repeat(32), time: '2026-01-01T00:00:00.000Z', kid: 'audit/v1', alg: 'ES256', signature: 'AA==' };
    expect(checkpointSigningInput(cp).toString('utf8')).toBe(`{"hash":"${'ab'.repeat(32)}","kid":"audit/v1","seq":9,"time":"2026-01-01T00:00:00.000Z"}`);
  });

  it('recognises chain hashes', () => {
    expect(isHashHex(GENESIS_HASH)).toBe(true);
    expect(isHashHex('AB'.repeat(32))).toBe(false);
    expect(isHashHex('ab'.repeat(31))).toBe(false);
    expect(isHashHex(5)).toBe(false);
  });
});
