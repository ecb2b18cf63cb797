/** Entry point of the `custos-agent` binary (bin/custos-agent.js). */
import { runAgent } from './program.js';

process.exitCode = await runAgent(process.argv);
