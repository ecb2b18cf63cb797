/**
 * `custos policy lint [DIR]`: validates every policy file under DIR (default `policies`) offline —
 * rotation, attestation and session policies against their schemas and semantic checks — and
 * prints one `file:line:column: path: reason` line per problem. Exit 0 when clean, 1 otherwise;
 * usable as a pre-merge check.
 */
import { Command } from 'commander';
import { formatPolicyProblem } from '../../policy/policy-error.js';
import { registerAllPolicyKinds } from '../../policy/policy-service.js';
import { lintPolicies, type PolicyLintResult } from '../../policy/registry.js';

export interface PolicyLintOutput {
  readonly exitCode: 0 | 1;
  readonly stdout: string;
  readonly result: PolicyLintResult;
}

/** Lint a policy folder and render the report (text or JSON). */
export function runPolicyLint(dir: string, opts: { json?: boolean } = {}): PolicyLintOutput {
  registerAllPolicyKinds();
  const result = lintPolicies(dir);
  let stdout: string;
  if (opts.json) {
    stdout = JSON.stringify({ ok: result.ok, errors: result.errors, policies: result.loaded }, null, 2) + '\n';
  } else if (result.ok) {
    stdout = result.loaded.map((p) => `ok ${p.kind} ${p.id} ${p.file} sha256:${p.sha256}\n`).join('') + `${result.loaded.length} policies valid\n`;
  } else {
    stdout = result.errors.map((e) => formatPolicyProblem(e) + '\n').join('') + `${result.errors.length} problem(s)\n`;
  }
  return { exitCode: result.ok ? 0 : 1, stdout, result };
}

/** The `lint` verb (add it under a `policy` command). */
export function policyLintCommand(): Command {
  return new Command('lint')
    .description('validate policy files offline (rotation/, attestation/, sessions/ under DIR)')
    .argument('[dir]', 'policy folder', 'policies')
    .option('--json', 'machine-readable output')
    .action((dir: string, _opts: unknown, cmd: Command) => {
      const out = runPolicyLint(dir, { json: Boolean(cmd.optsWithGlobals<{ json?: boolean }>().json) });
      process.stdout.write(out.stdout);
      process.exitCode = out.exitCode;
    });
}

/** `custos policy …` with its verbs. */
export function policyCommand(): Command {
  return new Command('policy').description('policy files').addCommand(policyLintCommand());
}
