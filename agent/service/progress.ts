/**
 * How the watchdog judges that acquisition makes progress (issue 9 item 2).
 *
 * Each source (a Modbus bus's poller, a stream source) counts the poll cycles it completes: a device
 * poll that delivered its samples, whatever their quality. A bus whose port is gone or whose devices
 * are silent still completes cycles (comm_error samples after a timeout): that is progress, and
 * systemd restarting us would not bring a sensor back. A source is stalled when it has completed no
 * cycle for longer than its configuration allows: a loop awaiting something that never settles (a
 * hung driver call, a bug) or an event loop that does not run. Pure functions over plain data.
 */
import type { BusDef } from '../config/model.js';

/** One acquisition source's progress, as the agent counts it. */
export interface SourceProgress {
  /** `bus:<id>` or `stream:<id>`. */
  name: string;
  /** Poll cycles (device polls, stream lines or silence reports) completed since the source was built. */
  cycles: number;
  /** Monotonic ms of the last completed cycle (or of the source's start before the first). */
  lastMono: number;
  /** Longest gap between two cycles this source's configuration allows; beyond it the source is stalled. */
  stallAfterMs: number;
}

/** Slack over the computed bound: timers fire late on a loaded Pi, and a poll has gaps and a flush. */
const STALL_SLACK_MS = 2000;

/**
 * The longest legitimate gap between two completed cycles of a bus. A Modbus bus completes one device
 * poll at a time; the next one is due at most one poll interval or one backoff away (a device that
 * failed waits up to backoffMaxMs), and a poll lasts at most its reads times the timeout, plus the
 * line's recovery gaps. `readsPerCycle` is the bus's requests per full cycle (an upper bound per poll).
 * A stream source reports silence every timeoutMs.
 */
export function stallBoundMs(bus: BusDef, readsPerCycle: number): number {
  if (bus.type === 'serial-stream') return bus.timeoutMs + STALL_SLACK_MS;
  let wait = 0;
  let timeout = 0;
  for (const d of bus.devices) {
    wait = Math.max(wait, d.pollIntervalMs, d.backoffMaxMs);
    timeout = Math.max(timeout, d.timeoutMs);
  }
  const gap = bus.type === 'serial' ? Math.max(bus.recoveryGapMs, bus.interFrameGapMs) : 0;
  return wait + Math.max(1, readsPerCycle) * (timeout + gap) + STALL_SLACK_MS;
}

/** The sources that completed no cycle within their bound at monotonic `now`. */
export function stalledSources(sources: readonly SourceProgress[], now: number): SourceProgress[] {
  return sources.filter((s) => now - s.lastMono > s.stallAfterMs);
}
