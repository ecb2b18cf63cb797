import { CustosError } from '../lib/errors.js';

/** Where and why a policy file is invalid. `path` is the JSON pointer of the offending value. */
export interface PolicyProblem {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  readonly reason: string;
  readonly path: string;
}

/** Render a problem the way compilers do: `file:line:column: path: reason`. */
export function formatPolicyProblem(p: PolicyProblem): string {
  const where = p.path === '' ? '' : `${p.path.slice(1).replaceAll('/', '.')}: `;
  return `${p.file}:${p.line}:${p.column}: ${where}${p.reason}`;
}

/**
 * A policy file failed to parse, to validate against its schema, or a semantic check. The first
 * problem is in `details`; every problem found in the file is in `problems`.
 */
export class PolicyError extends CustosError {
  readonly problems: readonly PolicyProblem[];

  constructor(problems: readonly PolicyProblem[], options?: { cause?: unknown }) {
    const first = problems[0];
    if (!first) throw new TypeError('PolicyError needs at least one problem');
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : '';
    super('ERR_POLICY_INVALID', formatPolicyProblem(first) + more, {
      ...(options?.cause === undefined ? {} : { cause: options.cause }),
      details: { file: first.file, line: first.line, column: first.column, reason: first.reason, path: first.path },
    });
    this.name = 'PolicyError';
    this.problems = problems;
  }
}
