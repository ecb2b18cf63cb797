/**
 * Small wrappers over tpm2-tools for tests that drive a swtpm. swtpm has no resource manager,
 * so every step flushes transient objects and sessions it leaves behind (TPM_RC_OBJECT_MEMORY
 * after three otherwise).
 */
import { execFile } from 'node:child_process';

/** Output of one tpm2 tool run. */
export interface Tpm2Result {
  readonly stdout: string;
  readonly stderr: string;
}

/** Error thrown when a tool exits non-zero; `stderr` holds the tool's message. */
export class Tpm2ToolError extends Error {
  constructor(
    readonly tool: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`${tool} failed (${exitCode}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
    this.name = 'Tpm2ToolError';
  }
}

/** Runs `tool args…` with the given environment (TPM2TOOLS_TCTI must be set). */
export function tpm2Raw(env: NodeJS.ProcessEnv, tool: string, args: string[], cwd?: string): Promise<Tpm2Result> {
  return new Promise((res, rej) => {
    execFile(tool, args, { env, cwd, maxBuffer: 16 * 1024 * 1024, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) {
        const code = typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null;
        rej(new Tpm2ToolError(tool, code, String(stderr)));
      } else res({ stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** Flushes every transient object and every loaded/saved session. */
export async function flushAll(env: NodeJS.ProcessEnv): Promise<void> {
  await tpm2Raw(env, 'tpm2_flushcontext', ['-t']);
  await tpm2Raw(env, 'tpm2_flushcontext', ['-l']).catch(() => undefined);
  await tpm2Raw(env, 'tpm2_flushcontext', ['-s']).catch(() => undefined);
}

/** Runs one tool step and then flushes transient objects, whether the step worked or not. */
export async function tpm2(env: NodeJS.ProcessEnv, tool: string, args: string[], cwd?: string): Promise<Tpm2Result> {
  try {
    return await tpm2Raw(env, tool, args, cwd);
  } finally {
    await flushAll(env);
  }
}

/**
 * Activates a credential with the EK (`ek.ctx`) and AK (`ak.ctx`) contexts in `cwd`.
 * The RSA EK (policy A, userWithAuth clear) needs a policy session with PolicySecret(endorsement);
 * the P-384 high-range EK has userWithAuth set and takes plain empty-password authorization.
 * `policySession` overrides the choice (the low-range P-256 EK of `tpm2_createek -G ecc` also
 * needs the policy session).
 */
export async function activateCredential(
  env: NodeJS.ProcessEnv,
  cwd: string,
  opts: { ekType: 'rsa' | 'ecc'; ekCtx: string; akCtx: string; credentialFile: string; outFile: string; policySession?: boolean },
): Promise<void> {
  try {
    if (opts.policySession ?? opts.ekType === 'rsa') {
      await tpm2Raw(env, 'tpm2_startauthsession', ['--policy-session', '-S', 'session.ctx'], cwd);
      await tpm2Raw(env, 'tpm2_policysecret', ['-S', 'session.ctx', '-c', 'e'], cwd);
      await tpm2Raw(env, 'tpm2_activatecredential', ['-c', opts.akCtx, '-C', opts.ekCtx, '-i', opts.credentialFile, '-o', opts.outFile, '-P', 'session:session.ctx'], cwd);
    } else {
      await tpm2Raw(env, 'tpm2_activatecredential', ['-c', opts.akCtx, '-C', opts.ekCtx, '-i', opts.credentialFile, '-o', opts.outFile], cwd);
    }
  } finally {
    await flushAll(env);
  }
}
