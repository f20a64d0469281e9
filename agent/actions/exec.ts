/**
 * The `exec` action: an argv array run without a shell (so `;`, `$()` and quotes in an argument or in
 * the event are data, never code), in a process group of its own, so that a timeout kills the hook
 * and everything it started (a hung `ssh`, a `sleep` in a pipeline), not only its first process.
 *
 * The event reaches the hook twice: as RACKGUARD_* environment variables (easy in shell) and as one
 * JSON document on stdin (complete, for real programs). Only the tail of its output is kept (bounded
 * memory whatever the hook prints) for the action record.
 */
import { spawn } from 'node:child_process';
import type { Clock, TimerHandle } from '../clock.js';
import type { ExecActionDef } from '../config/actions-schema.js';
import type { ActionContext, ActionResult } from './types.js';

/** Bytes of combined stdout+stderr kept for the record. */
export const OUTPUT_TAIL_BYTES = 4096;

/**
 * Variables passed through from the agent's own environment. Not all of it: the agent's environment
 * may hold RACKGUARD_MQTT_PASSWORD and the like, and a hook has no business with them.
 */
const INHERITED_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'] as const;

/** The newest `max` bytes of what was written, in arrival order; never holds more than max + one chunk. */
export class OutputTail {
  private buf = Buffer.alloc(0);
  private total = 0;
  constructor(private readonly max = OUTPUT_TAIL_BYTES) {}

  push(chunk: Buffer): void {
    this.total += chunk.length;
    const c = chunk.length > this.max ? chunk.subarray(chunk.length - this.max) : chunk;
    const joined = Buffer.concat([this.buf, c]);
    this.buf = joined.length > this.max ? joined.subarray(joined.length - this.max) : joined;
  }

  /** The kept text, and how many bytes were written in all (more than kept: the head was dropped). */
  text(): { tail: string; bytes: number } {
    return { tail: this.buf.toString('utf8'), bytes: this.total };
  }
}

/** The environment a hook sees: a few inherited variables, the event, then the action's own `env`. */
export function hookEnv(def: ExecActionDef, ctx: ActionContext, eventJson: string, base: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of INHERITED_ENV) {
    const v = base[k];
    if (v !== undefined) env[k] = v;
  }
  Object.assign(env, {
    RACKGUARD_EVENT: eventJson,
    RACKGUARD_ACTION: def.name,
    RACKGUARD_ZONE: ctx.zone,
    RACKGUARD_LEVEL: ctx.level,
    RACKGUARD_INCIDENT: ctx.incident,
    // Empty when the zone is not rising (no ETA): a number or nothing, never a made-up 0.
    RACKGUARD_ETA_S: ctx.etaS === null ? '' : String(Math.round(ctx.etaS)),
    RACKGUARD_DRY_RUN: ctx.dryRun ? '1' : '0',
    RACKGUARD_REASON: ctx.reason,
    RACKGUARD_TS: new Date(ctx.ts).toISOString(),
  });
  Object.assign(env, def.env);
  return env;
}

export interface ExecDeps {
  clock: Clock;
  /** Ends the hook early (the agent stops): handled like a timeout, the whole group is killed. */
  signal?: AbortSignal;
  /** Extra fields of the event JSON (site, gateway, the detector event). */
  extra?: Record<string, unknown>;
}

function killGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    // The negative pid addresses the process group the detached child leads.
    process.kill(-pid, sig);
  } catch {
    // ESRCH: the group is already empty.
  }
}

/**
 * Runs the hook to its end, its timeout or the abort. Never throws: a hook that cannot start
 * (ENOENT, EACCES) is a `failed` result with the reason.
 */
export function runExec(def: ExecActionDef, ctx: ActionContext, deps: ExecDeps): Promise<ActionResult> {
  const { clock } = deps;
  const started = clock.monoMs();
  const event = { ...deps.extra, action: def.name, incident: ctx.incident, zone: ctx.zone, level: ctx.level, etaS: ctx.etaS, reason: ctx.reason, ts: new Date(ctx.ts).toISOString(), dryRun: ctx.dryRun };
  const eventJson = JSON.stringify(event);
  const tail = new OutputTail();

  return new Promise<ActionResult>((resolve) => {
    let timer: TimerHandle | undefined;
    let graceTimer: TimerHandle | undefined;
    let killedFor: 'timeout' | 'aborted' | undefined;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let settled = false;

    const child = spawn(def.argv[0]!, def.argv.slice(1), {
      shell: false,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: hookEnv(def, ctx, eventJson),
      cwd: '/',
    });

    const finish = (r: Omit<ActionResult, 'durationMs'>): void => {
      if (settled) return;
      settled = true;
      clock.clearTimeout(timer);
      clock.clearTimeout(graceTimer);
      deps.signal?.removeEventListener('abort', onAbort);
      resolve({ ...r, durationMs: Math.round(clock.monoMs() - started) });
    };

    const kill = (why: 'timeout' | 'aborted'): void => {
      if (killedFor) return;
      killedFor = why;
      killGroup(child.pid, 'SIGTERM');
      graceTimer = clock.setTimeout(() => {
        killGroup(child.pid, 'SIGKILL');
        // A child that ignores SIGKILL cannot exist; one stuck in uninterruptible I/O can: give up
        // waiting for its pipes rather than hang the policy.
        graceTimer = clock.setTimeout(() => done(), 1000);
      }, def.killGraceS * 1000);
    };
    const onAbort = (): void => kill('aborted');

    const done = (): void => {
      const out = tail.text();
      const detail: Record<string, unknown> = { argv0: def.argv[0], exitCode: exit?.code ?? null, signal: exit?.signal ?? null, outputTail: out.tail, outputBytes: out.bytes };
      if (killedFor) {
        finish({ status: killedFor === 'timeout' ? 'timeout' : 'failed', message: killedFor === 'timeout' ? `${def.name}: killed after its ${def.timeoutS} s timeout (with its process group)` : `${def.name}: stopped (the agent is stopping)`, detail });
      } else if (exit?.code === 0) {
        finish({ status: 'succeeded', message: `${def.name}: exited 0`, detail });
      } else {
        finish({ status: 'failed', message: `${def.name}: ${exit?.signal ? `killed by ${exit.signal}` : `exited ${exit?.code}`}`, detail });
      }
    };

    child.on('error', (err) => {
      // Spawn failures (ENOENT, EACCES, E2BIG): no process, nothing to kill.
      finish({ status: 'failed', message: `${def.name}: cannot start ${def.argv[0]}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, detail: { argv0: def.argv[0], exitCode: null, outputTail: '' } });
    });
    child.stdout.on('data', (c: Buffer) => tail.push(c));
    child.stderr.on('data', (c: Buffer) => tail.push(c));
    child.on('exit', (code, signal) => {
      exit = { code, signal };
    });
    // 'close': the leader exited and every holder of its pipes too. A grandchild that keeps them open
    // keeps the hook "running" until the timeout, which then kills the whole group.
    child.on('close', (code, signal) => {
      exit ??= { code, signal };
      if (!killedFor) {
        // The group may still hold members that closed their pipes (daemonised): end them now, a hook
        // must not leave processes behind.
        killGroup(child.pid, 'SIGTERM');
      }
      done();
    });
    // A hook that does not read stdin closes it: EPIPE is not a failure of the hook.
    child.stdin.on('error', () => undefined);
    child.stdin.end(eventJson + '\n');

    timer = clock.setTimeout(() => kill('timeout'), def.timeoutS * 1000);
    if (deps.signal?.aborted) kill('aborted');
    else deps.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
