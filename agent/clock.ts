/**
 * Time source for everything that measures durations or schedules work.
 *
 * Rates, timeouts, dwell and backoff use `monoMs()` (monotonic: never jumps when NTP steps the wall
 * clock, which happens after every boot on a Raspberry Pi without an RTC). `wallMs()` is only for the
 * timestamps a human or InfluxDB reads. Injected everywhere so replay and tests run on virtual time.
 */
export interface Clock {
  /** Monotonic milliseconds; arbitrary origin. */
  monoMs(): number;
  /** Wall-clock milliseconds since the Unix epoch. */
  wallMs(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle | undefined): void;
  /**
   * Runs `fn` after the I/O that is already waiting has been read. A timer callback runs before the
   * event loop's poll phase, so after a stall (a slow commit) a deadline would fire while its reply
   * sits unread in the kernel; a deadline's verdict goes through here. Not cancellable: `fn` checks
   * its own state.
   */
  afterPendingIo(fn: () => void): void;
}

export type TimerHandle = { readonly __timer: unique symbol } | object;

/**
 * Idle time given to the event loop to read bytes that were waiting when a deadline fired. serialport
 * reads on a libuv pool thread, which a loaded machine may not schedule for some milliseconds: 5 ms
 * let a reply that was waiting in the kernel be called a timeout at a load of 4 on 2 cores (2 runs in
 * 9 of test/integration/rtu-deadline.test.ts); 50 ms passed every run. A true timeout is declared
 * that much later, which no timeout budget feels.
 */
const IO_GRACE_MS = 50;

export const systemClock: Clock = {
  monoMs: () => performance.now(),
  wallMs: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, Math.max(0, ms));
    return t as unknown as TimerHandle;
  },
  clearTimeout: (h) => {
    if (h !== undefined) clearTimeout(h as unknown as NodeJS.Timeout);
  },
  afterPendingIo: (fn) => {
    // One loop turn is not enough for a serial port: its readiness is seen in the poll phase, but
    // serialport then reads through the libuv thread pool, and the bytes come one or more turns
    // later. So let the loop sit idle in its poll phase for a short grace; if that grace itself
    // came late (the loop stalled again), give it another, a few times at most.
    let turns = 0;
    const settle = (): void => {
      const due = performance.now() + IO_GRACE_MS;
      setTimeout(() => {
        if (performance.now() - due > IO_GRACE_MS && ++turns < 4) settle();
        else fn();
      }, IO_GRACE_MS);
    };
    setImmediate(settle);
  },
};

interface VirtualTimer {
  at: number;
  seq: number;
  fn: () => void;
}

/**
 * A clock that only moves when told to. `advance(ms)` fires due timers in time order, so code that
 * schedules work runs deterministically and as fast as the CPU allows.
 */
export class VirtualClock implements Clock {
  private mono: number;
  private wallOffset: number;
  private seq = 0;
  private timers = new Set<VirtualTimer>();

  constructor(opts: { startMonoMs?: number; startWallMs?: number } = {}) {
    this.mono = opts.startMonoMs ?? 0;
    this.wallOffset = (opts.startWallMs ?? Date.UTC(2026, 0, 1)) - this.mono;
  }

  monoMs(): number {
    return this.mono;
  }

  wallMs(): number {
    return this.mono + this.wallOffset;
  }

  /** Steps the wall clock (as NTP does) without touching monotonic time. */
  stepWall(deltaMs: number): void {
    this.wallOffset += deltaMs;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const t: VirtualTimer = { at: this.mono + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.add(t);
    return t;
  }

  clearTimeout(handle: TimerHandle | undefined): void {
    if (handle) this.timers.delete(handle as VirtualTimer);
  }

  /**
   * A zero-delay timer: it runs after the timers already due at this instant, so a fake port that
   * delivers bytes "at" a deadline (scheduled before it) is read before the deadline's verdict.
   */
  afterPendingIo(fn: () => void): void {
    this.setTimeout(fn, 0);
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const target = this.mono + ms;
    for (;;) {
      let next: VirtualTimer | undefined;
      for (const t of this.timers) {
        if (t.at <= target && (!next || t.at < next.at || (t.at === next.at && t.seq < next.seq))) next = t;
      }
      if (!next) break;
      this.timers.delete(next);
      this.mono = Math.max(this.mono, next.at);
      next.fn();
    }
    this.mono = target;
  }

  pendingTimers(): number {
    return this.timers.size;
  }
}
