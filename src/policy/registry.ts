/**
 * The policy kinds custos validates, each with its JSON Schema and optional semantic checks.
 * Feature modules register their kind once at import; `custos policy lint` and start-up loading go
 * through this table so that no caller enumerates kinds or schemas again.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CustosError } from '../lib/errors.js';
import {
  POLICY_KIND_DIRS,
  compilePolicySchema,
  listPolicyFiles,
  loadPolicyDir,
  type LoadedPolicy,
  type PolicyKind,
  type PolicySemanticCheck,
  type PolicySetCheck,
} from './loader.js';
import { PolicyError, formatPolicyProblem, type PolicyProblem } from './policy-error.js';

export interface PolicyKindEntry<T = unknown> {
  readonly kind: PolicyKind;
  readonly schema: object;
  readonly semanticCheck?: PolicySemanticCheck<T> | undefined;
  readonly setCheck?: PolicySetCheck<T> | undefined;
}

const kinds = new Map<PolicyKind, PolicyKindEntry>();

/**
 * Register the schema (and optional per-file and cross-file checks) of a policy kind. The schema
 * is compiled now so that a broken schema fails at start-up, not at the first file. Registering a
 * kind again replaces it (tests, hot reload).
 */
export function registerPolicyKind<T>(
  kind: PolicyKind,
  schema: object,
  semanticCheck?: PolicySemanticCheck<T>,
  setCheck?: PolicySetCheck<T>,
): void {
  try {
    compilePolicySchema(schema);
  } catch (cause) {
    throw new CustosError('ERR_CONFIG', `the ${kind} policy schema does not compile`, { cause });
  }
  kinds.set(kind, { kind, schema, semanticCheck, setCheck } as PolicyKindEntry);
}

/** The registered entry of a kind, or undefined. */
export function policyKindEntry(kind: PolicyKind): PolicyKindEntry | undefined {
  return kinds.get(kind);
}

/** Kinds registered so far. */
export function registeredPolicyKinds(): PolicyKind[] {
  return [...kinds.keys()];
}

/**
 * Load every policy of a registered kind from `<root>/<kind folder>`. A missing folder means no
 * policies of that kind (empty list); an unregistered kind is a configuration error.
 * @throws PolicyError (ERR_POLICY_INVALID), CustosError (ERR_CONFIG)
 */
export function loadRegisteredPolicies<T>(root: string, kind: PolicyKind): LoadedPolicy<T>[] {
  const entry = kinds.get(kind) as PolicyKindEntry<T> | undefined;
  if (!entry) throw new CustosError('ERR_CONFIG', `no schema is registered for ${kind} policies`);
  const dir = join(root, POLICY_KIND_DIRS[kind]);
  if (!existsSync(dir)) return [];
  return loadPolicyDir<T>(dir, kind, entry.schema, { semanticCheck: entry.semanticCheck, setCheck: entry.setCheck });
}

export interface PolicyLintResult {
  readonly ok: boolean;
  /** Every problem, in file order within each kind. */
  readonly errors: readonly PolicyProblem[];
  /** Policies that loaded, per kind (only kinds whose files all passed). */
  readonly loaded: readonly { readonly kind: PolicyKind; readonly id: string; readonly file: string; readonly sha256: string }[];
}

/**
 * Validate every policy under `root` (its `rotation/`, `attestation/` and `sessions/` folders)
 * against the registered schemas and checks, offline. A folder holding policy files of a kind
 * with no registered schema is reported rather than skipped: an unchecked policy must not pass lint.
 */
export function lintPolicies(root: string): PolicyLintResult {
  const errors: PolicyProblem[] = [];
  const loaded: { kind: PolicyKind; id: string; file: string; sha256: string }[] = [];
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    return { ok: false, errors: [{ file: root, line: 0, column: 0, reason: 'not a directory', path: '' }], loaded };
  }
  for (const kind of Object.keys(POLICY_KIND_DIRS) as PolicyKind[]) {
    const dir = join(root, POLICY_KIND_DIRS[kind]);
    if (!existsSync(dir)) continue;
    if (!kinds.has(kind)) {
      if (listPolicyFiles(dir).length === 0) continue;
      errors.push({ file: dir, line: 0, column: 0, reason: `no schema is registered for ${kind} policies`, path: '' });
      continue;
    }
    try {
      for (const p of loadRegisteredPolicies(root, kind)) loaded.push({ kind, id: p.id, file: p.file, sha256: p.sha256 });
    } catch (e) {
      if (e instanceof PolicyError) errors.push(...e.problems);
      else throw e;
    }
  }
  return { ok: errors.length === 0, errors, loaded };
}

export { formatPolicyProblem };
