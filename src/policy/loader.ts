/**
 * Loading policy files (YAML or JSON) with errors that point at a file, line and column.
 *
 * Every file is parsed with `yaml` keeping source positions (JSON is parsed by the same parser,
 * being a subset of YAML 1.2), validated against a JSON Schema with ajv (strict mode, all errors,
 * formats from ajv-formats plus `iso8601-duration` and `utc-time-of-day`), and then by an optional
 * semantic check. Every failure becomes a {@link PolicyError} whose line and column are those of the
 * YAML node the schema or check complained about.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsImport from 'ajv-formats';
import { LineCounter, isMap, isSeq, isScalar, isPair, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import { isDuration } from '../rotation/durations.js';
import { PolicyError, type PolicyProblem } from './policy-error.js';
import { sha256hex } from '../lib/encoding.js';

/** The policy families custos knows; each lives in its own folder under `policies/`. */
export type PolicyKind = 'rotation' | 'attestation' | 'session';

/** Folder (under the policies root) that holds each kind. */
export const POLICY_KIND_DIRS: Readonly<Record<PolicyKind, string>> = {
  rotation: 'rotation',
  attestation: 'attestation',
  session: 'sessions',
};

export interface LoadedPolicy<T> {
  readonly id: string;
  readonly version: string | number;
  readonly kind: PolicyKind;
  /** The path the file was read from, as given to the loader. */
  readonly file: string;
  /** Hex SHA-256 of the file bytes, so reviewers can match a loaded policy to a git blob. */
  readonly sha256: string;
  readonly doc: T;
}

/** Path inside a policy document: property names and array indexes. */
export type PolicyPath = readonly (string | number)[];

/** One semantic problem; the loader turns `path` into a line and column. */
export interface PolicyIssue {
  readonly path: PolicyPath;
  readonly reason: string;
}

/** Semantic check of one document that passed its schema. Returns every problem found. */
export type PolicySemanticCheck<T> = (doc: T) => readonly PolicyIssue[];

/** Check across all files of one kind (overlaps, cross-references); `index` names the policy. */
export type PolicySetCheck<T> = (policies: readonly LoadedPolicy<T>[]) => readonly (PolicyIssue & { readonly index: number })[];

export interface PolicyLoadOptions<T> {
  readonly semanticCheck?: PolicySemanticCheck<T> | undefined;
  readonly setCheck?: PolicySetCheck<T> | undefined;
}

const addFormats = addFormatsImport as unknown as (ajv: Ajv) => Ajv;

const TIME_OF_DAY_RE = /^(?:[01]\d|2[0-3]):[0-5]\d$/;

function newAjv(): Ajv {
  const ajv = new Ajv({ strict: true, allErrors: true, allowUnionTypes: true });
  addFormats(ajv);
  ajv.addFormat('iso8601-duration', { type: 'string', validate: isDuration });
  ajv.addFormat('utc-time-of-day', { type: 'string', validate: (s: string) => TIME_OF_DAY_RE.test(s) });
  return ajv;
}

const FORMAT_WORDS: Record<string, string> = {
  'iso8601-duration': 'ISO 8601 duration (e.g. P90D, PT12H)',
  'utc-time-of-day': 'UTC time of day HH:MM',
};

let sharedAjv: Ajv | undefined;
const compiled = new WeakMap<object, ValidateFunction>();

/** Compile (once per schema object) with the shared ajv instance; a bad schema is a config error. */
export function compilePolicySchema(schema: object): ValidateFunction {
  let v = compiled.get(schema);
  if (!v) {
    sharedAjv ??= newAjv();
    v = sharedAjv.compile(schema);
    compiled.set(schema, v);
  }
  return v;
}

/** A parsed file: its document and a way to find where any path lies in the source. */
interface ParsedSource {
  readonly file: string;
  readonly bytes: Buffer;
  readonly doc: Document.Parsed;
  readonly lines: LineCounter;
}

function position(src: ParsedSource, offset: number): { line: number; column: number } {
  const p = src.lines.linePos(offset);
  return { line: p.line, column: p.col };
}

function pointer(path: PolicyPath): string {
  return path.map((s) => '/' + String(s).replaceAll('~', '~0').replaceAll('/', '~1')).join('');
}

function parsePointer(p: string): string[] {
  if (p === '') return [];
  return p.slice(1).split('/').map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
}

/**
 * Find the source offset of the node at `path`, or of its deepest existing ancestor. With
 * `keyOf`, point at that property's key inside the map found at `path` (unknown property errors).
 */
function locate(src: ParsedSource, path: PolicyPath, keyOf?: string): { line: number; column: number } {
  let node: unknown = src.doc.contents;
  let offset = src.doc.contents?.range?.[0] ?? 0;
  const steps: (string | number)[] = [...path];
  for (const step of steps) {
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((it) => isPair(it) && isScalar(it.key) && String(it.key.value) === String(step));
      if (pair) {
        next = pair.value;
        // A key with no value (`foo:`) has a null value node; fall back to the key's position.
        const keyNode = pair.key as YamlNode | null;
        const valueNode = pair.value as YamlNode | null;
        offset = valueNode?.range?.[0] ?? keyNode?.range?.[0] ?? offset;
      }
    } else if (isSeq(node)) {
      const item = node.items[Number(step)] as YamlNode | undefined;
      if (item) {
        next = item;
        offset = item.range?.[0] ?? offset;
      }
    }
    if (next === undefined) break;
    node = next;
  }
  if (keyOf !== undefined && isMap(node)) {
    const pair = node.items.find((it) => isPair(it) && isScalar(it.key) && String(it.key.value) === keyOf);
    const k = pair?.key as YamlNode | undefined;
    if (k?.range) offset = k.range[0];
  }
  return position(src, offset);
}

function describeAjvError(e: ErrorObject): { path: string[]; reason: string; keyOf?: string } {
  const path = parsePointer(e.instancePath);
  switch (e.keyword) {
    case 'additionalProperties': {
      const prop = String((e.params as { additionalProperty: string }).additionalProperty);
      return { path: [...path, prop], reason: `unknown field "${prop}"`, keyOf: prop };
    }
    case 'required': {
      const prop = String((e.params as { missingProperty: string }).missingProperty);
      return { path, reason: `missing required field "${prop}"` };
    }
    case 'format': {
      const f = String((e.params as { format: string }).format);
      return { path, reason: `must match ${FORMAT_WORDS[f] ?? `format "${f}"`}` };
    }
    case 'enum': {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ');
      return { path, reason: `must be one of ${allowed}` };
    }
    default:
      return { path, reason: e.message ?? `fails ${e.keyword}` };
  }
}

function problemAt(src: ParsedSource, path: PolicyPath, reason: string, keyOf?: string): PolicyProblem {
  const { line, column } = locate(src, keyOf === undefined ? path : path.slice(0, -1), keyOf);
  return { file: src.file, line, column, reason, path: pointer(path) };
}

function parseSource(file: string): ParsedSource {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (cause) {
    throw new PolicyError([{ file, line: 0, column: 0, reason: 'cannot read file', path: '' }], { cause });
  }
  const lines = new LineCounter();
  // YAML 1.2 core schema: no implicit timestamps or sexagesimal numbers, so "02:00" stays a
  // string; unique keys, because a repeated key silently overriding an earlier one hides intent.
  const doc = parseDocument(bytes.toString('utf8'), { lineCounter: lines, uniqueKeys: true, prettyErrors: false, strict: true });
  const src: ParsedSource = { file, bytes, doc, lines };
  const errs = [...doc.errors];
  if (errs.length > 0) {
    throw new PolicyError(
      errs.map((e) => {
        const { line, column } = position(src, e.pos[0]);
        return { file, line, column, reason: `YAML: ${e.message.split('\n')[0] ?? e.code}`, path: '' };
      }),
    );
  }
  return src;
}

function toValue(src: ParsedSource): unknown {
  try {
    // Aliases are allowed for reuse inside a file, but bounded against "billion laughs".
    return src.doc.toJS({ maxAliasCount: 100 });
  } catch (cause) {
    throw new PolicyError([{ file: src.file, line: 1, column: 1, reason: `YAML: ${(cause as Error).message}`, path: '' }], { cause });
  }
}

interface Loaded<T> {
  readonly policy: LoadedPolicy<T>;
  readonly src: ParsedSource;
}

function loadOne<T>(file: string, kind: PolicyKind, schema: object, semanticCheck?: PolicySemanticCheck<T>): Loaded<T> {
  const validate = compilePolicySchema(schema);
  const src = parseSource(file);
  const value = toValue(src);
  if (!validate(value)) {
    // An `if` error only says that a then/else branch failed; the branch's own errors say why.
    const problems = (validate.errors ?? []).filter((e) => e.keyword !== 'if').map((e) => {
      const d = describeAjvError(e);
      return problemAt(src, d.path, d.reason, d.keyOf);
    });
    throw new PolicyError(problems.length > 0 ? problems : [problemAt(src, [], 'does not match the schema')]);
  }
  const rec = value as Record<string, unknown>;
  const id = rec['id'];
  const version = rec['version'];
  if (typeof id !== 'string' || id === '') throw new PolicyError([problemAt(src, ['id'], 'every policy needs a string "id"')]);
  if (typeof version !== 'string' && typeof version !== 'number') {
    throw new PolicyError([problemAt(src, ['version'], 'every policy needs a "version" (string or number)')]);
  }
  const doc = value as T;
  if (semanticCheck) {
    const issues = semanticCheck(doc);
    if (issues.length > 0) throw new PolicyError(issues.map((i) => problemAt(src, i.path, i.reason)));
  }
  const sha256 = sha256hex(src.bytes);
  return { policy: { id, version, kind, file, sha256, doc }, src };
}

/**
 * Load and validate one policy file.
 * @throws PolicyError (ERR_POLICY_INVALID) naming file, line, column and reason.
 */
export function loadPolicyFile<T>(path: string, kind: PolicyKind, schema: object, options?: PolicyLoadOptions<T>): LoadedPolicy<T> {
  const one = loadOne<T>(path, kind, schema, options?.semanticCheck);
  if (options?.setCheck) {
    const issues = options.setCheck([one.policy]);
    if (issues.length > 0) throw new PolicyError(issues.map((i) => problemAt(one.src, i.path, i.reason)));
  }
  return one.policy;
}

const POLICY_FILE_RE = /\.(?:ya?ml|json)$/i;

/** The policy files directly inside `dir`, sorted by name (byte order, locale-independent). */
export function listPolicyFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => POLICY_FILE_RE.test(n) && !n.startsWith('.'))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((n) => join(dir, n))
    .filter((p) => statSync(p).isFile());
}

/**
 * Load every `*.yaml`, `*.yml` and `*.json` file of a folder (sorted by name). Duplicate ids across
 * files, and whatever the set check finds, are errors. Problems of all files are collected so that
 * one run reports everything.
 * @throws PolicyError (ERR_POLICY_INVALID) with every problem found.
 */
export function loadPolicyDir<T>(dir: string, kind: PolicyKind, schema: object, options?: PolicyLoadOptions<T>): LoadedPolicy<T>[] {
  const problems: PolicyProblem[] = [];
  const loaded: Loaded<T>[] = [];
  for (const file of listPolicyFiles(dir)) {
    try {
      loaded.push(loadOne<T>(file, kind, schema, options?.semanticCheck));
    } catch (e) {
      if (e instanceof PolicyError) problems.push(...e.problems);
      else throw e;
    }
  }
  const seen = new Map<string, Loaded<T>>();
  for (const l of loaded) {
    const prev = seen.get(l.policy.id);
    if (prev) {
      problems.push(problemAt(l.src, ['id'], `duplicate policy id "${l.policy.id}" (also in ${basename(prev.policy.file)})`));
    } else {
      seen.set(l.policy.id, l);
    }
  }
  if (options?.setCheck && problems.length === 0) {
    const policies = loaded.map((l) => l.policy);
    for (const i of options.setCheck(policies)) {
      const l = loaded[i.index];
      if (l) problems.push(problemAt(l.src, i.path, i.reason));
    }
  }
  if (problems.length > 0) throw new PolicyError(problems);
  return loaded.map((l) => l.policy);
}
