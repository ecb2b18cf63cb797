import { Ajv2020, type AnySchema, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsImport from 'ajv-formats';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { PERMISSIONS, type Permission } from '../../../src/auth/roles.js';
import { MemoryKeyStore } from '../../../src/hsm/memory-key-store.js';
import { ERROR_TABLE } from '../../../src/lib/errors.js';
import { jwkThumbprint, sessionExtraData } from '../../../src/sessions/ephemeral-key.js';
import type { HostRecord } from '../../../src/store/records.js';
import { SoftAk } from '../../helpers/soft-tpm.js';
import { startTestService, type TestService } from '../../helpers/service.js';

/**
 * docs/openapi.yaml against itself (structure, references, schemas), against the app's router
 * (same set of method + path), against the permission table (roles per operation), and against
 * real answers of a running app (response schemas, with undocumented fields counted as errors).
 */

type Json = Record<string, any>;
const addFormats = addFormatsImport as unknown as (ajv: Ajv2020) => Ajv2020;
const SPEC_FILE = new URL('../../../docs/openapi.yaml', import.meta.url);
const doc: Json = parse(readFileSync(SPEC_FILE, 'utf8'));
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'] as const;
const BASE = 'https://custos.invalid/openapi/';

/**
 * Which permission each route checks, read from src/http/routes/*.ts by hand (null: no API token
 * needed; the route is public or authorized by TPM evidence). Written out on purpose: a route
 * that changes its permission must change this table too.
 */
const PERMISSION_OF: Record<string, Permission | null> = {
  'POST /v1/keys': 'keys.create',
  'GET /v1/keys': 'keys.read',
  'GET /v1/keys/{name}': 'keys.read',
  'GET /v1/keys/{name}/versions/{version}/public': 'keys.read',
  'POST /v1/keys/{name}/rotate': 'keys.rotate',
  'POST /v1/keys/{name}/sign': 'keys.use',
  'POST /v1/keys/{name}/sign-batch': 'keys.use',
  'POST /v1/keys/{name}/verify': 'keys.use',
  'POST /v1/keys/{name}/encrypt': 'keys.use',
  'POST /v1/keys/{name}/decrypt': 'keys.use',
  'POST /v1/keys/{name}/versions/{version}/compromise': 'keys.compromise',
  'POST /v1/keys/{name}/versions/{version}/cancel-destroy': 'keys.cancel-destroy',
  'POST /v1/tokens': 'tokens.manage',
  'GET /v1/tokens': 'tokens.manage',
  'DELETE /v1/tokens/{id}': 'tokens.manage',
  'POST /v1/provisioning-tokens': 'provisioning-tokens.create',
  'POST /v1/hosts/enroll': 'hosts.enroll',
  'POST /v1/hosts/enroll/{enrollmentId}/activate': null,
  'GET /v1/hosts': 'hosts.read',
  'GET /v1/hosts/{hostId}': 'hosts.read',
  'POST /v1/hosts/{hostId}/revoke': 'hosts.revoke',
  'POST /v1/challenges': null,
  'POST /v1/hosts/{hostId}/attest': null,
  'POST /v1/sessions': null,
  'POST /v1/sessions/introspect': null,
  'GET /.well-known/jwks.json': null,
  'GET /v1/policies': 'policies.read',
  'GET /v1/rotation/plan': 'rotation.read',
  'GET /v1/rotation/report': 'rotation.read',
  'GET /v1/audit': 'audit.read',
  'GET /v1/audit/checkpoints': 'audit.read',
  'GET /v1/audit/keys': 'audit.read',
  'GET /v1/audit/export': 'audit.read',
  'GET /healthz': null,
  'GET /readyz': null,
  'GET /metrics': null,
};
/** Enroll takes a provisioning token in place of an API token (src/http/routes/hosts.ts). */
const PROVISIONING_TOKEN_ROUTES = new Set(['POST /v1/hosts/enroll']);

function operations(d: Json): { key: string; path: string; method: string; op: Json }[] {
  const out: { key: string; path: string; method: string; op: Json }[] = [];
  for (const [path, item] of Object.entries<Json>(d.paths ?? {})) {
    for (const m of METHODS) if (item[m]) out.push({ key: `${m.toUpperCase()} ${path}`, path, method: m, op: item[m] });
  }
  return out;
}

function pointerGet(root: unknown, ref: string): unknown {
  if (!ref.startsWith('#')) return undefined;
  let node: unknown = root;
  for (const raw of ref.slice(1).split('/').slice(1)) {
    const part = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, part)) return undefined;
    node = (node as Json)[part];
  }
  return node;
}

function walk(node: unknown, visit: (o: Json, path: string) => void, path = '#'): void {
  if (Array.isArray(node)) node.forEach((n, i) => walk(n, visit, `${path}/${i}`));
  else if (node !== null && typeof node === 'object') {
    visit(node as Json, path);
    for (const [k, v] of Object.entries(node)) walk(v, visit, `${path}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`);
  }
}

/** Follows a `$ref` (components/responses, components/parameters) to its target object. */
function deref<T = Json>(o: Json): T {
  return (typeof o.$ref === 'string' ? pointerGet(doc, o.$ref) : o) as T;
}

/** A deep copy in which every local `#/components/schemas/X` points at the schema registered as BASE + X. */
function rebase<T>(schema: T): T {
  return JSON.parse(JSON.stringify(schema), (k, v) => (k === '$ref' && typeof v === 'string' && v.startsWith('#/components/schemas/') ? BASE + v.slice('#/components/schemas/'.length) : v));
}

/**
 * The same schema with every object that lists `properties` and says nothing about other members
 * closed (`additionalProperties: false`): the spec stays open for additions (API.md), but the
 * app's answers must not carry members the spec does not document.
 */
function closed<T>(schema: T): T {
  const copy = JSON.parse(JSON.stringify(schema)) as T;
  walk(copy, (o) => {
    if (o.properties && typeof o.properties === 'object' && !('additionalProperties' in o) && !('unevaluatedProperties' in o)) o.additionalProperties = false;
  });
  return copy;
}

/** An ajv with every component schema registered under BASE (each one checked against the 2020-12 meta-schema). */
function schemaAjv(d: Json, close: boolean): Ajv2020 {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  for (const [name, schema] of Object.entries<Json>(d.components?.schemas ?? {})) {
    const s = rebase(close ? closed(schema) : schema);
    ajv.addSchema({ ...s, $id: BASE + name });
  }
  return ajv;
}

/** Every place in the document that holds a Schema Object, as a JSON pointer. */
function schemaLocations(d: Json): string[] {
  const out: string[] = [];
  for (const name of Object.keys(d.components?.schemas ?? {})) out.push(`#/components/schemas/${name}`);
  walk(d.paths, (o, path) => {
    if (o.schema && typeof o.schema === 'object' && (path.includes('/content/') || path.includes('/parameters/') || path.includes('/headers/'))) out.push(`${path.replace(/^#/, '#/paths')}/schema`);
    if (o['x-custos-line-schema']) out.push(`${path.replace(/^#/, '#/paths')}/x-custos-line-schema`);
  });
  walk(d.components, (o, path) => {
    if (path.startsWith('#/schemas')) return;
    if (o.schema && typeof o.schema === 'object') out.push(`${path.replace(/^#/, '#/components')}/schema`);
  });
  return out;
}

function compileAll(d: Json): number {
  const ajv = schemaAjv(d, false);
  const locations = schemaLocations(d);
  for (const loc of locations) {
    const schema = pointerGet(d, loc) as Json;
    const name = loc.startsWith('#/components/schemas/') ? loc.slice('#/components/schemas/'.length) : null;
    if (name !== null && !name.includes('/')) {
      if (typeof ajv.getSchema(BASE + name) !== 'function') throw new Error(`schema ${name} did not compile`);
    }
    else ajv.compile(rebase(schema) as AnySchema);
  }
  return locations.length;
}

describe('docs/openapi.yaml as a document', () => {
  it('is OpenAPI 3.1 with info, paths and components', () => {
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    expect(typeof doc.info?.title).toBe('string');
    expect(typeof doc.info?.version).toBe('string');
    expect(Object.keys(doc.paths).length).toBeGreaterThan(30);
    for (const p of Object.keys(doc.paths)) expect(p).toMatch(/^\//);
  });

  it('resolves every $ref', () => {
    const refs: string[] = [];
    walk(doc, (o) => {
      if (typeof o.$ref === 'string') refs.push(o.$ref);
    });
    expect(refs.length).toBeGreaterThan(100);
    const broken = refs.filter((r) => pointerGet(doc, r) === undefined);
    expect(broken).toEqual([]);
    expect(pointerGet(doc, '#/components/schemas/NoSuchSchema')).toBeUndefined();
  });

  it('gives every operation a unique operationId, responses, and its path parameters', () => {
    const ids = new Set<string>();
    for (const { key, path, op } of operations(doc)) {
      expect(typeof op.operationId, key).toBe('string');
      expect(ids.has(op.operationId), `duplicate operationId ${op.operationId}`).toBe(false);
      ids.add(op.operationId);
      expect(Object.keys(op.responses ?? {}).length, key).toBeGreaterThan(0);
      for (const [status, r] of Object.entries<Json>(op.responses)) {
        expect(status, key).toMatch(/^(default|[1-5][0-9X]{2})$/);
        expect(typeof deref(r).description, `${key} ${status}`).toBe('string');
      }
      const params = [...(doc.paths[path].parameters ?? []), ...(op.parameters ?? [])].map((p: Json) => deref(p));
      const declared = params.filter((p) => p.in === 'path');
      const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      expect(declared.map((p) => p.name).sort(), key).toEqual([...templated].sort());
      for (const p of declared) expect(p.required, `${key} ${p.name}`).toBe(true);
      for (const tag of op.tags ?? []) expect(doc.tags.map((t: Json) => t.name), key).toContain(tag);
    }
  });

  it('names only declared security schemes, and they are bearer and mutual TLS', () => {
    const schemes = doc.components.securitySchemes;
    expect(schemes.apiToken).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(schemes.clientCertificate).toMatchObject({ type: 'mutualTLS' });
    const requirements = [...doc.security, ...operations(doc).flatMap(({ op }) => op.security ?? [])];
    for (const req of requirements) for (const name of Object.keys(req)) expect(Object.keys(schemes)).toContain(name);
  });

  it('lists exactly the closed ERR_* table as error codes', () => {
    expect([...doc.components.schemas.ErrorCode.enum].sort()).toEqual(Object.keys(ERROR_TABLE).sort());
  });

  it('compiles every schema in it with ajv (2020-12)', () => {
    expect(compileAll(doc)).toBeGreaterThan(100);
  });

  it('a broken schema or a dangling reference fails that compilation', () => {
    const brokenType = structuredClone(doc);
    brokenType.components.schemas.Key.properties.name = { type: 'strng' };
    expect(() => compileAll(brokenType)).toThrow();
    const dangling = structuredClone(doc);
    dangling.paths['/v1/keys'].post.requestBody.content['application/json'].schema = { $ref: '#/components/schemas/NoSuchSchema' };
    expect(() => compileAll(dangling)).toThrow();
  });
});

let svc: TestService;
beforeAll(async () => {
  svc = await startTestService({ hsm: new MemoryKeyStore() });
});
afterAll(async () => svc?.close());

interface ExpressLayer {
  route?: { path: string | string[]; methods: Record<string, boolean> };
  handle?: { stack?: ExpressLayer[] };
  rawPath?: unknown;
}

/** Every (method, path) the app serves, from express 5's router stack, with `:p` written `{p}`. */
function appRoutes(stack: ExpressLayer[], prefix = ''): string[] {
  const out: string[] = [];
  for (const layer of stack) {
    if (layer.route) {
      const paths = Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path];
      for (const p of paths) {
        for (const [m, on] of Object.entries(layer.route.methods)) {
          if (!on || m === '_all') continue;
          out.push(`${m.toUpperCase()} ${(prefix + p).replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`);
        }
      }
    } else if (layer.handle?.stack) {
      // Nested routers: mounted at '/' today; a prefix must be a plain string to be listed.
      const mount = layer.rawPath === undefined || layer.rawPath === '/' ? '' : layer.rawPath;
      expect(typeof mount, 'router mounted at a non-string path').toBe('string');
      out.push(...appRoutes(layer.handle.stack, prefix + (mount as string)));
    }
  }
  return out;
}

describe('docs/openapi.yaml against the app', () => {
  it('documents exactly the (method, path) pairs the app serves', () => {
    const served = appRoutes((svc.service.app as unknown as { router: { stack: ExpressLayer[] } }).router.stack).sort();
    const documented = operations(doc).map((o) => o.key).sort();
    expect(served.length).toBeGreaterThan(30);
    expect(new Set(served).size).toBe(served.length);
    expect(served).toEqual(documented);
  });

  it('the permission table of this test covers every documented operation', () => {
    expect(Object.keys(PERMISSION_OF).sort()).toEqual(operations(doc).map((o) => o.key).sort());
  });

  it('x-custos-roles of every operation is what src/auth/roles.ts allows for its permission', () => {
    for (const { key, op } of operations(doc)) {
      const permission = PERMISSION_OF[key]!;
      const expected = permission === null ? [] : [...PERMISSIONS[permission]];
      expect([...op['x-custos-roles']].sort(), key).toEqual([...expected].sort());
      if (permission === null) {
        expect(['tpm-evidence', 'public'], key).toContain(op['x-custos-auth']);
        expect(op.security, key).toEqual([]);
        expect(op.description, key).toMatch(/No API token|Public/);
      } else {
        expect(op['x-custos-auth'], key).toBe(PROVISIONING_TOKEN_ROUTES.has(key) ? 'roles-or-provisioning-token' : 'roles');
        const security = (op.security ?? doc.security) as Json[];
        expect(security.some((s) => 'apiToken' in s), key).toBe(true);
        expect(security.some((s) => 'clientCertificate' in s), key).toBe(true);
        expect(op.description, key).toContain(`Roles: ${expected.join(', ')}`);
      }
      if (PROVISIONING_TOKEN_ROUTES.has(key)) expect(op.security, key).toContainEqual({});
    }
  });

  it('the app asks for credentials exactly where the spec names roles', async () => {
    for (const { key, path, method, op } of operations(doc)) {
      if (PROVISIONING_TOKEN_ROUTES.has(key)) continue;
      const concrete = path.replace(/\{version\}/g, '1').replace(/\{[^}]+\}/g, 'x');
      const r = await svc.call(method.toUpperCase(), concrete, method === 'get' || method === 'delete' ? undefined : {}, null);
      if (op['x-custos-roles'].length > 0) {
        expect(r.status, key).toBe(401);
        expect(r.body.error.code, key).toBe('ERR_UNAUTHENTICATED');
      } else {
        expect(r.status, key).not.toBe(401);
      }
    }
    // Enroll: a provisioning token stands in for credentials; without either it is 401.
    const body = { ekPublic: 'AAAA', akPublic: 'AAAA' };
    const none = await svc.call('POST', '/v1/hosts/enroll', body, null);
    expect(none.status).toBe(401);
    const withToken = await svc.call('POST', '/v1/hosts/enroll', { ...body, provisioningToken: 'cpt_unknown' }, null);
    expect(withToken.status).toBe(403);
    expect(withToken.body.error.code).toBe('ERR_PROVISIONING_TOKEN');
  });
});

// ---- answers of the running app against the response schemas ------------------------------

const strict = schemaAjv(doc, true);
const compiled = new Map<string, ValidateFunction>();

function validatorFor(schema: Json): ValidateFunction {
  const id = JSON.stringify(schema);
  let v = compiled.get(id);
  if (!v) {
    v = strict.compile(rebase(closed(schema)) as AnySchema);
    compiled.set(id, v);
  }
  return v;
}

function mediaFor(path: string, method: string, status: number, contentType: string): Json {
  const op = doc.paths[path]?.[method];
  expect(op, `${method} ${path} is documented`).toBeDefined();
  const response = op.responses[String(status)] ?? op.responses.default;
  expect(response, `${method} ${path} documents ${status}`).toBeDefined();
  const content = deref(response).content as Json;
  const type = contentType.split(';')[0]!.trim();
  expect(Object.keys(content), `${method} ${path} ${status} media type`).toContain(type);
  return content[type];
}

/** Checks a real answer against the documented schema of (path template, method, status). */
function expectDocumented(path: string, method: string, r: { status: number; body: unknown; headers: Headers }): void {
  const media = mediaFor(path, method, r.status, r.headers.get('content-type') ?? '');
  const validate = validatorFor(media.schema);
  const ok = validate(r.body);
  expect(validate.errors ?? [], `${method} ${path} ${r.status}: ${JSON.stringify(r.body).slice(0, 400)}`).toEqual([]);
  expect(ok).toBe(true);
}

function schemaValidator(name: string): ValidateFunction {
  return validatorFor({ $ref: `#/components/schemas/${name}` });
}

describe('real answers match the documented response schemas', () => {
  it('keys: create (201), list, get, public key, sign, verify, rotate, compromise', async () => {
    const created = await svc.call('POST', '/v1/keys', { name: 'oa-sig', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual', labels: { team: 'docs' } });
    expect(created.status).toBe(201);
    expectDocumented('/v1/keys', 'post', created);
    const rsa = await svc.call('POST', '/v1/keys', { name: 'oa-rsa', type: 'rsa-2048', purpose: 'sign', rotationPolicy: 'manual' });
    expect(rsa.status).toBe(201);
    expectDocumented('/v1/keys', 'post', rsa);

    const list = await svc.call('GET', '/v1/keys');
    expect(list.status).toBe(200);
    expectDocumented('/v1/keys', 'get', list);
    const one = await svc.call('GET', '/v1/keys/oa-sig');
    expect(one.status).toBe(200);
    expect(one.body.versions[0].state).toBe('active');
    expectDocumented('/v1/keys/{name}', 'get', one);

    for (const name of ['oa-sig', 'oa-rsa']) {
      const pub = await svc.call('GET', `/v1/keys/${name}/versions/1/public`);
      expect(pub.status).toBe(200);
      expectDocumented('/v1/keys/{name}/versions/{version}/public', 'get', pub);
    }

    const sig = await svc.call('POST', '/v1/keys/oa-sig/sign', { data: Buffer.from('hello').toString('base64') });
    expect(sig.status).toBe(200);
    expectDocumented('/v1/keys/{name}/sign', 'post', sig);
    const ver = await svc.call('POST', '/v1/keys/oa-sig/verify', { data: Buffer.from('hello').toString('base64'), signature: sig.body.signature });
    expect(ver.status).toBe(200);
    expect(ver.body.valid).toBe(true);
    expectDocumented('/v1/keys/{name}/verify', 'post', ver);
    const bad = await svc.call('POST', '/v1/keys/oa-sig/verify', { data: Buffer.from('other').toString('base64'), signature: sig.body.signature });
    expect(bad.body.valid).toBe(false);
    expectDocumented('/v1/keys/{name}/verify', 'post', bad);

    const rotated = await svc.call('POST', '/v1/keys/oa-sig/rotate', { reason: 'docs' });
    expect(rotated.status).toBe(201);
    expectDocumented('/v1/keys/{name}/rotate', 'post', rotated);
    const compromised = await svc.call('POST', `/v1/keys/oa-sig/versions/${rotated.body.version}/compromise`, { reason: 'docs' });
    expect(compromised.status).toBe(200);
    expect(compromised.body.replacement).toBeDefined();
    expectDocumented('/v1/keys/{name}/versions/{version}/compromise', 'post', compromised);
    // Already deactivated: answered unchanged. Compromised: not a state a cancel applies to.
    const unchanged = await svc.call('POST', '/v1/keys/oa-sig/versions/1/cancel-destroy', {});
    expect(unchanged.status).toBe(200);
    expect(unchanged.body.state).toBe('deactivated');
    expectDocumented('/v1/keys/{name}/versions/{version}/cancel-destroy', 'post', unchanged);
    const refused = await svc.call('POST', `/v1/keys/oa-sig/versions/${rotated.body.version}/cancel-destroy`, {});
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('ERR_KEY_STATE');
    expectDocumented('/v1/keys/{name}/versions/{version}/cancel-destroy', 'post', refused);
  });

  it('keys: encrypt and decrypt', async () => {
    expect((await svc.call('POST', '/v1/keys', { name: 'oa-enc', type: 'aes-256', purpose: 'encrypt', rotationPolicy: 'manual' })).status).toBe(201);
    const aad = Buffer.from('ctx').toString('base64');
    const enc = await svc.call('POST', '/v1/keys/oa-enc/encrypt', { plaintext: Buffer.from('secret').toString('base64'), aad });
    expect(enc.status).toBe(200);
    expectDocumented('/v1/keys/{name}/encrypt', 'post', enc);
    const dec = await svc.call('POST', '/v1/keys/oa-enc/decrypt', { ciphertext: enc.body.ciphertext, aad });
    expect(dec.status).toBe(200);
    expect(Buffer.from(dec.body.plaintext, 'base64').toString()).toBe('secret');
    expectDocumented('/v1/keys/{name}/decrypt', 'post', dec);
    const sym = await svc.call('GET', '/v1/keys/oa-enc/versions/1/public');
    expect(sym.status).toBe(400);
    expectDocumented('/v1/keys/{name}/versions/{version}/public', 'get', sym);
  });

  it('JSON answers: one content type and an exact length; HEAD has the GET headers and no body', async () => {
    const get = await svc.call('GET', '/v1/keys');
    expect(get.status).toBe(200);
    expect(get.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(Number(get.headers.get('content-length'))).toBe(Buffer.byteLength(JSON.stringify(get.body)));
    const head = await svc.call('HEAD', '/v1/keys');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    expect(head.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(head.headers.get('content-length')).toBe(get.headers.get('content-length'));
  });

  it('error envelopes: 400, 401, 403, 404, 405, 409, 415', async () => {
    const unknownField = await svc.call('POST', '/v1/keys', { name: 'oa-x', type: 'ec-p256', purpose: 'sign', extra: 1 });
    expect(unknownField.status).toBe(400);
    expect(unknownField.body.error.code).toBe('ERR_BAD_REQUEST');
    expect(unknownField.body.error.requestId).toBe(unknownField.headers.get('x-request-id'));
    expectDocumented('/v1/keys', 'post', unknownField);
    const badJson = await svc.call('POST', '/v1/keys', '{"name":', svc.tokens.admin);
    expect(badJson.body.error.code).toBe('ERR_BAD_JSON');
    expectDocumented('/v1/keys', 'post', badJson);
    const media = await svc.call('POST', '/v1/keys', 'name=x', svc.tokens.admin, { 'content-type': 'text/plain' });
    expect(media.status).toBe(415);
    expectDocumented('/v1/keys', 'post', media);
    const anon = await svc.call('GET', '/v1/keys', undefined, null);
    expect(anon.status).toBe(401);
    expectDocumented('/v1/keys', 'get', anon);
    const forbidden = await svc.call('POST', '/v1/keys', { name: 'oa-y', type: 'ec-p256', purpose: 'sign' }, svc.tokens.auditor);
    expect(forbidden.status).toBe(403);
    expectDocumented('/v1/keys', 'post', forbidden);
    const missing = await svc.call('GET', '/v1/keys/oa-none');
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('ERR_KEY_NOT_FOUND');
    expectDocumented('/v1/keys/{name}', 'get', missing);
    const exists = await svc.call('POST', '/v1/keys', { name: 'oa-sig', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' });
    expect(exists.status).toBe(409);
    expectDocumented('/v1/keys', 'post', exists);
    // A served path with a method it does not serve is 405 with Allow (info.description); an
    // unknown path is 404.
    const wrongMethod = await svc.call('DELETE', '/v1/keys');
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.body.error.code).toBe('ERR_METHOD_NOT_ALLOWED');
    expect(wrongMethod.headers.get('allow')).toBe('GET, HEAD, POST');
    expect(wrongMethod.body.error.details).toEqual({ allow: ['GET', 'HEAD', 'POST'] });
    expect(schemaValidator('Error')(wrongMethod.body)).toBe(true);
    const getOnPost = await svc.call('GET', '/v1/keys/oa-sig/sign');
    expect(getOnPost.status).toBe(405);
    expect(getOnPost.headers.get('allow')).toBe('POST');
    expect((await svc.call('GET', '/v1/keys/oa-sig/sign/')).headers.get('allow')).toBe('POST');
    const unknown = await svc.call('GET', '/v1/nothing-here');
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('ERR_NOT_FOUND');
  });

  it('tokens and provisioning tokens', async () => {
    const created = await svc.call('POST', '/v1/tokens', { name: 'oa', role: 'auditor', ttlSeconds: 3600 });
    expect(created.status).toBe(201);
    expectDocumented('/v1/tokens', 'post', created);
    const list = await svc.call('GET', '/v1/tokens');
    expect(list.status).toBe(200);
    expectDocumented('/v1/tokens', 'get', list);
    const revoked = await svc.call('DELETE', `/v1/tokens/${created.body.id}`);
    expect(revoked.status).toBe(200);
    expectDocumented('/v1/tokens/{id}', 'delete', revoked);
    const again = await svc.call('DELETE', `/v1/tokens/${created.body.id}`);
    expect(again.status).toBe(404);
    expectDocumented('/v1/tokens/{id}', 'delete', again);
    const pt = await svc.call('POST', '/v1/provisioning-tokens', { ttlSeconds: 600, uses: 2 }, svc.tokens.operator);
    expect(pt.status).toBe(201);
    expectDocumented('/v1/provisioning-tokens', 'post', pt);
  });

  it('hosts, challenges, activation, introspection (no TPM: the refusals)', async () => {
    const hosts = await svc.call('GET', '/v1/hosts', undefined, svc.tokens.auditor);
    expect(hosts.status).toBe(200);
    expectDocumented('/v1/hosts', 'get', hosts);
    const host = await svc.call('GET', '/v1/hosts/oa-none', undefined, svc.tokens.auditor);
    expect(host.status).toBe(404);
    expectDocumented('/v1/hosts/{hostId}', 'get', host);
    const challenge = await svc.call('POST', '/v1/challenges', { hostId: 'oa-none' }, null);
    expect(challenge.body.error.code).toBe('ERR_HOST_NOT_FOUND');
    expectDocumented('/v1/challenges', 'post', challenge);
    const activate = await svc.call('POST', '/v1/hosts/enroll/oa-none/activate', { secret: 'AAAA' }, null);
    expect(activate.status).toBe(404);
    expectDocumented('/v1/hosts/enroll/{enrollmentId}/activate', 'post', activate);
    const enroll = await svc.call('POST', '/v1/hosts/enroll', { akPublic: 'AAAA', provisioningToken: 'cpt_nope' }, null);
    expect(enroll.status).toBe(403);
    expectDocumented('/v1/hosts/enroll', 'post', enroll);
    const introspect = await svc.call('POST', '/v1/sessions/introspect', { token: 'not.a.jwt' }, null);
    expect(introspect.status).toBe(200);
    expect(introspect.body).toEqual({ active: false });
    expectDocumented('/v1/sessions/introspect', 'post', introspect);
  });

  it('attest, sessions, introspection and hosts with a software AK under policies/attestation/prod-boot.yaml', async () => {
    // The host is written to the store as enrollment would leave it (enrollment itself needs a
    // real EK and TPM2_ActivateCredential: covered by the swtpm e2e tests).
    const ak = new SoftAk('ecc');
    const hostId = 'oa-host';
    const host: HostRecord = {
      id: hostId, status: 'active', akName: ak.name.toString('hex'), akPublic: ak.tpm2bPublic.toString('base64'), akQualifiedName: ak.qualifiedName.toString('hex'),
      ekPublicHash: '11'.repeat(32), ekCertificateSubject: 'CN=oa-ek', ekCertificateIssuer: 'CN=oa-ca', labels: { role: 'enclave-host', pool: 'production' }, policyId: 'prod-boot',
      enrolledAt: new Date().toISOString(), revokedAt: null, lastAttestation: null, lastClock: null,
    };
    await svc.store.tx((t) => t.insertHost(host));
    const policy = svc.service.policies.attestationById('prod-boot')!;
    const refs = policy.doc.pcrs.referenceValues ?? {};
    const pcrs = Array.from({ length: 8 }, (_, i) => (refs[String(i)] ? Buffer.from(refs[String(i)]![0]!, 'hex') : randomBytes(32)));

    const challenge = await svc.call('POST', '/v1/challenges', { hostId }, null);
    expect(challenge.status).toBe(200);
    expectDocumented('/v1/challenges', 'post', challenge);
    const nonce = Buffer.from(challenge.body.nonce, 'base64');
    const attest = await svc.call('POST', `/v1/hosts/${hostId}/attest`, { nonce: challenge.body.nonce, ...ak.quote(nonce, pcrs) }, null);
    expect(attest.status).toBe(200);
    expect(attest.body.status).toBe('affirming');
    expectDocumented('/v1/hosts/{hostId}/attest', 'post', attest);

    const second = await svc.call('POST', '/v1/challenges', { hostId }, null);
    const off = pcrs.map((p, i) => (i === 7 ? randomBytes(32) : p));
    const failed = await svc.call('POST', `/v1/hosts/${hostId}/attest`, { nonce: second.body.nonce, ...ak.quote(Buffer.from(second.body.nonce, 'base64'), off) }, null);
    expect(failed.status).toBe(200);
    expect(failed.body.failures.length).toBeGreaterThan(0);
    expectDocumented('/v1/hosts/{hostId}/attest', 'post', failed);
    const replay = await svc.call('POST', `/v1/hosts/${hostId}/attest`, { nonce: second.body.nonce, ...ak.quote(Buffer.from(second.body.nonce, 'base64'), pcrs) }, null);
    expect(replay.body.error.code).toBe('ERR_NONCE_UNKNOWN');
    expectDocumented('/v1/hosts/{hostId}/attest', 'post', replay);

    const eph = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const ephemeralPublicKey = { kty: 'EC' as const, crv: 'P-256' as const, x: eph.x!, y: eph.y! };
    const third = await svc.call('POST', '/v1/challenges', { hostId }, null);
    const n3 = Buffer.from(third.body.nonce, 'base64');
    const session = await svc.call('POST', '/v1/sessions', {
      hostId, nonce: third.body.nonce, ...ak.quote(sessionExtraData(n3, jwkThumbprint(ephemeralPublicKey)), pcrs), ephemeralPublicKey, audience: 'urn:custos:audience:ledger',
    }, null);
    expect(session.status, JSON.stringify(session.body)).toBe(201);
    expectDocumented('/v1/sessions', 'post', session);
    const active = await svc.call('POST', '/v1/sessions/introspect', { token: session.body.token }, null);
    expect(active.body.active).toBe(true);
    expectDocumented('/v1/sessions/introspect', 'post', active);

    const fourth = await svc.call('POST', '/v1/challenges', { hostId }, null);
    const refused = await svc.call('POST', '/v1/sessions', {
      hostId, nonce: fourth.body.nonce, ...ak.quote(sessionExtraData(Buffer.from(fourth.body.nonce, 'base64'), jwkThumbprint(ephemeralPublicKey)), off), ephemeralPublicKey, audience: 'urn:custos:audience:ledger',
    }, null);
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('ERR_ATTESTATION_FAILED');
    expectDocumented('/v1/sessions', 'post', refused);

    const got = await svc.call('GET', `/v1/hosts/${hostId}`, undefined, svc.tokens.auditor);
    expect(got.body.lastAttestation).toBeDefined();
    expectDocumented('/v1/hosts/{hostId}', 'get', got);
    const listed = await svc.call('GET', '/v1/hosts', undefined, svc.tokens.auditor);
    expect(listed.body.hosts.length).toBe(1);
    expectDocumented('/v1/hosts', 'get', listed);
    const revoked = await svc.call('POST', `/v1/hosts/${hostId}/revoke`, { reason: 'docs' }, svc.tokens.operator);
    expect(revoked.status).toBe(200);
    expect(revoked.body.status).toBe('revoked');
    expectDocumented('/v1/hosts/{hostId}/revoke', 'post', revoked);
    const after = await svc.call('POST', '/v1/sessions/introspect', { token: session.body.token }, null);
    expect(after.body).toEqual({ active: false });
    const noChallenge = await svc.call('POST', '/v1/challenges', { hostId }, null);
    expect(noChallenge.body.error.code).toBe('ERR_HOST_REVOKED');
    expectDocumented('/v1/challenges', 'post', noChallenge);
  });

  it('JWKS, policies, rotation plan and report', async () => {
    // The issuer creates its key on first use (the sessions test above); here it must exist either way.
    expect([201, 409]).toContain((await svc.call('POST', '/v1/keys', { name: 'session-issuer', type: 'ec-p256', purpose: 'sign' })).status);
    const jwks = await svc.call('GET', '/.well-known/jwks.json', undefined, null);
    expect(jwks.status).toBe(200);
    expect(jwks.headers.get('cache-control')).toBe('public, max-age=60');
    expect(jwks.body.keys.length).toBeGreaterThan(0);
    expectDocumented('/.well-known/jwks.json', 'get', jwks);
    const policies = await svc.call('GET', '/v1/policies', undefined, svc.tokens.auditor);
    expect(policies.status).toBe(200);
    expect(policies.body.policies.length).toBeGreaterThan(0);
    expectDocumented('/v1/policies', 'get', policies);
    const plan = await svc.call('GET', '/v1/rotation/plan?days=400', undefined, svc.tokens.auditor);
    expect(plan.status).toBe(200);
    expect(plan.body.steps.length).toBeGreaterThan(0);
    expectDocumented('/v1/rotation/plan', 'get', plan);
    const report = await svc.call('GET', '/v1/rotation/report', undefined, svc.tokens.auditor);
    expect(report.status).toBe(200);
    expectDocumented('/v1/rotation/report', 'get', report);
    const badQuery = await svc.call('GET', '/v1/rotation/plan?weeks=2', undefined, svc.tokens.auditor);
    expect(badQuery.status).toBe(400);
    expectDocumented('/v1/rotation/plan', 'get', badQuery);
  });

  it('audit: events, checkpoints, and every line of the export', async () => {
    const events = await svc.call('GET', '/v1/audit?limit=1000', undefined, svc.tokens.auditor);
    expect(events.status).toBe(200);
    expect(events.body.events.length).toBeGreaterThan(5);
    expectDocumented('/v1/audit', 'get', events);
    expect(await svc.service.checkpointer.run(true)).not.toBeNull();
    const cps = await svc.call('GET', '/v1/audit/checkpoints', undefined, svc.tokens.auditor);
    expect(cps.status).toBe(200);
    expect(cps.body.checkpoints.length).toBeGreaterThan(0);
    expectDocumented('/v1/audit/checkpoints', 'get', cps);
    const keys = await svc.call('GET', '/v1/audit/keys', undefined, svc.tokens.auditor);
    expect(keys.body.keys.length).toBeGreaterThan(0);
    expectDocumented('/v1/audit/keys', 'get', keys);

    const exp = await svc.call('GET', '/v1/audit/export', undefined, svc.tokens.auditor);
    expect(exp.status).toBe(200);
    const media = mediaFor('/v1/audit/export', 'get', 200, exp.headers.get('content-type') ?? '');
    expect(exp.headers.get('content-disposition')).toBe(doc.paths['/v1/audit/export'].get.responses['200'].headers['content-disposition'].schema.const);
    const line = validatorFor(media['x-custos-line-schema']);
    const lines = (exp.body as string).split('\n').filter((l) => l !== '');
    const types = new Set<string>();
    for (const l of lines) {
      const parsed = JSON.parse(l);
      types.add(parsed.type);
      expect(line(parsed), `${l.slice(0, 200)} ${JSON.stringify(line.errors)}`).toBe(true);
    }
    expect([...types].sort()).toEqual(['checkpoint', 'event', 'header', 'key']);
  });

  it('service endpoints', async () => {
    const health = await svc.call('GET', '/healthz', undefined, null);
    expect(health.status).toBe(200);
    expectDocumented('/healthz', 'get', health);
    const ready = await svc.call('GET', '/readyz', undefined, null);
    expect(ready.status).toBe(200);
    expectDocumented('/readyz', 'get', ready);
    const metrics = await svc.call('GET', '/metrics', undefined, null);
    expect(metrics.status).toBe(200);
    mediaFor('/metrics', 'get', 200, metrics.headers.get('content-type') ?? '');
    expect(metrics.body).toMatch(/^# (HELP|TYPE) /m);
  });

  it('the closed check is not vacuous: undocumented members and unknown codes are rejected', () => {
    const key = schemaValidator('Key');
    const good = { name: 'k', type: 'ec-p256', purpose: 'sign', rotationPolicy: null, governingPolicy: 'manual', labels: {}, createdAt: '2026-01-01T00:00:00.000Z', versions: [] };
    expect(key(good)).toBe(true);
    expect(key({ ...good, privateKey: 'x' })).toBe(false);
    expect(key({ ...good, createdAt: 'yesterday' })).toBe(false);
    const error = schemaValidator('Error');
    expect(error({ error: { code: 'ERR_BAD_REQUEST', message: 'm', requestId: 'r' } })).toBe(true);
    expect(error({ error: { code: 'ERR_MADE_UP', message: 'm', requestId: 'r' } })).toBe(false);
  });
});

describe('request schemas agree with the app on what is malformed', () => {
  const CASES: { path: string; template: string; body: Json; token?: 'admin' | 'operator' }[] = [
    { path: '/v1/keys', template: '/v1/keys', body: { name: 'oa-req', type: 'ec-p256' } },
    { path: '/v1/keys', template: '/v1/keys', body: { name: '', type: 'ec-p256', purpose: 'sign' } },
    { path: '/v1/keys', template: '/v1/keys', body: { name: 'Oa_Upper', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' } },
    { path: '/v1/keys', template: '/v1/keys', body: { name: 'oa-req', type: 'ec-p521', purpose: 'sign', rotationPolicy: 'manual' } },
    { path: '/v1/keys', template: '/v1/keys', body: { name: 'oa-req', type: 'ec-p256', purpose: 'wrap', rotationPolicy: 'manual' } },
    { path: '/v1/keys', template: '/v1/keys', body: { name: 'oa-req', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual', labels: { Bad: 'x' } } },
    { path: '/v1/keys', template: '/v1/keys', body: { name: 'oa-req', type: 'ec-p256', purpose: 'sign', rotationPolicy: 'manual' } },
    { path: '/v1/keys/oa-req/sign', template: '/v1/keys/{name}/sign', body: { data: 'AAAA', digest: 'AAAA' } },
    { path: '/v1/keys/oa-req/sign', template: '/v1/keys/{name}/sign', body: { data: 'AAAA', version: 0 } },
    { path: '/v1/keys/oa-req/sign', template: '/v1/keys/{name}/sign', body: { data: 'AAAA', version: 1 } },
    { path: '/v1/keys/oa-req/verify', template: '/v1/keys/{name}/verify', body: { data: 'AAAA' } },
    { path: '/v1/keys/oa-req/rotate', template: '/v1/keys/{name}/rotate', body: { reason: 'x'.repeat(513) } },
    { path: '/v1/tokens', template: '/v1/tokens', body: { name: 't', role: 'root' } },
    { path: '/v1/tokens', template: '/v1/tokens', body: { name: 't', role: 'user', ttlSeconds: 59 } },
    { path: '/v1/tokens', template: '/v1/tokens', body: { name: 't', role: 'user', ttlSeconds: 60 } },
    { path: '/v1/provisioning-tokens', template: '/v1/provisioning-tokens', body: { ttlSeconds: 600, uses: 0 }, token: 'operator' },
    { path: '/v1/provisioning-tokens', template: '/v1/provisioning-tokens', body: { ttlSeconds: 600, uses: 1.5 }, token: 'operator' },
    { path: '/v1/hosts/enroll', template: '/v1/hosts/enroll', body: { ekPublic: 'AAAA' }, token: 'operator' },
    { path: '/v1/hosts/enroll', template: '/v1/hosts/enroll', body: { akPublic: 'AAAA' }, token: 'operator' },
    { path: '/v1/hosts/oa-h/attest', template: '/v1/hosts/{hostId}/attest', body: { nonce: 'AAAA', quote: 'AAAA', signature: 'AAAA', pcrs: { md5: {} } } },
    { path: '/v1/hosts/oa-h/attest', template: '/v1/hosts/{hostId}/attest', body: { nonce: 'AAAA', quote: 'AAAA', signature: 'AAAA', pcrs: { sha256: { '100': '00' } } } },
    { path: '/v1/hosts/oa-h/attest', template: '/v1/hosts/{hostId}/attest', body: { nonce: 'AAAA', quote: 'AAAA', signature: 'AAAA', pcrs: { sha256: { '24': '00' } } } },
    { path: '/v1/hosts/oa-h/attest', template: '/v1/hosts/{hostId}/attest', body: { nonce: 'AAAA', quote: 'AAAA', signature: 'AAAA', pcrs: { sha256: { '7': 'zz' } } } },
    { path: '/v1/hosts/oa-h/attest', template: '/v1/hosts/{hostId}/attest', body: { nonce: 'AAAA', quote: 'AAAA', signature: 'AAAA', pcrs: { sha256: { '7': '00' } } } },
    { path: '/v1/sessions', template: '/v1/sessions', body: { hostId: 'h', nonce: 'AAAA', quote: 'AAAA', signature: 'AAAA', pcrs: {}, ephemeralPublicKey: 'x', audience: 'a' } },
    { path: '/v1/sessions/introspect', template: '/v1/sessions/introspect', body: { token: '' } },
    { path: '/v1/sessions/introspect', template: '/v1/sessions/introspect', body: { token: 'x', extra: true } },
  ];

  // The spec states some limits the server checks after the zod schema (key name pattern, key
  // type, PCR indices and hex): those answer another 400 code (ERR_KEY_TYPE, …), still a 400.
  it('a body the spec rejects is a 400 refusal, and one it accepts is not', async () => {
    let rejected = 0;
    for (const c of CASES) {
      const schema = doc.paths[c.template].post.requestBody.content['application/json'].schema;
      const validSpec = validatorFor(schema)(c.body);
      const r = await svc.call('POST', c.path, c.body, svc.tokens[c.token ?? 'admin']);
      const label = `${c.template} ${JSON.stringify(c.body).slice(0, 80)} → ${r.status} ${JSON.stringify(r.body).slice(0, 160)}`;
      if (validSpec) expect(r.status, label).not.toBe(400);
      else {
        rejected++;
        expect(r.status, label).toBe(400);
        expect(ERROR_TABLE[r.body.error.code as keyof typeof ERROR_TABLE]?.[0], label).toBe(400);
      }
    }
    expect(rejected).toBeGreaterThan(10);
  });
});
