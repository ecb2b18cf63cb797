import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { RefusalAudit, type Refusal } from '../../../src/http/refusal-audit.js';
import { systemClock } from '../../../src/lib/clock.js';
import { SqliteStore } from '../../../src/store/sqlite/sqlite-store.js';

const dir = mkdtempSync(join(tmpdir(), 'custos-refusals-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const log = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const refusal = (ip: string, subject = 'GET /v1/keys'): Refusal => ({ actor: 'anonymous', action: 'auth.failure', subject, reason: 'no credentials', ip });

describe('RefusalAudit', () => {
  it('writes the first refusal of a kind at once, and its repeats in the window as one counted event', async () => {
    const store = new SqliteStore(join(dir, 'window.db'));
    const audit = new RefusalAudit(store, systemClock, log, 150);
    for (let i = 0; i < 500; i++) await audit.record(refusal('10.0.0.1'));
    await audit.record(refusal('10.0.0.2'));
    let events = await store.listAudit(0, 1000);
    expect(events.map((e) => [e.action, e.details['ip'], e.details['repeated']])).toEqual([['auth.failure', '10.0.0.1', undefined], ['auth.failure', '10.0.0.2', undefined]]);
    await sleep(300);
    events = await store.listAudit(0, 1000);
    expect(events).toHaveLength(3);
    expect(events[2]).toMatchObject({ actor: 'anonymous', action: 'auth.failure', subject: 'GET /v1/keys', outcome: 'denied', details: { reason: 'no credentials', ip: '10.0.0.1', repeated: 499 } });
    expect(Date.parse(events[2]!.details['until'] as string)).toBeGreaterThanOrEqual(Date.parse(events[2]!.details['since'] as string));
    // A new window starts with a written refusal again.
    await audit.record(refusal('10.0.0.1'));
    expect(await store.listAudit(0, 1000)).toHaveLength(4);
    await audit.flush();
    await store.close();
  });

  it('past maxOpen kinds, refusals are counted per action under one overflow kind; flush writes the counts', async () => {
    const store = new SqliteStore(join(dir, 'overflow.db'));
    const audit = new RefusalAudit(store, systemClock, log, 60_000, 3);
    for (let i = 0; i < 1000; i++) await audit.record(refusal(`10.1.${i >> 8}.${i & 255}`, `GET /v1/keys/k${i}`));
    // Three kinds written as they came, one overflow kind for the other 997.
    expect(await store.listAudit(0, 10_000)).toHaveLength(4);
    await audit.flush();
    const events = await store.listAudit(0, 10_000);
    expect(events).toHaveLength(5);
    expect(events[4]).toMatchObject({ actor: 'anonymous', subject: '*', details: { ip: null, repeated: 996 } });
    await store.close();
  });
});
