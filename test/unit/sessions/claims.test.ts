import { describe, expect, it } from 'vitest';
import {
  AR4SI,
  DISCLOSABLE_CLAIMS,
  EAR_PROFILE,
  FAILURE_TABLE,
  appraise,
  buildEarResult,
  buildSessionClaims,
  tierOf,
  type AppraisalResult,
  type SessionClaimsInput,
} from '../../../src/sessions/claims.js';

const affirming: AppraisalResult = {
  ...appraise([]),
  policyId: 'prod-boot',
  policyVersion: 3,
  pcrDigest: 'ab'.repeat(32),
};

function input(over: Partial<SessionClaimsInput> = {}): SessionClaimsInput {
  return {
    issuer: 'https://custos.example',
    hostId: 'host-7',
    audience: 'ledger-eu',
    now: new Date('2026-01-02T03:04:05.678Z'),
    ttlSeconds: 300,
    jti: 'jti-1',
    thumbprint: Buffer.alloc(32, 0xfe),
    nonce: Buffer.alloc(32, 0x01),
    appraisal: affirming,
    verifierId: { developer: 'https://custos.example', build: 'custos 0.1.0' },
    disclose: [],
    ...over,
  };
}

describe('appraise (status table)', () => {
  it('is affirming with every appraised claim affirming when nothing failed', () => {
    const a = appraise([]);
    expect(a.status).toBe('affirming');
    expect(a.trustworthinessVector).toEqual({ 'instance-identity': 2, configuration: 2, executables: 3, hardware: 2 });
  });

  it('PCR policy mismatch is contraindicated in executables', () => {
    const a = appraise([{ code: 'ERR_QUOTE_PCR_POLICY', detail: 'PCR 7' }]);
    expect(a.status).toBe('contraindicated');
    expect(a.trustworthinessVector.executables).toBe(AR4SI.executables.CONTRAINDICATED_RUNTIME);
    expect(a.trustworthinessVector['instance-identity']).toBe(2);
  });

  it('an unsafe TPM clock alone is a warning in hardware', () => {
    const a = appraise([{ code: 'ERR_QUOTE_NOT_SAFE' }]);
    expect(a.status).toBe('warning');
    expect(a.trustworthinessVector.hardware).toBe(32);
  });

  it('the worst tier wins across claims and within one claim', () => {
    expect(appraise([{ code: 'ERR_QUOTE_NOT_SAFE' }, { code: 'ERR_QUOTE_SIGNATURE' }]).status).toBe('contraindicated');
    const a = appraise([{ code: 'ERR_QUOTE_NOT_SAFE' }, { code: 'ERR_EK_CERT_CHAIN' }, { code: 'ERR_QUOTE_NOT_SAFE' }]);
    expect(a.trustworthinessVector.hardware).toBe(97);
    const b = appraise([{ code: 'ERR_HOST_REVOKED' }, { code: 'ERR_QUOTE_SIGNATURE' }]);
    expect(b.trustworthinessVector['instance-identity']).toBe(99);
  });

  it('an unknown failure code fails closed', () => {
    const a = appraise([{ code: 'ERR_SOMETHING_NEW' }]);
    expect(a.status).toBe('contraindicated');
    expect(a.trustworthinessVector['instance-identity']).toBe(99);
    expect(appraise([{ code: 'toString' }]).status).toBe('contraindicated');
  });

  it('every table entry is warning or contraindicated, never affirming', () => {
    for (const [code, e] of Object.entries(FAILURE_TABLE)) {
      expect([code, ['warning', 'contraindicated'].includes(tierOf(e.value))]).toEqual([code, true]);
      expect(appraise([{ code }]).status).toBe(tierOf(e.value));
    }
  });

  it('maps values to AR4SI tiers', () => {
    expect([0, 1, -1, 2, 31, 32, 95, 96, 127, -96].map(tierOf)).toEqual([
      'none', 'none', 'none', 'affirming', 'affirming', 'warning', 'warning', 'contraindicated', 'contraindicated', 'contraindicated',
    ]);
  });
});

describe('buildSessionClaims', () => {
  it('holds only the mandatory claims when the policy discloses nothing', () => {
    const c = buildSessionClaims(input());
    expect(c).toEqual({
      iss: 'https://custos.example',
      sub: 'host-7',
      aud: 'ledger-eu',
      iat: 1767323045,
      nbf: 1767323045,
      exp: 1767323345,
      jti: 'jti-1',
      cnf: { jkt: Buffer.alloc(32, 0xfe).toString('base64url') },
      eat_nonce: Buffer.alloc(32, 0x01).toString('base64url'),
      'ear.status': 'affirming',
    });
  });

  it('adds exactly the named disclosable claims', () => {
    const c = buildSessionClaims(input({ disclose: ['ear.appraisal-policy-id', 'custos.pcr-digest'] }));
    expect(c['ear.appraisal-policy-id']).toBe('prod-boot@3');
    expect(c['custos.pcr-digest']).toBe('ab'.repeat(32));
    expect('ear.trustworthiness-vector' in c).toBe(false);
    expect('ear.verifier-id' in c).toBe(false);
    const all = buildSessionClaims(input({ disclose: [...DISCLOSABLE_CLAIMS] }));
    expect(all['ear.trustworthiness-vector']).toEqual(affirming.trustworthinessVector);
    expect(all['ear.verifier-id']).toEqual({ developer: 'https://custos.example', build: 'custos 0.1.0' });
    expect(Object.keys(all).length).toBe(10 + DISCLOSABLE_CLAIMS.length);
  });

  it('refuses claim names outside the disclosable set', () => {
    for (const name of ['iss', 'ear.status', 'secret', 'cnf']) {
      expect(() => buildSessionClaims(input({ disclose: [name] }))).toThrow(expect.objectContaining({ code: 'ERR_POLICY_INVALID' }));
    }
  });

  it('refuses to build a token for anything but an affirming appraisal', () => {
    for (const failures of [[{ code: 'ERR_QUOTE_NOT_SAFE' }], [{ code: 'ERR_QUOTE_PCR_POLICY' }]]) {
      const appraisal = { ...affirming, ...appraise(failures) };
      expect(() => buildSessionClaims(input({ appraisal }))).toThrow(expect.objectContaining({ code: 'ERR_ATTESTATION_FAILED' }));
    }
  });

  it('refuses a TTL beyond 15 minutes, a bad thumbprint, an empty nonce or empty names', () => {
    const bad = (over: Partial<SessionClaimsInput>): void => {
      expect(() => buildSessionClaims(input(over))).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    };
    bad({ ttlSeconds: 901 });
    bad({ ttlSeconds: 0 });
    bad({ ttlSeconds: 1.5 });
    bad({ thumbprint: Buffer.alloc(31) });
    bad({ nonce: Buffer.alloc(0) });
    bad({ audience: '' });
    bad({ hostId: '' });
    bad({ jti: '' });
    bad({ now: new Date(Number.NaN) });
    expect(buildSessionClaims(input({ ttlSeconds: 900 })).exp - buildSessionClaims(input()).iat).toBe(900);
  });
});

describe('buildEarResult', () => {
  it('is an EAR with one submodule per host, for any outcome', () => {
    const bad = { ...affirming, ...appraise([{ code: 'ERR_QUOTE_PCR_POLICY' }]) };
    const r = buildEarResult({
      issuer: 'https://custos.example',
      hostId: 'host-7',
      now: new Date('2026-01-02T03:04:05Z'),
      nonce: Buffer.from('nonce'),
      appraisal: bad,
      verifierId: { developer: 'https://custos.example', build: 'custos 0.1.0' },
      ttlSeconds: 60,
    });
    expect(r).toEqual({
      eat_profile: EAR_PROFILE,
      iss: 'https://custos.example',
      iat: 1767323045,
      exp: 1767323105,
      eat_nonce: Buffer.from('nonce').toString('base64url'),
      'ear.verifier-id': { developer: 'https://custos.example', build: 'custos 0.1.0' },
      submods: {
        'host-7': {
          'ear.status': 'contraindicated',
          'ear.trustworthiness-vector': { 'instance-identity': 2, configuration: 2, executables: 96, hardware: 2 },
          'ear.appraisal-policy-id': 'prod-boot@3',
          'custos.pcr-digest': 'ab'.repeat(32),
        },
      },
    });
  });

  it('refuses empty host ids and nonces', () => {
    const base = { issuer: 'i', hostId: 'h', now: new Date(), nonce: Buffer.alloc(1), appraisal: affirming, verifierId: { developer: 'd', build: 'b' }, ttlSeconds: 60 };
    expect(() => buildEarResult({ ...base, hostId: '' })).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    expect(() => buildEarResult({ ...base, nonce: Buffer.alloc(0) })).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
    expect(() => buildEarResult({ ...base, ttlSeconds: 0 })).toThrow(expect.objectContaining({ code: 'ERR_BAD_REQUEST' }));
  });
});
