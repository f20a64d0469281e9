/**
 * sd_notify(3) for `Type=notify` with a progress watchdog (issue 9 item 2): READY=1 once the agent's
 * parts have started, WATCHDOG=1 every half WATCHDOG_USEC but only while acquisition makes progress
 * (progress.ts), STATUS= lines for `systemctl status`, STOPPING=1 when a stop begins. Inert without
 * NOTIFY_SOCKET (a run from a shell, a test).
 *
 * Why the `systemd-notify` binary and not an npm module: Node cannot send on an AF_UNIX datagram
 * socket, so a module means a native addon (`sd-notify`, `unix-dgram`), i.e. a node-gyp build on
 * every Pi and in the .deb for each architecture, for a few bytes every 15 s. systemd-notify is in the
 * systemd package that supervises us anyway. Its costs, weighed: a fork+exec per message (about 5 ms
 * of a small C program: with WatchdogSec=30 that is one every 15 s plus a STATUS every 10 s, noise
 * next to a poll cycle); and the message comes from the child's PID, so the unit needs
 * `NotifyAccess=all`. systemd 246+ makes systemd-notify wait on a BARRIER=1 until the manager has
 * read the message, which closes the old race where a short-lived sender exited before systemd
 * could attribute it to our cgroup (systemd#2739). Messages are argv of the child: never put a
 * secret in a STATUS line. One message in flight at a time; what arrives meanwhile is merged
 * (the latest STATUS wins), so a slow manager never piles up processes.
 */
import { execFile } from 'node:child_process';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../clock.js';
import type { Component } from '../component.js';
import { stalledSources, type SourceProgress } from './progress.js';

/** Sends one notification (assignments such as `READY=1`, `STATUS=…`); rejects when it could not. */
export type NotifySender = (assignments: string[]) => Promise<void>;

/** How long a systemd-notify may take before it is killed (its own barrier timeout is 5 s). */
const SEND_TIMEOUT_MS = 10_000;
/** How often the STATUS line is refreshed besides zone changes. */
const STATUS_INTERVAL_MS = 10_000;
/** The shortest gap between two STATUS messages. */
export const STATUS_MIN_GAP_MS = 1000;

/** The default sender: `systemd-notify VAR=VALUE…`, no shell, NOTIFY_SOCKET given to it alone. */
export function systemdNotifySender(socket: string, binary = 'systemd-notify'): NotifySender {
  return (assignments) =>
    new Promise((resolve, reject) => {
      execFile(binary, assignments, { timeout: SEND_TIMEOUT_MS, env: { ...process.env, NOTIFY_SOCKET: socket } }, (err, _stdout, stderr) => {
        if (err) reject(new Error(`${binary} ${assignments.map((a) => a.split('=')[0]).join(' ')}: ${stderr.trim() || err.message}`));
        else resolve();
      });
    });
}

/** What the notifier reads from the agent; bound late, since the agent takes the notifier as a part. */
export interface NotifyView {
  progress(): SourceProgress[];
  status(): string;
}

export interface NotifierDeps {
  /** NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID are read from here. */
  env: NodeJS.ProcessEnv;
  pid: number;
  clock: Clock;
  logger: Logger;
  view: NotifyView;
  send?: NotifySender;
}

/**
 * The watchdog ping interval from the environment systemd sets: half WATCHDOG_USEC, as sd_watchdog_enabled(3)
 * recommends; undefined when there is no watchdog for this process (unset, malformed, 0, or WATCHDOG_PID
 * naming another process).
 */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv, pid: number): number | undefined {
  const usec = env.WATCHDOG_USEC;
  if (!usec || !/^\d+$/.test(usec)) return undefined;
  if (env.WATCHDOG_PID && env.WATCHDOG_PID !== String(pid)) return undefined;
  const ms = Number(usec) / 1000 / 2;
  return ms >= 1 ? ms : undefined;
}

export class Notifier implements Component {
  readonly name = 'notify';
  private readonly send: NotifySender;
  private readonly enabled: boolean;
  private readonly intervalMs: number | undefined;
  private watchdogTimer: TimerHandle | undefined;
  private statusTimer: TimerHandle | undefined;
  private on = false;
  private readySent = false;
  private inFlight = false;
  /** Assignments waiting for the message in flight, by variable: the latest value of each wins. */
  private readonly pending = new Map<string, string>();
  /** The stalled sources last reported, so a withheld ping is logged once per change, not every tick. */
  private withheldFor = '';
  /** Monotonic ms of the last STATUS sent, and the refresh waiting for STATUS_MIN_GAP_MS to pass. */
  private lastStatusMono = -Infinity;
  private statusSoon: TimerHandle | undefined;
  private statusPrefix: string | undefined;
  /** Pings sent since start (for tests and the log). */
  pings = 0;

  constructor(private readonly deps: NotifierDeps) {
    this.send = deps.send ?? systemdNotifySender(deps.env.NOTIFY_SOCKET ?? '');
    this.enabled = Boolean(deps.env.NOTIFY_SOCKET);
    this.intervalMs = this.enabled ? watchdogIntervalMs(deps.env, deps.pid) : undefined;
  }

  /** READY=1 with the first STATUS, then the watchdog and status timers. Never waits for the manager. */
  async start(): Promise<void> {
    if (!this.enabled || this.on) return;
    this.on = true;
    if (!this.readySent) {
      this.readySent = true;
      this.notify({ READY: '1', STATUS: this.statusText() });
    }
    if (this.intervalMs !== undefined) {
      this.deps.logger.info({ intervalMs: this.intervalMs }, 'watchdog: pinging systemd while acquisition makes progress');
      this.armWatchdog();
    }
    this.armStatus();
  }

  async stop(): Promise<void> {
    this.on = false;
    this.deps.clock.clearTimeout(this.watchdogTimer);
    this.deps.clock.clearTimeout(this.statusTimer);
    this.deps.clock.clearTimeout(this.statusSoon);
    this.watchdogTimer = undefined;
    this.statusTimer = undefined;
    this.statusSoon = undefined;
  }

  /**
   * STOPPING=1: systemd then shows "deactivating" and stops expecting pings. Sent at once, beside any
   * message in flight (a queued STOPPING would be lost to the exit); resolves when it went out or failed,
   * so main can let it land before the process exits.
   */
  stopping(): Promise<void> {
    if (!this.enabled) return Promise.resolve();
    this.on = false;
    this.deps.clock.clearTimeout(this.watchdogTimer);
    this.deps.clock.clearTimeout(this.statusTimer);
    this.deps.clock.clearTimeout(this.statusSoon);
    return this.send(['STOPPING=1', 'STATUS=stopping']).catch((err: unknown) => this.deps.logger.warn({ err: (err as Error).message }, 'sd_notify STOPPING failed'));
  }

  /** A STATUS line now (a zone changed level, a reload): a person looking should not see a stale one. */
  refreshStatus(prefix?: string): void {
    if (!this.enabled || !this.on) return;
    // At most one STATUS per STATUS_MIN_GAP_MS: each is a process spawn, and a flapping device or a
    // burst of zone events would otherwise spawn one per event. The last one in a burst is sent.
    const wait = this.lastStatusMono + STATUS_MIN_GAP_MS - this.deps.clock.monoMs();
    if (wait > 0) {
      // A prefix (a refused reload) is kept for the deferred message even if a plain refresh comes after.
      this.statusPrefix = prefix ?? this.statusPrefix;
      this.statusSoon ??= this.deps.clock.setTimeout(() => {
        this.statusSoon = undefined;
        const kept = this.statusPrefix;
        this.statusPrefix = undefined;
        this.refreshStatus(kept);
      }, wait);
      return;
    }
    this.lastStatusMono = this.deps.clock.monoMs();
    this.notify({ STATUS: this.statusText(prefix) });
  }

  private statusText(prefix?: string): string {
    try {
      const text = this.deps.view.status();
      return (prefix ? `${prefix}; ${text}` : text).replace(/[\r\n]+/g, ' ');
    } catch (err) {
      return `status unavailable: ${(err as Error).message}`;
    }
  }

  private armWatchdog(): void {
    this.watchdogTimer = this.deps.clock.setTimeout(() => {
      if (!this.on) return;
      this.watchdogTick();
      this.armWatchdog();
    }, this.intervalMs!);
  }

  private armStatus(): void {
    this.statusTimer = this.deps.clock.setTimeout(() => {
      if (!this.on) return;
      this.refreshStatus();
      this.armStatus();
    }, STATUS_INTERVAL_MS);
  }

  /**
   * Pings only when no source is stalled. This is the "cycles completed since the last ping" rule, with
   * each source judged on its own cadence: a source that completed a cycle since the last ping is
   * fine, and one that did not is fine only while its configuration explains the gap (a 60 s backoff
   * of its only device must not get the service killed). A blocked event loop sends nothing at all;
   * when it resumes, the sources' cycles are as old as the block, so no ping goes out until they move.
   */
  private watchdogTick(): void {
    const stalled = stalledSources(this.deps.view.progress(), this.deps.clock.monoMs());
    const key = stalled.map((s) => s.name).join(',');
    if (key !== this.withheldFor) {
      if (stalled.length > 0) {
        const now = this.deps.clock.monoMs();
        this.deps.logger.error(
          { stalled: stalled.map((s) => ({ source: s.name, sinceLastCycleMs: Math.round(now - s.lastMono), stallAfterMs: s.stallAfterMs })) },
          `watchdog: withholding pings: no poll cycle completed on ${stalled.map((s) => s.name).join(', ')}; systemd will restart the service if this lasts`,
        );
      } else {
        this.deps.logger.warn('watchdog: acquisition progresses again; pinging');
      }
      this.withheldFor = key;
    }
    if (stalled.length > 0) return;
    this.pings++;
    this.notify({ WATCHDOG: '1' });
  }

  private notify(vars: Record<string, string>): void {
    for (const [k, v] of Object.entries(vars)) this.pending.set(k, v);
    this.flush();
  }

  private flush(): void {
    if (this.inFlight || this.pending.size === 0) return;
    const assignments = [...this.pending].map(([k, v]) => `${k}=${v}`);
    this.pending.clear();
    this.inFlight = true;
    this.send(assignments)
      .catch((err: unknown) => this.deps.logger.warn({ err: (err as Error).message }, 'sd_notify failed'))
      .finally(() => {
        this.inFlight = false;
        this.flush();
      });
  }
}
