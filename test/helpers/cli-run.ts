/** Small shared pieces of the tests that drive the built CLI and give it shell scripts as hooks. */
import { spawn } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Writes an executable `#!/bin/sh` script `name` into `dir`; returns its path. */
export function writeScript(dir: string, name: string, body: string): string {
  const file = join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

/**
 * Runs `node <main> …args` in `cwd` to its exit, asynchronously (a server the CLI talks to may answer
 * from this very process); killed after 60 s.
 */
export function runCli(main: string, cwd: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [main, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The rows of `rackguard actions test`'s table as [group, host, via, status]. */
export const tableRows = (stdout: string): string[][] =>
  stdout
    .split('\n')
    .filter((l) => /^g\d /.test(l))
    .map((l) => l.split(/\s+/).slice(0, 4));
