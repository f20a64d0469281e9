import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../agent/paths.js';

export type Figures = Record<string, number | string | boolean | null>;

/**
 * Merges one suite's figures into bench/results/latest.json under `key` (default: the suite's name),
 * keeping the other keys. Two suites may share a key (actions and actions-bmc both report under
 * `actions`): each keeps the other's figures.
 */
export function writeFigures(suite: string, figures: Figures, key = suite): string {
  const dir = join(packageRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'latest.json');
  let all: Record<string, unknown> = {};
  try {
    all = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    // first run, or a damaged file: start over
  }
  const previous = key === suite ? {} : ((all[key] as Record<string, unknown> | undefined) ?? {});
  all[key] = { ...previous, ...figures, measured_at: new Date().toISOString(), node: process.version };
  writeFileSync(file, `${JSON.stringify(all, null, 2)}\n`);
  return file;
}

export function printFigures(suite: string, figures: Figures): void {
  const width = Math.max(...Object.keys(figures).map((k) => k.length + suite.length + 1));
  for (const [k, v] of Object.entries(figures)) process.stdout.write(`${`${suite}.${k}`.padEnd(width)}  ${String(v)}\n`);
}
