/**
 * Clock sanity for a gateway without a real-time clock (issue 9, item 4). A Raspberry Pi boots with
 * the wall clock it saved at shutdown (fake-hwclock) or 1970, and NTP later steps it, sometimes by
 * weeks, backwards too. Rates, dwell and timeouts already run on monotonic time (agent/clock.ts); what
 * a step breaks is the *timestamps*: samples stamped before it sit at a wrong time.
 *
 * Every `intervalMs` (1 s) this compares how far the wall clock moved with how far the monotonic clock
 * moved. NTP slews small errors (≤ 500 ppm, half a millisecond per second) and only steps large ones, so
 * a difference above `stepThresholdMs` (2 s) is a step of that size. An event-loop stall moves both
 * clocks alike and is not a step.
 *
 * The clock is "synchronised" once systemd-timesyncd says so (its `synchronized` file exists) or a
 * step was seen. Until then samples are marked `clockUnsynced` (app.ts), the outbox re-dates them when
 * the step comes, and the InfluxDB sink holds them (see influx.ts). A host without timesyncd (no
 * `/run/systemd/timesync` directory: chrony, ntpd, a container) cannot tell us: the clock is taken as
 * synchronised there, and steps are still detected, reported and re-dated.
 */
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Clock, TimerHandle } from '../clock.js';
import type { Component } from '../component.js';

/** systemd-timesyncd touches this file once the clock is synchronised (sd-timesyncd(8), since v239). */
export const TIMESYNC_SYNCHRONIZED_FILE = '/run/systemd/timesync/synchronized';

export interface ClockStep {
  /** Signed step, ms: how much more the wall clock moved than the monotonic clock. */
  stepMs: number;
  /** Wall ms the old time base would show now, and the wall ms now (new base). */
  oldWallMs: number;
  newWallMs: number;
  /** Monotonic ms the step was detected at. */
  monoMs: number;
  /** Wall − mono after the step: a record with ts − mono near this was stamped on the new base. */
  newOffsetMs: number;
  /** How close (ms) ts − mono must be to newOffsetMs to count as the new base. */
  toleranceMs: number;
}

/** What the sinks need to know of the clock's state. */
export interface ClockSync {
  readonly synced: boolean;
  on(event: 'synced', listener: () => void): unknown;
  off(event: 'synced', listener: () => void): unknown;
}

export interface ClockWatchEvents {
  /** Emitted after the `onStep` hook ran (the outbox is re-dated by then) and the clock is marked synchronised. */
  step: [step: ClockStep, redated: number];
  /** The clock became synchronised (a step, or timesyncd's file). */
  synced: [];
}

export interface ClockWatchOptions {
  /** timesyncd's flag file; injectable for tests. Default TIMESYNC_SYNCHRONIZED_FILE. */
  syncedFile?: string;
  /** A wall/mono disagreement above this within one interval is a step, ms. Default 2000. */
  stepThresholdMs?: number;
  /** Comparison interval, ms. Default 1000. */
  intervalMs?: number;
}

export interface ClockWatchDeps {
  clock: Clock;
  logger: { info(o: object, m: string): void; warn(o: object, m: string): void };
  /**
   * Runs synchronously on each step, before `synced` is announced: the agent re-dates the outbox and
   * appends the clock_step event here, so no sink sees the clock synchronised with records still on
   * the old base.
   */
  onStep?: (step: ClockStep) => number | void | false | undefined;
  exists?: (path: string) => boolean;
}

export class ClockWatch extends EventEmitter<ClockWatchEvents> implements Component, ClockSync {
  readonly name = 'clock-watch';
  /** How the wall clock came to be taken as right; undefined while it is not (synced is derived from it). */
  private syncedBy: 'timesyncd' | 'step' | 'assumed' | undefined;
  private timer: TimerHandle | undefined;
  private running = false;
  private lastMono = 0;
  private lastWall = 0;
  private readonly syncedFile: string;
  private readonly thresholdMs: number;
  private readonly intervalMs: number;
  private readonly exists: (path: string) => boolean;
  /** The step that synchronised the clock, for rebase(): a stamp taken before it can still be in flight. */
  private syncStep: ClockStep | undefined;

  constructor(
    opts: ClockWatchOptions,
    private readonly deps: ClockWatchDeps,
  ) {
    super();
    this.syncedFile = opts.syncedFile ?? TIMESYNC_SYNCHRONIZED_FILE;
    this.thresholdMs = opts.stepThresholdMs ?? 2000;
    this.intervalMs = opts.intervalMs ?? 1000;
    this.exists = deps.exists ?? existsSync;
  }

  /** True once the wall clock is known to be right (timesyncd's file, or a step seen), or taken as right (no timesyncd). */
  get synced(): boolean {
    return this.syncedBy !== undefined;
  }

  /**
   * True only on evidence (timesyncd's file, or a step seen), not on the "no timesyncd here" default:
   * a Pi with chrony and fake-hwclock is taken as synchronised for timestamps, but its wall clock after
   * a reboot cannot say how long the agent was down.
   */
  get knownSynced(): boolean {
    return this.synced && this.syncedBy !== 'assumed';
  }

  /**
   * The time `ts` (stamped at monotonic `mono`) on the current wall-clock base. A stamp is taken when a
   * reply arrives, but the samples of a device are handed over only when its whole poll is done: a step
   * detected in between (a device with several reads, or a slow one) has already re-dated the outbox
   * and marked the clock synchronised, so such a sample would reach InfluxDB at the old time, unmarked.
   * A stamp taken before the step that synchronised the clock was detected, and not already on its
   * new base, moves by the step (the rule of Outbox.redate()). Only that step: on a clock already
   * taken as right, stamps keep their times.
   */
  rebase(ts: number, mono: number): number {
    const s = this.syncStep;
    if (s === undefined || mono >= s.monoMs || Math.abs(ts - mono - s.newOffsetMs) <= s.toleranceMs) return ts;
    return ts + s.stepMs;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.lastMono = this.deps.clock.monoMs();
    this.lastWall = this.deps.clock.wallMs();
    if (!this.synced) {
      if (this.exists(this.syncedFile)) this.syncedBy = 'timesyncd';
      else if (!this.exists(dirname(this.syncedFile))) {
        this.syncedBy = 'assumed';
        this.deps.logger.info({ syncedFile: this.syncedFile }, 'clock: timesyncd not present, cannot tell whether the wall clock is synchronised; taking it as synchronised (steps are still detected)');
      } else {
        this.deps.logger.warn({ syncedFile: this.syncedFile, wall: new Date(this.lastWall).toISOString() }, 'clock: wall clock not synchronised yet; samples are marked clockUnsynced until NTP steps it or timesyncd reports it synchronised');
      }
    }
    this.schedule();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.deps.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    this.timer = this.deps.clock.setTimeout(() => {
      this.timer = undefined;
      if (!this.running) return;
      this.check();
      if (this.running) this.schedule();
    }, this.intervalMs);
  }

  /** One comparison; public for tests that drive it without timers. */
  check(): void {
    // The file first: timesyncd steps the clock and then touches the file, so a file seen here means
    // any step it made is already visible in the wall time read below.
    const fileSays = !this.synced && this.exists(this.syncedFile);
    const mono = this.deps.clock.monoMs();
    const wall = this.deps.clock.wallMs();
    const expected = this.lastWall + (mono - this.lastMono);
    const stepMs = wall - expected;
    this.lastMono = mono;
    this.lastWall = wall;
    if (Math.abs(stepMs) > this.thresholdMs) {
      const step: ClockStep = { stepMs, oldWallMs: expected, newWallMs: wall, monoMs: mono, newOffsetMs: wall - mono, toleranceMs: Math.max(this.thresholdMs, this.intervalMs) };
      this.deps.logger.warn(
        { stepMs, oldWall: new Date(expected).toISOString(), newWall: new Date(wall).toISOString(), wasSynced: this.synced },
        `clock: wall clock stepped by ${formatStep(stepMs)}; re-dating buffered records stamped before it`,
      );
      if (!this.synced) this.syncStep = step;
      let redated = 0;
      try {
        redated = Number(this.deps.onStep?.(step) ?? 0) || 0;
      } finally {
        this.markSynced('step');
        this.emit('step', step, redated);
      }
      return;
    }
    if (fileSays) this.markSynced('timesyncd');
  }

  private markSynced(why: 'step' | 'timesyncd'): void {
    // A step (or the file) on a clock only assumed right is the evidence it lacked.
    if (this.syncedBy === 'assumed') this.syncedBy = why;
    if (this.synced) return;
    this.syncedBy = why;
    this.deps.logger.info({ why, wall: new Date(this.deps.clock.wallMs()).toISOString() }, 'clock: wall clock synchronised');
    this.emit('synced');
  }
}

/** `-1209600000` → `-14 d 0 h 0 min 0 s`; human size of a step for the log and the event. */
export function formatStep(ms: number): string {
  const sign = ms < 0 ? '-' : '+';
  let s = Math.round(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86_400);
  s -= d * 86_400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return `${sign}${d > 0 ? `${d} d ` : ''}${d > 0 || h > 0 ? `${h} h ` : ''}${m} min ${s} s`;
}
