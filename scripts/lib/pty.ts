import type { ChildProcess } from 'node:child_process';
import { lstat, readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { spawnAndWait, type SpawnedProcess } from './proc.js';
import { tempDir } from './tmp.js';

/**
 * A virtual serial line: two linked ptys made by socat. Bytes written to one end come out of the other,
 * instantly (a pty does not enforce a baud rate). Open `a` and `b` like any serial device.
 */
export interface PtyPair {
  /** Symlink to one end (`<dir>/a`); stable across unplug/replug. */
  readonly a: string;
  /** Symlink to the other end (`<dir>/b`); stable across unplug/replug. */
  readonly b: string;
  /** Directory holding the links. */
  readonly dir: string;
  /** The current socat, or the last one while unplugged (it has exited then); a new one after replug. */
  readonly proc: ChildProcess;
  /** The /dev/pts/N devices behind `a` and `b` for the current plug (new numbers after replug). */
  readonly devices: readonly [string, string] | undefined;
  /**
   * Simulates pulling the cable: stops socat and awaits its exit. Both links disappear, and whoever holds
   * an end open gets EIO/HUP on it. Safe to call while unplugged.
   */
  unplug(): Promise<void>;
  /** Simulates plugging back in: a new socat on the same link paths, resolved once data flows. */
  replug(): Promise<void>;
  /** Stops socat and, if this helper created `dir`, removes it. Safe to call twice. */
  stop(): Promise<void>;
}

export interface StartPtyPairOptions {
  /**
   * Directory for the `a`/`b` links. Default: a fresh temp dir, removed by `stop()`. A dir passed in is
   * left in place, so `startPtyPair({ dir })` after `stop()` plugs a new pair in on the same paths (the
   * other way to unplug/replug, when the pair object is not at hand).
   */
  dir?: string;
  /** Deadline for socat to come up, in ms. Default 10000. */
  timeoutMs?: number;
}

// socat -d -d prints, on stderr (wording checked with socat 1.7.4.4):
//   2026/11/25 13:49:31 socat[3944] N PTY is /dev/pts/0
//   2026/11/25 13:49:31 socat[3944] N PTY is /dev/pts/1
//   2026/11/25 13:49:31 socat[3944] N starting data transfer loop with FDs [5,5] and [7,7]
// The links are made while the ptys are opened, before the transfer loop starts; socat removes them when
// it exits on a signal.
const PTY_LINE = /\bPTY is (\/dev\/\S+)/;
const READY_LINE = /starting data transfer loop/;

/** Starts `socat -d -d pty,raw,echo=0,link=DIR/a pty,raw,echo=0,link=DIR/b` and awaits its ready line. */
export async function startPtyPair(opts: StartPtyPairOptions = {}): Promise<PtyPair> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const owned = opts.dir === undefined ? await tempDir('rackguard-pty-') : undefined;
  const dir = opts.dir ?? owned!.path;
  const a = join(dir, 'a');
  const b = join(dir, 'b');

  let socat: SpawnedProcess | undefined;
  let lastProc: ChildProcess | undefined;
  let devices: [string, string] | undefined;
  let stopped = false;

  async function plug(): Promise<void> {
    // A socat killed with SIGKILL leaves its links behind; do not let a stale link point at a dead pty.
    await Promise.all([rm(a, { force: true }), rm(b, { force: true })]);
    const proc = await spawnAndWait(
      'socat',
      ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`],
      { readyLine: READY_LINE, timeoutMs },
    );
    const ptys = proc.lines.flatMap((l) => PTY_LINE.exec(l)?.[1] ?? []);
    try {
      if (ptys.length !== 2) throw new Error(`expected two "PTY is" lines from socat, got:\n${proc.lines.join('\n')}`);
      for (const [link, dev] of [[a, ptys[0]], [b, ptys[1]]] as const) {
        if (!(await lstat(link)).isSymbolicLink() || (await readlink(link)) !== dev) {
          throw new Error(`socat link ${link} does not point at ${dev}`);
        }
      }
    } catch (err) {
      await proc.stop();
      throw err;
    }
    socat = proc;
    lastProc = proc.proc;
    devices = [ptys[0]!, ptys[1]!];
  }

  async function unplug(): Promise<void> {
    const proc = socat;
    socat = undefined;
    devices = undefined;
    if (proc) await proc.stop();
  }

  await plug().catch(async (err: unknown) => {
    await owned?.cleanup();
    throw err;
  });

  return {
    a,
    b,
    dir,
    get proc() {
      return lastProc!;
    },
    get devices() {
      return devices;
    },
    unplug,
    async replug() {
      if (stopped) throw new Error('pty pair already stopped');
      await unplug();
      await plug();
    },
    async stop() {
      stopped = true;
      await unplug();
      await owned?.cleanup();
    },
  };
}
