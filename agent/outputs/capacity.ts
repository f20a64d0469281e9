/**
 * The outbox's capacity and gap policy, apart from its storage: what is given up when space runs
 * out, and how that is told.
 *
 * - Telemetry is droppable, events never are (only the bounded memory queue of an unwritable outbox
 *   can lose events, and it says so with an `outbox_events_dropped` notice).
 * - Every telemetry hole is told as ONE `outbox_gap` event per hole, per point first and last time and
 *   count, whatever made the hole: the byte cap, the disk reserve or an unwritable outbox.
 * - A disk reserve keeps room for events: telemetry is not written while the outbox's filesystem has
 *   less than `reserveBytes` free, so zone and device events still fit when telemetry fills the disk.
 * - A file that cannot be used is told by one `outbox_unavailable` event (never dropped from the
 *   memory queue: it explains the rest), a damaged one by `outbox_corrupt`.
 */
import { statfsSync } from 'node:fs';
import type { OutboxEntry, OutputNotice, OutputNoticeCode } from './events.js';

/** When the byte cap is reached, drop down to this fraction of it, so drops come in batches. */
export const DROP_TARGET_FRACTION = 0.9;

export interface PointGap {
  pointId: string;
  firstTs: number;
  lastTs: number;
  count: number;
}

/** `detail` of an `outbox_gap` notice. */
export interface GapDetail {
  droppedCount: number;
  firstTs: number;
  lastTs: number;
  points: PointGap[];
  reason?: string;
}

/** Accumulates dropped telemetry per point until the hole is told as one gap event. */
export class GapTally {
  private readonly points = new Map<string, PointGap>();
  count = 0;

  get empty(): boolean {
    return this.count === 0;
  }

  add(pointId: string, ts: number, count = 1): void {
    this.count += count;
    const p = this.points.get(pointId);
    if (p) {
      p.firstTs = Math.min(p.firstTs, ts);
      p.lastTs = Math.max(p.lastTs, ts);
      p.count += count;
    } else this.points.set(pointId, { pointId, firstTs: ts, lastTs: ts, count });
  }

  /** Folds an earlier, not yet delivered gap event into this one. */
  merge(detail: GapDetail): void {
    this.count += detail.droppedCount;
    for (const gp of detail.points) {
      const p = this.points.get(gp.pointId);
      if (p) {
        p.firstTs = Math.min(p.firstTs, gp.firstTs);
        p.lastTs = Math.max(p.lastTs, gp.lastTs);
        p.count += gp.count;
      } else this.points.set(gp.pointId, { ...gp });
    }
  }

  /** The gap event for what was tallied; `why` starts the message ("outbox full (…)"). */
  notice(now: number, why: string, reason?: string): OutputNotice {
    const points = [...this.points.values()];
    const firstTs = Math.min(...points.map((p) => p.firstTs));
    const lastTs = Math.max(...points.map((p) => p.lastTs));
    const detail: GapDetail = { droppedCount: this.count, firstTs, lastTs, points, ...(reason !== undefined ? { reason } : {}) };
    return {
      kind: 'output',
      code: 'outbox_gap',
      severity: 'warning',
      message: `${why}: dropped ${this.count} telemetry samples of ${points.length} points, ${new Date(firstTs).toISOString()} to ${new Date(lastTs).toISOString()}`,
      ts: now,
      detail: { ...detail },
    };
  }

  clear(): void {
    this.points.clear();
    this.count = 0;
  }
}

/** Free bytes for an unprivileged writer on the filesystem holding `dir` (statfs f_bavail × f_bsize). */
export function freeBytesOf(dir: string): number {
  const s = statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

export function isNotice(entry: OutboxEntry, code: OutputNoticeCode): boolean {
  return entry.type === 'event' && entry.event.kind === 'output' && entry.event.code === code;
}

/** The outbox file cannot be opened or written: what that means for the events. */
export function unavailableNotice(path: string, stage: string, error: string, ts: number): OutputNotice {
  const verb = stage === 'write' ? 'written' : 'opened';
  return {
    kind: 'output',
    code: 'outbox_unavailable',
    severity: 'error',
    message: `outbox ${path} cannot be ${verb} (${error}): events are kept in memory and delivered live, but are not durable until it works again`,
    ts,
    detail: { path, stage, error },
  };
}

/** The memory queue of an unwritable outbox overflowed. */
export function eventsDroppedNotice(count: number, maxQueuedEvents: number, ts: number): OutputNotice {
  return {
    kind: 'output',
    code: 'outbox_events_dropped',
    severity: 'error',
    message: `the outbox could not be written and its memory queue of ${maxQueuedEvents} events overflowed: the ${count} oldest events were dropped (they reached the sinks that were live)`,
    ts,
    detail: { droppedEvents: count, maxQueuedEvents },
  };
}

/** A damaged file was moved aside and replaced by an empty one. */
export function corruptNotice(path: string, movedTo: string, reason: string, ts: number): OutputNotice {
  return {
    kind: 'output',
    code: 'outbox_corrupt',
    severity: 'error',
    message: `outbox ${path} was unreadable (${reason}); moved aside to ${movedTo} and started empty: records buffered in it were not delivered`,
    ts,
    detail: { path, movedTo, reason },
  };
}

/** The file was deleted (or replaced) while open and was written back from the open handle. */
export function restoredNotice(path: string, movedAside: string | undefined, ts: number): OutputNotice {
  return {
    kind: 'output',
    code: 'outbox_restored',
    severity: 'warning',
    message: `outbox ${path} was ${movedAside ? `replaced while open (the other file was moved to ${movedAside})` : 'deleted while open'}; written back from the open file: nothing buffered was lost`,
    ts,
    detail: { path, ...(movedAside ? { movedAside } : {}) },
  };
}
