import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh private directory under the OS temp dir, owned by one test. */
export interface TempDir {
  /** Absolute path of the directory (mode 0700, created by mkdtemp). */
  readonly path: string;
  /** Removes the directory and everything in it. Safe to call twice. */
  cleanup(): Promise<void>;
}

/**
 * Creates a fresh temp dir named `<prefix>XXXXXX` under `os.tmpdir()`.
 * Call `cleanup()` in `afterAll`/`afterEach`, after stopping the processes that write into it.
 */
export async function tempDir(prefix = 'rackguard-test-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    async cleanup() {
      await rm(path, { recursive: true, force: true });
    },
  };
}
