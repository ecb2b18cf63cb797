import { Command } from 'commander';
import { apiClient, output, type ClientOptions } from '../client.js';

interface PlanOut {
  days: number;
  steps: { key: string; version: number | null; action: string; dueAt: string; reason: string; policyId: string; destroyAt?: string }[];
  unresolved: { key: string; code: string; message: string }[];
}

/** `custos rotation plan`: what the scheduler will do, and when (GET /v1/rotation/plan). */
export function rotationCommand(globals: () => ClientOptions): Command {
  const rotation = new Command('rotation').description('rotation schedules');
  rotation.command('plan')
    .description('every rotation, activation, deactivation and destruction due in the next N days')
    .option('--days <n>', 'horizon in days', (v) => Number(v), 30)
    .action(async (o: { days: number }) => {
      const g = globals();
      const p = await apiClient(g).call<PlanOut>('GET', `/v1/rotation/plan?days=${encodeURIComponent(String(o.days))}`);
      output(g.json, p, () => {
        const lines = p.steps.map((s) => `${s.dueAt}  ${s.key.padEnd(24)} ${s.version === null ? '   ' : `v${s.version}`.padEnd(3)} ${s.action.padEnd(18)} ${s.policyId}  ${s.reason}`);
        if (lines.length === 0) lines.push(`nothing due in the next ${p.days} days`);
        for (const u of p.unresolved) lines.push(`UNRESOLVED ${u.key}: ${u.code} ${u.message}`);
        return lines.join('\n');
      });
      if (p.unresolved.length > 0) process.exitCode = 1;
    });
  return rotation;
}
