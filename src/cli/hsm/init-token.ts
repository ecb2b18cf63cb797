import { readFileSync, statSync } from 'node:fs';
import { Command } from 'commander';
import { CustosError } from '../../lib/errors.js';
import { initToken } from '../../hsm/pkcs11/init-token.js';

/** Reads a PIN file: the first line, without its line ending. PINs never come from argv. */
export function readPinFile(path: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CustosError('ERR_CONFIG', `cannot read the ${what} file ${path}`, { cause: e });
  }
  if ((statSync(path).mode & 0o077) !== 0) {
    process.stderr.write(`custos: warning: ${what} file ${path} is readable by other users (chmod 600)\n`);
  }
  const pin = (text.split(/\r?\n/)[0] ?? '').trim();
  if (pin === '') throw new CustosError('ERR_CONFIG', `the ${what} file ${path} is empty`);
  return pin;
}

/**
 * `custos hsm init-token --module M --label L --pin-file F --so-pin-file F`: initializes a free
 * token slot through PKCS#11 (no PIN on any command line); does nothing when the label exists.
 */
export function initTokenCommand(): Command {
  return new Command('init-token')
    .description('initialize a PKCS#11 token (idempotent: an existing label is left alone)')
    .requiredOption('--module <path>', 'PKCS#11 module (.so)')
    .requiredOption('--label <label>', 'token label (at most 32 bytes)')
    .requiredOption('--pin-file <file>', 'file holding the user PIN')
    .requiredOption('--so-pin-file <file>', 'file holding the security officer PIN')
    .action(async (opts: { module: string; label: string; pinFile: string; soPinFile: string }) => {
      const pin = readPinFile(opts.pinFile, 'PIN');
      const soPin = readPinFile(opts.soPinFile, 'SO PIN');
      const { created } = await initToken({ module: opts.module, label: opts.label, pin, soPin });
      process.stdout.write(created ? `initialized token ${JSON.stringify(opts.label)}\n` : `token ${JSON.stringify(opts.label)} already exists\n`);
    });
}

/** `custos hsm …` with its subcommands. */
export function hsmCommand(): Command {
  return new Command('hsm').description('HSM (PKCS#11) administration').addCommand(initTokenCommand());
}
