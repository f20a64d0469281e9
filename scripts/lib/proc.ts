import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/** A line predicate: a RegExp tested against the line, or a function. */
export type LineMatcher = RegExp | ((line: string) => boolean);

export interface SpawnAndWaitOptions {
  /** Extra environment variables, merged over `process.env`. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** The line (stdout or stderr) that means "ready". */
  readyLine: LineMatcher;
  /** Deadline for the ready line, in ms. On expiry the process is killed and the promise rejects. */
  timeoutMs: number;
  /** How long `stop()` waits after its signal before sending SIGKILL, in ms. Default 5000. */
  killGraceMs?: number;
  /** stdin of the child: 'ignore' (default) or 'pipe' (then write to `proc.stdin`). */
  stdin?: 'ignore' | 'pipe';
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnedProcess {
  proc: ChildProcess;
  /** Every stdout and stderr line so far, in arrival order; keeps growing after ready. */
  readonly lines: string[];
  /** The line that matched `readyLine`. */
  readonly readyLine: string;
  /** Settles when the process has exited. */
  readonly exited: Promise<ExitInfo>;
  /**
   * Resolves with the first line at index >= `fromIndex` that matches. To await a line caused by an action
   * without racing it, note `lines.length` before the action and pass it as `fromIndex`. Rejects on
   * timeout or on exit, with the collected output.
   */
  waitForLine(match: LineMatcher, timeoutMs: number, fromIndex?: number): Promise<string>;
  /**
   * Sends `signal` (default SIGTERM), awaits exit, sends SIGKILL after the grace period. Resolves with the
   * exit code (null when the process died of a signal). Safe to call again or after the process exited.
   */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

const DEFAULT_KILL_GRACE_MS = 5000;
const OUTPUT_TAIL_LINES = 60;
const OUTPUT_DRAIN_GRACE_MS = 1000;

// Safety net: whatever a test forgets to stop is killed when the test process goes away.
const live = new Set<ChildProcess>();
let safetyNetInstalled = false;

function killAllLive(): void {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

function installSafetyNet(): void {
  if (safetyNetInstalled) return;
  safetyNetInstalled = true;
  process.on('exit', killAllLive);
  // Vitest stops its fork workers with SIGTERM, which skips 'exit' handlers. Kill our children, then let
  // the signal take its default course (re-raise once nobody else listens), so the worker still dies.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killAllLive();
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}

function matches(match: LineMatcher, line: string): boolean {
  if (typeof match === 'function') return match(line);
  match.lastIndex = 0; // a /g or /y RegExp keeps state between test() calls
  return match.test(line);
}

function describe(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].join(' ');
}

function outputTail(lines: readonly string[]): string {
  const tail = lines.slice(-OUTPUT_TAIL_LINES);
  const skipped = lines.length - tail.length;
  return (skipped > 0 ? `  … ${skipped} earlier lines\n` : '') + tail.map((l) => `  | ${l}`).join('\n');
}

/**
 * Spawns `cmd args` (no shell), collects its stdout and stderr lines, and resolves once a line matches
 * `readyLine`. Rejects, with the collected output in the message, if the process cannot be spawned,
 * exits first, or stays silent past `timeoutMs` (then it is killed).
 */
export function spawnAndWait(
  cmd: string,
  args: readonly string[],
  opts: SpawnAndWaitOptions,
): Promise<SpawnedProcess> {
  installSafetyNet();
  const what = describe(cmd, args);
  const killGraceMs = opts.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  const lines: string[] = [];
  const lineListeners = new Set<(line: string) => void>();

  const proc = spawn(cmd, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
  });
  live.add(proc);

  let exitInfo: ExitInfo | undefined;
  let spawnError: Error | undefined;
  // "Output ended" comes after exit: once stdio closed, every line has been read. If a grandchild keeps
  // the pipes open, fall back to the exit event after a bounded wait.
  let outputEnded = false;
  const outputEndListeners = new Set<() => void>();
  const endOutput = () => {
    if (outputEnded) return;
    outputEnded = true;
    for (const l of outputEndListeners) l();
  };
  const exited = new Promise<ExitInfo>((resolve) => {
    const finish = (info: ExitInfo) => {
      if (exitInfo) return;
      exitInfo = info;
      live.delete(proc);
      resolve(info);
    };
    proc.once('exit', (code, signal) => {
      finish({ code, signal });
      setTimeout(endOutput, OUTPUT_DRAIN_GRACE_MS).unref();
    });
    proc.once('close', endOutput);
    proc.once('error', (err) => {
      // 'error' without a pid means it never started (e.g. ENOENT); then no 'exit' follows.
      spawnError = err;
      if (proc.pid === undefined) {
        finish({ code: null, signal: null });
        endOutput();
      }
    });
  });

  for (const stream of [proc.stdout, proc.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      lines.push(line);
      for (const l of lineListeners) l(line);
    });
  }

  function waitForLine(match: LineMatcher, timeoutMs: number, fromIndex = 0): Promise<string> {
    const seen = lines.slice(fromIndex).find((l) => matches(match, l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        lineListeners.delete(onLine);
        outputEndListeners.delete(onExit);
      };
      const onLine = (line: string) => {
        if (!matches(match, line)) return;
        cleanup();
        resolve(line);
      };
      const onExit = () => {
        cleanup();
        const how = spawnError
          ? `could not be started: ${spawnError.message}`
          : `exited (code ${exitInfo?.code}, signal ${exitInfo?.signal})`;
        reject(new Error(`${what} ${how} before printing a line matching ${String(match)}\n${outputTail(lines)}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(
          new Error(`${what} printed no line matching ${String(match)} within ${timeoutMs} ms\n${outputTail(lines)}`),
        );
      }, timeoutMs);
      lineListeners.add(onLine);
      outputEndListeners.add(onExit);
      if (outputEnded) onExit();
    });
  }

  async function stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (!exitInfo) {
      proc.kill(signal);
      const killTimer = setTimeout(() => proc.kill('SIGKILL'), killGraceMs);
      try {
        await exited;
      } finally {
        clearTimeout(killTimer);
      }
    }
    return (await exited).code;
  }

  return waitForLine(opts.readyLine, opts.timeoutMs).then(
    (readyLine) => ({ proc, lines, readyLine, exited, waitForLine, stop }),
    async (err: unknown) => {
      await stop('SIGKILL');
      throw err;
    },
  );
}
