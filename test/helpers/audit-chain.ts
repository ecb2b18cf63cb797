import { expect } from 'vitest';
import { computeEventHash, GENESIS_HASH, type AuditEvent } from '../../src/audit/chain.js';

/** Asserts that stored events form one unbroken hash chain from seq 1. */
export function expectUnbrokenChain(events: readonly AuditEvent[]): void {
  let prev = GENESIS_HASH;
  events.forEach((e, i) => {
    expect(e.seq).toBe(i + 1);
    expect(e.prevHash).toBe(prev);
    expect(computeEventHash(prev, e)).toBe(e.hash);
    prev = e.hash;
  });
}
