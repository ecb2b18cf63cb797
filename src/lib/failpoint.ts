/**
 * Crash points for crash-safety tests: when CUSTOS_FAILPOINTS (read once at start) names a point,
 * the process kills itself with SIGKILL there — no cleanup, no flushing, exactly like a power cut
 * or an OOM kill. With the variable unset (production) this is one Set lookup on an empty set.
 */
const armed = new Set((process.env.CUSTOS_FAILPOINTS ?? '').split(',').map((s) => s.trim()).filter(Boolean));

export function failpoint(name: string): void {
  if (armed.size === 0 || !armed.has(name)) return;
  process.stderr.write(`FAILPOINT ${name}\n`);
  process.kill(process.pid, 'SIGKILL');
}
