import { createRequire } from 'node:module';
import { pino, type Logger } from 'pino';

/**
 * JSON lines to stdout (for journald and log shippers); human-readable when stdout is a terminal.
 * pino-pretty runs in-process as a stream, not as a worker-thread transport, and is loaded only
 * when needed, to keep start-up and memory small on a Pi.
 */
export function createLogger(opts: { level?: string; name?: string; pretty?: boolean } = {}): Logger {
  const usePretty = opts.pretty ?? Boolean(process.stdout.isTTY);
  const base = { level: opts.level ?? 'info', name: opts.name ?? 'rackguard', base: { pid: process.pid } };
  if (!usePretty) return pino(base);
  const pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
  return pino(base, pretty({ colorize: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', sync: true }));
}
