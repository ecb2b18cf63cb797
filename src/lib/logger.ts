import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * pino JSON logs. Redaction is a second line of defence: secrets are never passed to the logger
 * in the first place, but any field with one of these names is censored wherever it appears.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  '*.pin', '*.soPin', '*.token', '*.secret', '*.sessionKey', '*.provisioningToken', '*.plaintext', '*.password',
  'pin', 'soPin', 'token', 'secret', 'sessionKey', 'provisioningToken', 'plaintext', 'password',
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    { level, base: { service: 'custos' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, timestamp: pino.stdTimeFunctions.isoTime },
    destination ?? pino.destination({ fd: 2, sync: false }),
  );
}
