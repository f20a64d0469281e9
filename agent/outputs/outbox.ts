/**
 * The outbox: every sample and event passes through here before any sink sends it; each sink (and
 * next each action) reads it through its own cursor and acknowledges what its server confirmed.
 *
 * It is a Component whose start() never fails for I/O. It owns the seq numbers and a memory tail of
 * records not yet committed, in front of the SQLite storage (outbox-store.ts):
 * - Group commit: the tail is committed at most once per `commitIntervalMs` (one transaction, one
 *   fsync); an event forces a commit on the next turn of the event loop, and so do a thousand
 *   records waiting (a burst). Sinks read only committed
 *   records while the file works, so nothing is acknowledged before it is durable.
 * - When the file cannot be opened (a directory, a read-only or full filesystem) or written (disk
 *   full, I/O error), the agent goes on: the failure is logged once (then a summary at most once a
 *   minute) and told as an `outbox_unavailable` event, events stay in the tail (up to
 *   `maxQueuedEvents`, and as many samples) and are served to the live sinks from memory, and the
 *   file is retried with backoff (`reopenInitialMs` doubling to `reopenMaxMs`). When it works again
 *   the tail is written first, and the telemetry that could not be kept is told as ONE gap event.
 * - Seqs continue across a damaged file replaced by a fresh one, so a sink's cursor stays meaningful.
 *   `generation` changes only when seqs handed out from memory had to be renumbered (a file that
 *   opened late already held higher seqs): sinks then re-read from their cursor.
 *
 * The capacity and gap policy lives in capacity.ts, the system's event types in events.ts.
 */
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { systemClock, type Clock, type TimerHandle } from '../clock.js';
import type { Component } from '../component.js';
import type { OutboxConfig } from '../config/outputs-schema.js';
import { RackguardError } from '../errors.js';
import { corruptNotice, eventsDroppedNotice, freeBytesOf, GapTally, isNotice, restoredNotice, unavailableNotice } from './capacity.js';
import { entryClass, entryTs, redateRecord, type OutboxEntry, type OutboxEvent, type OutboxRecord, type OutputNotice } from './events.js';
import { MemoryTail } from './memory-tail.js';
import { isCorruption, OutboxStore, sqliteCode, type PendingRecord } from './outbox-store.js';

export type { ActionEvent, ClockStepEvent, DeviceStateEvent, OutboxEntry, OutboxEvent, OutboxRecord, OutputNotice, OutputNoticeCode, RecordClass } from './events.js';

/** Where a sink seen for the first time starts reading. */
export type SinkStart = 'end' | 'beginning';

export interface SinkStats {
  /** Last acknowledged seq. */
  cursor: number;
  /** Records after the cursor. */
  depth: number;
  /** Age of the oldest unacknowledged record (since it was appended), ms; 0 when caught up. */
  lagMs: number;
}

export type OutboxState = 'stopped' | 'open' | 'unavailable' | 'unwritable';

export interface OutboxStats {
  state: OutboxState;
  /** Rows in the file. */
  rows: number;
  /** Accounted bytes in the file (payload + per-row overhead), compared against maxBytes. */
  bytes: number;
  maxBytes: number;
  lastSeq: number;
  /** Records appended and not yet committed (the memory tail). */
  pending: number;
  /** Transactions committed since start: the group commit's figure (fsyncs with synchronous=FULL). */
  commits: number;
  /** Telemetry samples not stored (byte cap, disk reserve, unwritable outbox) since start. */
  droppedTelemetry: number;
  /** Events lost because the memory queue overflowed while the outbox was unwritable, since start. */
  droppedEvents: number;
  sinks: Record<string, SinkStats>;
}

export interface OutboxOpenReport {
  /** Set when the file was unreadable and was moved aside; the same notice is appended as an event. */
  recovered?: { movedTo: string; reason: string };
  /** Records waiting in the file from before this start. */
  rows: number;
  /** Set when the file could not be opened: the outbox runs from memory and keeps retrying. */
  error?: string;
}

/** What the outbox logs (a pino Logger fits). */
export interface OutboxLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface OutboxDeps {
  clock?: Clock;
  logger?: OutboxLog;
  /** Warnings and errors, when no logger is given. */
  onWarning?: (message: string, detail: Record<string, unknown>) => void;
  /**
   * Seam for tests and benchmarks: runs synchronously at the start of every commit, on the event loop,
   * where a slow fsync would block it (a test can busy-wait here to play a slow SD card).
   */
  beforeCommit?: (info: { records: number }) => void;
  /** Free bytes on the outbox's filesystem; default statfs of its directory. */
  freeBytes?: (dir: string) => number;
  /** False while the wall clock is not known to be synchronised: events appended then are marked (see redate()). */
  clockSynced?: () => boolean;
}

/** A wall-clock step, as agent/service/clock-watch.ts reports it. */
export interface RedateStep {
  stepMs: number;
  /** Wall − mono after the step, and how close a record's ts − mono must be to it to be on the new base. */
  newOffsetMs: number;
  toleranceMs: number;
}

export interface OutboxEmitterEvents {
  /** Records up to `lastSeq` can be read (committed, or served from memory while the file fails). */
  appended: [lastSeq: number];
}

/**
 * A group commit also happens when this many records wait: it bounds the memory tail and one
 * transaction's size when records come in a burst (a replay, a benchmark) rather than at poll rate.
 */
const GROUP_COMMIT_MAX_RECORDS = 1000;
/** The error log of a lasting failure repeats as a summary at most this often. */
const FAILURE_SUMMARY_INTERVAL_MS = 60_000;

export class Outbox extends EventEmitter<OutboxEmitterEvents> implements Component {
  readonly name = 'outbox';
  private readonly clock: Clock;
  private readonly store: OutboxStore;
  private running = false;
  /** Appended, not yet committed, in seq order. All their seqs are above committedSeq. */
  private readonly tail = new MemoryTail();
  private lastSeq = 0;
  private committedSeq = 0;
  /** The file cannot be opened or written: the tail is served to sinks. */
  private degraded = false;
  private seqAtStart = 0;
  /** The seq space is known (the file was opened once in this run, or records were numbered from memory). */
  private seqsIssued = false;
  private readonly cursors = new Map<string, number>();
  private readonly sinkStarts = new Map<string, SinkStart>();
  private readonly dirtyCursors = new Set<string>();
  private fileGeneration = 0;
  /** Highest seq any read() returned: gap events above it have been seen by no sink and may be merged. */
  private maxReadSeq = 0;
  private commitTimer: TimerHandle | undefined;
  private commitUrgent = false;
  private retryTimer: TimerHandle | undefined;
  private retryDelayMs: number;
  private commits = 0;
  private droppedTelemetry = 0;
  private droppedEvents = 0;
  /** Telemetry not stored since the last gap event (memory bound, reserve, unwritable file). */
  private readonly hole = new GapTally();
  private holeWhy = '';
  /** Events dropped from the memory queue, not yet told by a notice. */
  private eventsDroppedUntold = 0;
  /** Why telemetry is held back (reserve short, or the disk refused it while events still fit). */
  private holdReason: string | undefined;
  private failure: { sinceMono: number; attempts: number; lastLogMono: number; suppressed: number; stage: string; message: string } | undefined;
  private openReport: OutboxOpenReport = { rows: 0 };
  /** A deleted file that could not be written back yet was logged. */
  private detachedReported = false;

  constructor(
    private readonly config: OutboxConfig,
    private readonly deps: OutboxDeps = {},
  ) {
    super();
    this.clock = deps.clock ?? systemClock;
    this.store = new OutboxStore(config, (msg, detail) => this.warn(detail, msg));
    this.retryDelayMs = config.reopenInitialMs;
  }

  // --- lifecycle ---------------------------------------------------------------------------------

  /** Opens the file, or schedules retries and runs from memory. Never throws for I/O. */
  async start(): Promise<void> {
    this.open();
  }

  /** Commits what it can, persists cursors, closes the file. Safe at any stage and twice. */
  async stop(): Promise<void> {
    this.close();
  }

  /** start() without the promise, for scripts and tests; returns what the open found. */
  open(): OutboxOpenReport {
    if (this.running) return this.openReport;
    this.running = true;
    this.resetRunState();
    this.openReport = { rows: 0 };
    this.tryOpen('open');
    if (this.tail.length > 0) this.commit();
    return this.openReport;
  }

  /** stop() without the promise. */
  close(): void {
    if (!this.running) return;
    this.clock.clearTimeout(this.commitTimer);
    this.clock.clearTimeout(this.retryTimer);
    this.commitTimer = undefined;
    this.retryTimer = undefined;
    // One last attempt to open a file that could not be: the fault may have been fixed since the last
    // retry (the backoff reaches reopenMaxMs), and what is held in memory is lost once we stop.
    if (!this.store.isOpen && this.tail.length > 0) this.tryOpen('reopen');
    if (this.store.isOpen) this.commit();
    // A failed last commit schedules a retry: not any more.
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.tail.events > 0) {
      this.error({ events: this.tail.events, path: this.config.path }, `${this.tail.events} events could not be written to the outbox and are lost with this stop`);
    }
    try {
      this.store.close();
    } finally {
      this.running = false;
      this.resetRunState();
    }
  }

  private resetRunState(): void {
    this.tail.clear();
    this.lastSeq = 0;
    this.committedSeq = 0;
    this.degraded = false;
    this.seqAtStart = 0;
    this.seqsIssued = false;
    this.cursors.clear();
    this.sinkStarts.clear();
    this.dirtyCursors.clear();
    this.maxReadSeq = 0;
    this.commitUrgent = false;
    this.retryDelayMs = this.config.reopenInitialMs;
    this.commits = 0;
    this.droppedTelemetry = 0;
    this.droppedEvents = 0;
    this.hole.clear();
    this.eventsDroppedUntold = 0;
    this.holdReason = undefined;
    this.holeWhy = '';
    this.failure = undefined;
    this.detachedReported = false;
  }

  /** Changes only when seqs were renumbered: a sink reading ahead starts again from its cursor. */
  get generation(): number {
    return this.fileGeneration;
  }

  /** Started: appends and reads work (from memory while the file cannot be used). */
  get isOpen(): boolean {
    return this.running;
  }

  /** The file is open and its last write worked. */
  get isDurable(): boolean {
    return this.running && this.store.isOpen && !this.degraded;
  }

  // --- sinks ---------------------------------------------------------------------------------------

  /**
   * Declares a sink. A sink with a stored cursor resumes there; a new one starts at the end as it was
   * when the outbox started (so the outbox's own notices from start-up are still delivered) or at the
   * beginning of what is buffered. Call after start().
   */
  registerSink(name: string, startAt: SinkStart = 'end'): void {
    this.requireRunning();
    this.sinkStarts.set(name, startAt);
    if (this.cursors.has(name)) return;
    const stored = this.store.isOpen ? this.store.storedCursor(name) : undefined;
    if (stored !== undefined) {
      this.cursors.set(name, stored);
      return;
    }
    this.cursors.set(name, startAt === 'end' ? this.seqAtStart : 0);
    this.dirtyCursors.add(name);
  }

  /** Forgets a sink (e.g. removed from the config), so its cursor no longer holds rows back. */
  removeSink(name: string): void {
    this.requireFile().removeCursor(name);
    this.cursors.delete(name);
    this.dirtyCursors.delete(name);
    this.sinkStarts.delete(name);
  }

  /** Sinks with a stored cursor, including ones not registered in this run. */
  storedSinks(): string[] {
    return this.requireFile().storedSinks();
  }

  // --- writing -------------------------------------------------------------------------------------

  /**
   * Takes `entries` in append order and returns the last seq given. They are committed with the next
   * group commit: within `commitIntervalMs`, or on the next turn of the event loop when they hold an
   * event (with commitIntervalMs 0, now). Never throws for I/O: what cannot be written stays in memory.
   */
  append(entries: readonly OutboxEntry[]): number {
    this.requireRunning();
    if (entries.length === 0) return this.lastSeq;
    this.seqsIssued = true;
    const at = this.clock.wallMs();
    let hasEvent = false;
    const unsynced = this.deps.clockSynced !== undefined && !this.deps.clockSynced();
    for (const e of entries) {
      const entry = unsynced ? this.markUnsynced(e) : e;
      const cls = entryClass(entry);
      this.tail.push({ seq: ++this.lastSeq, cls, ts: entryTs(entry), at, entry });
      hasEvent ||= cls === 'event';
    }
    this.boundTail();
    if (this.degraded) {
      // The file does not take writes: live sinks get the records from memory now; the retry timer
      // writes them when it can.
      this.emitAppended(this.lastSeq);
    } else if (this.tail.length >= GROUP_COMMIT_MAX_RECORDS) this.commit();
    else this.scheduleCommit(hasEvent);
    return this.lastSeq;
  }

  /**
   * The wall clock stepped by `step.stepMs`: every record still buffered (file and memory) that was
   * stamped while the clock was unsynchronised, on the old time base, gets its time moved by the step
   * and loses its clockUnsynced mark; a marked record already on the new base (stamped between the
   * step and its detection: its ts − mono matches the new offset) only loses the mark. The append
   * times (`at`, for the lag figures) move too. One transaction. Returns the records re-dated.
   */
  redate(step: RedateStep): number {
    if (!this.running) return 0;
    let n = 0;
    for (const r of this.tail.all()) n += redateRecord(r, step) ? 1 : 0;
    if (this.store.isOpen && this.committedSeq > 0) {
      try {
        n += this.store.redate(step);
      } catch (err) {
        this.error({ err: (err as Error).message, path: this.config.path }, 'outbox: re-dating buffered records after a clock step failed; they keep their old times');
      }
    }
    return n;
  }

  private markUnsynced(e: OutboxEntry): OutboxEntry {
    if (e.type === 'sample') return e.sample.clockUnsynced ? e : { ...e, sample: { ...e.sample, clockUnsynced: true } };
    return { ...e, clockUnsynced: true, mono: this.clock.monoMs() };
  }

  /** Appends one event (a convenience for sinks reporting what they refused). */
  appendEvent(event: OutboxEvent): number {
    return this.append([{ type: 'event', event }]);
  }

  /**
   * Commits the memory tail now, in one transaction. True when everything is in the file; false when
   * the file cannot take it (then it stays in memory and the retry is scheduled).
   */
  commit(): boolean {
    this.clock.clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    this.commitUrgent = false;
    if (!this.running || !this.store.isOpen) return false;
    if (this.store.detached && !this.restoreDetached()) return false;
    const gapOwed = !this.hole.empty && this.holdReason === undefined;
    if (this.tail.length === 0 && this.dirtyCursors.size === 0 && this.eventsDroppedUntold === 0 && !gapOwed) return true;
    let hold = false;
    if ((this.tail.telemetry > 0 || this.holdReason !== undefined) && !this.hasReserve()) {
      this.holdTelemetry(`the disk is below its reserve of ${this.config.reserveBytes} bytes`);
      hold = true;
    }
    try {
      this.writeTail(hold);
    } catch (err) {
      if (isCorruption(err)) {
        this.recoverCorrupt(err);
        return this.store.isOpen ? this.commit() : false;
      }
      if (!hold && this.tail.telemetry > 0 && !this.store.wedged) {
        // The disk may still take the events without the samples: keep the events durable.
        try {
          this.writeTail(true);
          this.holdTelemetry(`the disk refused telemetry (${sqliteCode(err) || (err as Error).message})`);
          return true;
        } catch {
          // the file takes nothing: handled below
        }
      }
      this.onFailure('write', err);
      return false;
    }
    return true;
  }

  // --- reading -------------------------------------------------------------------------------------

  /** Up to `limit` records after `after` (default: the sink's cursor), in append order. */
  read(sink: string, limit: number, after?: number): OutboxRecord[] {
    this.requireRunning();
    const from = after ?? this.cursorOf(sink);
    let out: OutboxRecord[] = [];
    if (this.store.isOpen && from < this.committedSeq) {
      try {
        out = this.store.read(from, limit);
      } catch (err) {
        if (!isCorruption(err)) throw new RackguardError('E_OUTBOX_WRITE', `outbox read failed: ${(err as Error).message}`, { cause: err, retryable: true });
        this.recoverCorrupt(err);
        out = [];
      }
    }
    if (this.degraded && out.length < limit) {
      for (const r of this.tail.sliceAbove(out.at(-1)?.seq ?? from, limit - out.length)) out.push({ seq: r.seq, cls: r.cls, ts: r.ts, entry: r.entry });
    }
    const last = out.at(-1);
    if (last && last.seq > this.maxReadSeq) this.maxReadSeq = last.seq;
    return out;
  }

  /**
   * Advances the sink's cursor to `seq` (everything up to and including it was acknowledged by the
   * sink's server). Kept in memory and persisted with the next commit (not an fsync per ack); after a
   * crash a sink may resend up to one commit interval's worth, which both sinks make idempotent or
   * at-least-once.
   */
  ack(sink: string, seq: number): void {
    const current = this.cursorOf(sink);
    if (seq <= current) return;
    // Never past what the sink could have read: committed records, or the tail while it is served.
    const readable = this.degraded ? this.lastSeq : this.committedSeq;
    const next = Math.min(seq, readable);
    if (next <= current) return;
    this.cursors.set(sink, next);
    this.dirtyCursors.add(sink);
  }

  cursorOf(sink: string): number {
    const c = this.cursors.get(sink);
    if (c === undefined) throw new RackguardError('E_OUTBOX_WRITE', `unknown outbox sink "${sink}"; registerSink() first`);
    return c;
  }

  /** Records after the sink's cursor, in the file and in memory. */
  depth(sink: string): number {
    this.requireRunning();
    const c = this.cursorOf(sink);
    const inFile = this.store.isOpen && c < this.committedSeq ? this.store.depth(c) : 0;
    return inFile + this.tail.countAbove(c);
  }

  /** Age of the oldest record the sink has not acknowledged, ms since it was appended; 0 when caught up. */
  lagMs(sink: string): number {
    this.requireRunning();
    const c = this.cursorOf(sink);
    const at = (this.store.isOpen && c < this.committedSeq ? this.store.oldestAt(c) : undefined) ?? this.tail.firstAbove(c)?.at;
    return at === undefined ? 0 : Math.max(0, this.clock.wallMs() - at);
  }

  stats(): OutboxStats {
    const sinks: Record<string, SinkStats> = {};
    if (this.running) for (const name of this.cursors.keys()) sinks[name] = { cursor: this.cursorOf(name), depth: this.depth(name), lagMs: this.lagMs(name) };
    const state: OutboxState = !this.running ? 'stopped' : !this.store.isOpen ? 'unavailable' : this.degraded ? 'unwritable' : 'open';
    return {
      state,
      rows: this.store.rows,
      bytes: this.store.bytes,
      maxBytes: this.config.maxBytes,
      lastSeq: this.lastSeq,
      pending: this.tail.length,
      commits: this.commits,
      droppedTelemetry: this.droppedTelemetry,
      droppedEvents: this.droppedEvents,
      sinks,
    };
  }

  /** Persists changed cursors now (every commit does it too). */
  flushCursors(): void {
    if (!this.running || !this.store.isOpen || this.degraded || this.dirtyCursors.size === 0) return;
    this.store.writeCursors(this.dirtyCursorEntries());
    this.dirtyCursors.clear();
  }

  /** Deletes every row all sinks acknowledged, now (commits do it in batches). */
  prune(): void {
    if (!this.running || !this.store.isOpen) return;
    this.store.prune(this.pruneBelow());
  }

  // --- internals: the file ----------------------------------------------------------------------

  private requireRunning(): void {
    if (!this.running) throw new RackguardError('E_OUTBOX_WRITE', 'outbox is not open');
  }

  private requireFile(): OutboxStore {
    if (!this.running || !this.store.isOpen) throw new RackguardError('E_OUTBOX_WRITE', `outbox file ${this.config.path} is not open`);
    return this.store;
  }

  /** Opens the file; a damaged one is moved aside and replaced. False (failure handled) when it cannot. */
  private tryOpen(stage: 'open' | 'reopen'): boolean {
    try {
      mkdirSync(dirname(this.config.path), { recursive: true });
      try {
        this.store.open();
      } catch (err) {
        if (!isCorruption(err)) throw err;
        const movedTo = this.moveAside();
        this.store.open();
        this.noticeCorrupt(err, movedTo);
      }
    } catch (err) {
      this.onFailure(stage, err);
      return false;
    }
    this.onFileOpened();
    return true;
  }

  /** Joins the file's seq space with what was numbered from memory before it opened. */
  private onFileOpened(): void {
    const fileLast = this.store.lastSeq;
    this.openReport.rows = this.store.rows;
    this.info({ path: this.config.path, backlog: this.store.rows }, 'outbox open');
    if (!this.seqsIssued) {
      this.lastSeq = this.committedSeq = this.seqAtStart = fileLast;
      this.tail.renumberFrom(() => ++this.lastSeq); // only a recovery notice can be here
      return;
    }
    const first = this.tail.first?.seq;
    const renumber = first !== undefined && first <= fileLast;
    if (renumber) {
      const offset = fileLast + 1 - first;
      this.tail.renumber(offset);
      this.lastSeq += offset;
    } else this.lastSeq = Math.max(this.lastSeq, fileLast);
    this.committedSeq = fileLast;
    let rewound = renumber;
    for (const [name, current] of this.cursors) {
      const start = this.sinkStarts.get(name) ?? 'end';
      const stored = this.store.storedCursor(name);
      let next: number;
      if (renumber) next = stored ?? (start === 'end' ? fileLast : 0);
      else if (stored !== undefined) next = Math.min(current, stored);
      else next = start === 'end' ? Math.max(current, fileLast) : current;
      if (next < current) rewound = true;
      this.cursors.set(name, next);
      this.dirtyCursors.add(name);
    }
    // Sinks hold seqs from before: when they no longer mean the same records, make them re-read.
    if (rewound) this.fileGeneration++;
  }

  private moveAside(): string {
    const stamp = new Date(this.clock.wallMs()).toISOString().replace(/[:.]/g, '-');
    return this.store.moveAside(stamp);
  }

  private noticeCorrupt(err: unknown, movedTo: string): void {
    const reason = `${sqliteCode(err) || 'error'}: ${(err as Error).message}`;
    this.openReport.recovered = { movedTo, reason };
    this.error({ movedTo, reason }, 'outbox was unreadable: moved aside, started a new one');
    this.pushEvent(corruptNotice(this.config.path, movedTo, reason, this.clock.wallMs()));
  }

  /**
   * The file was deleted or replaced under us: commits would go to an orphaned inode and be lost at
   * the next start. Writes it back to its path from the open handle. False when that failed and the
   * file is closed (the failure is handled: memory, retries).
   */
  private restoreDetached(): boolean {
    try {
      const movedAside = this.store.restore(new Date(this.clock.wallMs()).toISOString().replace(/[:.]/g, '-'));
      this.detachedReported = false;
      this.error({ path: this.config.path, movedAside }, 'outbox file was deleted or replaced while open: written back from the open file');
      this.pushEvent(restoredNotice(this.config.path, movedAside, this.clock.wallMs()));
      return true;
    } catch (err) {
      if (!this.store.isOpen) {
        this.onFailure('reopen', err);
        return false;
      }
      // The copy could not be made (a full disk?): the open handle still works; try again next commit.
      if (!this.detachedReported) {
        this.detachedReported = true;
        this.error({ path: this.config.path, err: (err as Error).message }, 'outbox file was deleted or replaced while open and cannot be written back yet; retrying at every commit');
      }
      return true;
    }
  }

  /** The file went bad under us: keep running on a fresh one rather than losing every later record. */
  private recoverCorrupt(err: unknown): void {
    try {
      const movedTo = this.moveAside();
      this.store.open();
      // Seqs go on above committedSeq in the new file: cursors keep their meaning.
      for (const name of this.cursors.keys()) this.dirtyCursors.add(name);
      this.noticeCorrupt(err, movedTo);
      this.scheduleCommit(true);
    } catch (openErr) {
      this.onFailure('reopen', openErr);
    }
  }

  /**
   * One transaction: the tail (without its samples when `withoutTelemetry`), a gap or drop notice
   * owed, the cursors, pruning, the byte cap. Throws (and changes nothing) when the file refuses it.
   */
  private writeTail(withoutTelemetry: boolean): void {
    const now = this.clock.wallMs();
    const owed: PendingRecord[] = [];
    // The hole closes when telemetry is stored again: tell it then, once.
    if (!withoutTelemetry && !this.hole.empty) owed.push(this.recordOf(this.hole.notice(now, this.holeWhy || 'outbox could not store telemetry'), now));
    if (this.eventsDroppedUntold > 0) owed.push(this.recordOf(eventsDroppedNotice(this.eventsDroppedUntold, this.config.maxQueuedEvents, now), now));
    const records = withoutTelemetry && this.tail.telemetry > 0 ? this.tail.eventsOnly() : this.tail.all();
    const all = owed.length > 0 ? records.concat(owed) : records;
    this.deps.beforeCommit?.({ records: all.length });
    // On failure this throws and the owed notices stay owed: their seqs are never used (seqs may have holes).
    const result = this.store.commit(all, this.dirtyCursorEntries(), {
      now,
      pruneBelow: this.pruneBelow(),
      maxReadSeq: this.maxReadSeq,
      allocSeq: () => ++this.lastSeq,
    });
    // Committed.
    this.commits++;
    if (withoutTelemetry) for (const r of this.tail.takeTelemetry()) this.dropSample(r);
    this.tail.clear();
    this.committedSeq = this.lastSeq;
    this.dirtyCursors.clear();
    this.droppedTelemetry += result.droppedTelemetry;
    if (!withoutTelemetry) {
      this.hole.clear();
      this.holeWhy = '';
      if (this.holdReason !== undefined) {
        this.holdReason = undefined;
        this.info({ path: this.config.path }, 'outbox: storing telemetry again');
      }
    }
    this.eventsDroppedUntold = 0;
    if (this.failure) this.onRecovered();
    this.degraded = false;
    this.emitAppended(this.committedSeq);
  }

  private recordOf(event: OutputNotice, now: number): PendingRecord {
    return { seq: ++this.lastSeq, cls: 'event', ts: event.ts, at: now, entry: { type: 'event', event } };
  }

  /** Samples in the tail go into the hole (told by one gap event when telemetry is stored again). */
  private holdTelemetry(why: string): void {
    if (this.holdReason === undefined) {
      this.holdReason = why;
      this.warn({ path: this.config.path, reserveBytes: this.config.reserveBytes }, `outbox: ${why}; telemetry is not stored until there is room, events are`);
    }
    this.holeWhy ||= `outbox could not store telemetry (${why})`;
    for (const r of this.tail.takeTelemetry()) this.dropSample(r);
  }

  private dropSample(r: PendingRecord): void {
    const e = r.entry;
    this.hole.add(e.type === 'sample' ? e.sample.pointId : '?', r.ts);
    this.droppedTelemetry++;
  }

  private hasReserve(): boolean {
    if (this.config.reserveBytes === 0) return true;
    try {
      return (this.deps.freeBytes ?? freeBytesOf)(dirname(this.config.path)) >= this.config.reserveBytes;
    } catch {
      return true; // cannot tell: let SQLite try
    }
  }

  // --- internals: failure and recovery ------------------------------------------------------------

  private onFailure(stage: string, err: unknown): void {
    const message = `${sqliteCode(err) || (err as NodeJS.ErrnoException).code || 'error'}: ${(err as Error).message}`;
    if (this.store.isOpen && (stage !== 'write' || this.store.wedged)) this.store.close();
    const mono = this.clock.monoMs();
    const wasDegraded = this.degraded;
    this.degraded = true;
    // From here seqs are handed out from memory: a file opened later must be joined to them.
    this.seqsIssued = true;
    if (stage === 'open') this.openReport.error = message;
    if (!this.failure) {
      this.failure = { sinceMono: mono, attempts: 1, lastLogMono: mono, suppressed: 0, stage, message };
      this.holeWhy = `outbox ${this.config.path} could not be ${stage === 'write' ? 'written' : 'opened'} (${message})`;
      this.error(
        { path: this.config.path, stage, err: message, retryInMs: this.retryDelayMs },
        `outbox ${this.config.path} cannot be ${stage === 'write' ? 'written' : 'opened'}: running on, events kept in memory (up to ${this.config.maxQueuedEvents}) and sent to the live sinks; retrying`,
      );
      this.pushEvent(unavailableNotice(this.config.path, stage, message, this.clock.wallMs()));
    } else {
      const f = this.failure;
      f.attempts++;
      f.message = message;
      if (mono - f.lastLogMono >= FAILURE_SUMMARY_INTERVAL_MS) {
        this.error(
          { path: this.config.path, stage, err: message, attempts: f.attempts, forS: Math.round((mono - f.sinceMono) / 1000), eventsHeld: this.tail.events, telemetryDropped: this.hole.count, retryInMs: this.retryDelayMs },
          'outbox still unavailable',
        );
        f.lastLogMono = mono;
      }
    }
    if (!wasDegraded || this.tail.length > 0) this.emitAppended(this.lastSeq);
    this.scheduleRetry();
  }

  private onRecovered(): void {
    const f = this.failure!;
    this.failure = undefined;
    this.retryDelayMs = this.config.reopenInitialMs;
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.warn({ path: this.config.path, afterS: Math.round((this.clock.monoMs() - f.sinceMono) / 1000), attempts: f.attempts }, 'outbox writable again; events held in memory are written');
  }

  private scheduleRetry(): void {
    if (this.retryTimer || !this.running) return;
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(delay * 2, this.config.reopenMaxMs);
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.running) return;
      if (!this.store.isOpen && !this.tryOpen('reopen')) return;
      this.commit();
    }, delay);
  }

  // --- internals: memory ---------------------------------------------------------------------------

  private scheduleCommit(urgent: boolean): void {
    if (this.config.commitIntervalMs === 0) {
      this.commit();
      return;
    }
    if (urgent && !this.commitUrgent) {
      this.clock.clearTimeout(this.commitTimer);
      this.commitUrgent = true;
      this.commitTimer = this.clock.setTimeout(() => this.commit(), 0);
    } else if (!this.commitTimer) {
      this.commitTimer = this.clock.setTimeout(() => this.commit(), this.config.commitIntervalMs);
    }
  }

  /** Keeps the tail within maxQueuedEvents events and as many samples, dropping the oldest. */
  private boundTail(): void {
    // While the file works the tail is one commit interval's worth, committed soon: no bound needed.
    if (!this.degraded) return;
    const cap = this.config.maxQueuedEvents;
    // The notice that explains all this stays.
    const dropped = this.tail.bound(cap, (r) => isNotice(r.entry, 'outbox_unavailable'));
    if (dropped.events.length > 0) {
      if (this.eventsDroppedUntold === 0) this.error({ path: this.config.path, maxQueuedEvents: cap }, 'outbox memory queue full: dropping the oldest events');
      this.droppedEvents += dropped.events.length;
      this.eventsDroppedUntold += dropped.events.length;
    }
    for (const r of dropped.samples) this.dropSample(r);
  }

  private pushEvent(event: OutputNotice): void {
    const e: OutboxEntry = { type: 'event', event };
    const entry = this.deps.clockSynced !== undefined && !this.deps.clockSynced() ? this.markUnsynced(e) : e;
    this.tail.push({ seq: ++this.lastSeq, cls: 'event', ts: event.ts, at: this.clock.wallMs(), entry });
    if (this.degraded) this.emitAppended(this.lastSeq);
  }

  private pruneBelow(): number | undefined {
    if (this.cursors.size === 0) return undefined;
    return Math.min(this.committedSeq, ...this.cursors.values());
  }

  private dirtyCursorEntries(): Array<[string, number]> {
    return [...this.dirtyCursors].map((n) => [n, this.cursors.get(n)!]);
  }

  private emitAppended(seq: number): void {
    // A listener's failure must neither undo the append in the caller's eyes nor starve the others.
    for (const listener of this.listeners('appended') as Array<(seq: number) => void>) {
      try {
        listener(seq);
      } catch (err) {
        this.warn({ err: (err as Error).message }, 'outbox listener failed');
      }
    }
  }

  private info(obj: Record<string, unknown>, msg: string): void {
    this.deps.logger?.info(obj, msg);
  }

  private warn(obj: Record<string, unknown>, msg: string): void {
    if (this.deps.logger) this.deps.logger.warn(obj, msg);
    else this.deps.onWarning?.(msg, obj);
  }

  private error(obj: Record<string, unknown>, msg: string): void {
    if (this.deps.logger) this.deps.logger.error(obj, msg);
    else this.deps.onWarning?.(msg, obj);
  }
}
