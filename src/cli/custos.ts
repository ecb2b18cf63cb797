import 'reflect-metadata';
import { Command, CommanderError } from 'commander';
import { ConfigError } from '../config/config.js';
import { CustosError } from '../lib/errors.js';
import { CliError, EXIT, type ClientOptions } from './client.js';
import { hsmCommand } from './hsm/init-token.js';
import { auditCommand } from './audit/index.js';
import { hostsCommand } from './hosts/index.js';
import { initCommand } from './init.js';
import { policyCommand } from './policy/lint.js';
import { quoteCommand } from './quote/verify.js';
import { rotationCommand } from './rotation/index.js';
import { keysCommand } from './keys/index.js';
import { serveCommand } from './serve.js';
import { tokensCommand } from './tokens/index.js';

const program = new Command('custos')
  .description('custos: hardware-backed key custody and TPM 2.0 attestation')
  .option('--url <url>', 'server URL (else CUSTOS_URL, else from the configuration)')
  .option('--token-file <file>', 'API token file (else CUSTOS_TOKEN_FILE, else $CUSTOS_STATE_DIR/admin.token)')
  .option('--ca-file <file>', 'CA certificate to trust for an HTTPS server (else CUSTOS_CA_FILE)')
  .option('--json', 'machine-readable output')
  .exitOverride();

const globals = (): ClientOptions => program.opts<ClientOptions>();

program.addCommand(initCommand(globals));
program.addCommand(serveCommand());
program.addCommand(keysCommand(globals));
program.addCommand(tokensCommand(globals));
program.addCommand(hsmCommand());
program.addCommand(quoteCommand());
program.addCommand(hostsCommand(globals));
program.addCommand(auditCommand(globals));
program.addCommand(policyCommand());
program.addCommand(rotationCommand(globals));

// Subcommands built with `new Command()` do not inherit exitOverride: apply it everywhere so that
// every usage error goes through the one exit-code mapping below.
const overrideAll = (c: Command): void => {
  c.exitOverride();
  c.commands.forEach(overrideAll);
};
overrideAll(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    process.exitCode = e.exitCode === 0 ? EXIT.ok : EXIT.usage;
  } else if (e instanceof CliError) {
    process.stderr.write(`custos: ${e.message}\n`);
    process.exitCode = e.exitCode;
  } else if (e instanceof ConfigError) {
    process.stderr.write(`custos: ${e.message}\n`);
    process.exitCode = EXIT.usage;
  } else if (e instanceof CustosError) {
    process.stderr.write(`custos: ${e.code}: ${e.message}\n`);
    // Invalid policy files and configuration stop a command before it does anything: usage class.
    const config = e.code === 'ERR_POLICY_INVALID' || e.code === 'ERR_CONFIG' || e.code === 'ERR_NOT_SUPPORTED';
    process.exitCode = config ? EXIT.usage : e.status >= 500 ? EXIT.unavailable : EXIT.refused;
  } else {
    process.stderr.write(`custos: ${(e as Error).message}\n`);
    process.exitCode = EXIT.refused;
  }
}
