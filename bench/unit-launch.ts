/**
 * How systemd/rackguard.service starts node: the flags between `/usr/bin/node` and the script in its
 * ExecStart, and its `Environment=` assignments. The benchmarks that measure the agent as a process
 * run it this way, so that their memory figures are the installed service's, not a guess of them.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../agent/paths.js';

export interface UnitLaunch {
  nodeFlags: string[];
  env: Record<string, string>;
}

export function unitLaunch(unit = 'rackguard.service'): UnitLaunch {
  const file = join(packageRoot(), 'systemd', unit);
  const lines = readFileSync(file, 'utf8').split('\n').map((l) => l.trim());
  const exec = lines.find((l) => l.startsWith('ExecStart='));
  if (!exec) throw new Error(`${file}: no ExecStart=`);
  const words = exec.slice('ExecStart='.length).split(/\s+/);
  const script = words.findIndex((w) => w.endsWith('.js'));
  if (!words[0]?.endsWith('/node') || script < 1) throw new Error(`${file}: ExecStart= does not run node on a script: ${exec}`);
  const env: Record<string, string> = {};
  for (const l of lines.filter((x) => x.startsWith('Environment='))) {
    for (const pair of l.slice('Environment='.length).split(/\s+/)) {
      const eq = pair.indexOf('=');
      if (eq > 0) env[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  return { nodeFlags: words.slice(1, script), env };
}
