import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The package root (the folder holding package.json), found from this module's location so that it
 * works both from agent/*.ts under vitest and from dist/agent/*.js in production.
 */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'config'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('rackguard: cannot find the package root from ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export function bundledProfilesDir(): string {
  return join(packageRoot(), 'config', 'profiles');
}
