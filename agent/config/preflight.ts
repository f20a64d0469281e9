/**
 * `rackguard check-config` checks beyond the schema: things on this machine that the agent would
 * only find out at run time. They are not part of loading (agent/config/load.ts): the agent itself
 * starts anyway and retries the outbox in the background (it never refuses to start because of its
 * buffer), but an operator running check-config wants to hear about them now.
 *
 * - errors: wrong whatever user runs the agent (the outbox path is a directory, a FIFO, a device;
 *   its parent is a file);
 * - warnings: may be right for the service though not for this shell (the directory does not exist
 *   yet: systemd's StateDirectory= creates /var/lib/rackguard at start; it is not writable by the
 *   user running check-config, who is often not the service user).
 */
import { accessSync, constants, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Config } from './model.js';
import { describeFileType } from './read-file.js';

export interface PreflightReport {
  errors: string[];
  warnings: string[];
}

export function preflightChecks(config: Config): PreflightReport {
  const report: PreflightReport = { errors: [], warnings: [] };
  const outbox = config.outputs?.outbox;
  if (outbox) checkOutboxPath(outbox.path, report);
  return report;
}

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

function checkOutboxPath(path: string, report: PreflightReport): void {
  const where = 'outputs.outbox.path';
  let exists = false;
  try {
    const st = statSync(path);
    exists = true;
    if (st.isDirectory()) {
      report.errors.push(`${where}: ${path} is a directory; the outbox is a file (for example ${path.replace(/\/+$/, '')}/outbox.db)`);
      return;
    }
    if (!st.isFile()) {
      report.errors.push(`${where}: ${path} is ${describeFileType(st)}; the outbox must be a regular file`);
      return;
    }
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOTDIR') {
      report.errors.push(`${where}: ${path}: a part of the path is a file, not a directory`);
      return;
    }
    if (code !== 'ENOENT') {
      report.warnings.push(`${where}: ${path} cannot be checked (${code ?? (err as Error).message})`);
      return;
    }
  }
  const dir = dirname(path);
  try {
    const st = statSync(dir);
    if (!st.isDirectory()) {
      report.errors.push(`${where}: ${dir} (the outbox's directory) is ${describeFileType(st)}`);
      return;
    }
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOTDIR') report.errors.push(`${where}: ${dir}: a part of the path is a file, not a directory`);
    else if (code === 'ENOENT') report.warnings.push(`${where}: the directory ${dir} does not exist (yet); the agent will keep trying to open the outbox until it does`);
    else report.warnings.push(`${where}: ${dir} cannot be checked (${code ?? (err as Error).message})`);
    return;
  }
  // SQLite also writes -wal and -shm files next to the database: the directory must be writable.
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    report.warnings.push(`${where}: the directory ${dir} is not writable by this user (uid ${process.getuid?.() ?? '?'}); the agent's user must be able to create files there`);
    return;
  }
  if (exists) {
    try {
      accessSync(path, constants.R_OK | constants.W_OK);
    } catch {
      report.warnings.push(`${where}: ${path} is not readable and writable by this user (uid ${process.getuid?.() ?? '?'})`);
    }
  }
}
