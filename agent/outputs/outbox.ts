/**
 * The durable outbox: every sample and event is committed here (one SQLite transaction per poll
 * cycle) before any sink sends it; each sink drains it through its own cursor and acknowledges what
 * its server confirmed. Nothing is lost to a crash, a reboot or an outage of a sink; only telemetry is
 * ever dropped, oldest first, when the byte cap is reached, and a gap event says what went.
 *
 * Why SQLite: one file, atomic transactions, WAL (readers never block the writer), and it survives
 * `kill -9` and power loss with `synchronous=FULL` (better-sqlite3 is compiled with WAL + NORMAL as
 * its default, which may roll back the last commits on power loss: see FIELD-NOTES, SQLite).
 */
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { DeviceState, Sample } from '../acquisition/types.js';
import { systemClock, type Clock } from '../clock.js';
import type { DetectorEvent } from '../detection/types.js';
import { RackguardError } from '../errors.js';
import type { OutboxConfig } from '../config/outputs-schema.js';

/** A device changed availability (from acquisition's device health). */
export interface DeviceStateEvent {
  kind: 'device_state';
  deviceId: string;
  state: DeviceState;
  previous: DeviceState;
  /** Wall ms. */
  ts: number;
  reason?: string;
}

/** Something an action did or failed to do (exec, http, shutdown …). */
export interface ActionEvent {
  kind: 'action';
  action: string;
  /** e.g. started, succeeded, failed, skipped. */
  status: string;
  zone?: string;
  ts: number;
  message: string;
  detail?: Record<string, unknown>;
}

export type OutputNoticeCode =
  | 'outbox_gap'
  | 'outbox_corrupt'
  | 'outbox_over_capacity'
  | 'mqtt_publish_rejected'
  | 'influx_point_quarantined';

/** What the outputs layer itself has to report: dropped telemetry, a damaged buffer, a refused point. */
export interface OutputNotice {
  kind: 'output';
  code: OutputNoticeCode;
  severity: 'warning' | 'error';
  message: string;
  ts: number;
  detail: Record<string, unknown>;
}

export type OutboxEvent = DetectorEvent | DeviceStateEvent | ActionEvent | OutputNotice;

/** What is appended: a telemetry sample (droppable when the buffer is full) or an event (never dropped). */
export type OutboxEntry = { type: 'sample'; sample: Sample; zone?: string } | { type: 'event'; event: OutboxEvent };

export type RecordClass = 'telemetry' | 'event';

export interface OutboxRecord {
  /** Append order; strictly increasing, never reused within one database file. */
  seq: number;
  cls: RecordClass;
  /** The sample's or event's own wall time, ms. */
  ts: number;
  entry: OutboxEntry;
}

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

export interface OutboxStats {
  rows: number;
  /** Accounted bytes (payload + per-row overhead), compared against maxBytes. */
  bytes: number;
  maxBytes: number;
  lastSeq: number;
  /** Telemetry records dropped for space since this process opened the outbox. */
  droppedTelemetry: number;
  sinks: Record<string, SinkStats>;
}

export interface OutboxOpenReport {
  /** Set when the file was unreadable and was moved aside; the same notice is appended as an event. */
  recovered?: { movedTo: string; reason: string };
  /** Records waiting from before this start. */
  rows: number;
}

export interface OutboxDeps {
  clock?: Clock;
  /** Warnings the outbox cannot append as events (logging is the caller's). */
  onWarning?: (message: string, detail: Record<string, unknown>) => void;
}

export interface OutboxEmitterEvents {
  /** After every committed append, with the last seq written. Sinks wake their loops on it. */
  appended: [lastSeq: number];
}

/** Bytes accounted per row on top of its JSON body: rowid, columns, index entries, page slack. */
const ROW_OVERHEAD_BYTES = 64;
/** When full, drop down to this fraction of maxBytes, so the drop happens in batches, not every cycle. */
const DROP_TARGET_FRACTION = 0.9;
/** Delete acknowledged rows once this many are pending deletion (a few DELETEs per hour, not per ack). */
const PRUNE_BATCH_ROWS = 2000;
/** `point` column value marking gap events, so unread ones can be found and merged. */
const GAP_MARK = '#gap';
const TELEMETRY = 0;
const EVENT = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS records (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  cls INTEGER NOT NULL,
  ts INTEGER NOT NULL,
  at INTEGER NOT NULL,
  point TEXT,
  bytes INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_cls_seq ON records (cls, seq);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
`;

interface RawRow {
  seq: number;
  cls: number;
  ts: number;
  body: string;
}

function isCorruption(err: unknown): boolean {
  const code = typeof err === 'object' && err && 'code' in err ? String((err as { code: unknown }).code) : '';
  return code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB';
}

function entryTs(entry: OutboxEntry): number {
  return entry.type === 'sample' ? entry.sample.ts : entry.event.ts;
}

/**
 * Usage, once per process: `const outbox = new Outbox(config.outputs.outbox); outbox.open();`
 * `outbox.registerSink('mqtt')` per configured sink; then `outbox.append([...])` once per poll cycle.
 */
export class Outbox extends EventEmitter<OutboxEmitterEvents> {
  private db: Database.Database | undefined;
  private readonly clock: Clock;
  private readonly cursors = new Map<string, number>();
  private readonly sinkStarts = new Map<string, SinkStart>();
  private dirtyCursors = new Set<string>();
  private totalBytes = 0;
  private rowCount = 0;
  private lastSeq = 0;
  private seqAtOpen = 0;
  private prunedThrough = 0;
  private dropped = 0;
  private overCapacityReported = false;
  private fileGeneration = 0;
  /** Highest seq any read() returned since open: rows above it have been seen by no sink. */
  private maxReadSeq = 0;
  private stmts:
    | {
        insert: Database.Statement<[number, number, number, string | null, number, string]>;
        read: Database.Statement<[number, number], RawRow>;
        oldestAt: Database.Statement<[number], { at: number }>;
        depth: Database.Statement<[number], { n: number }>;
        setCursor: Database.Statement<[string, number]>;
      }
    | undefined;

  constructor(
    private readonly config: OutboxConfig,
    private readonly deps: OutboxDeps = {},
  ) {
    super();
    this.clock = deps.clock ?? systemClock;
  }

  /**
   * Opens (or creates) the database. A file SQLite calls corrupt or not a database is renamed to
   * `<path>.corrupt-<timestamp>` (with its -wal/-shm) and a fresh one started: the agent never refuses
   * to start because of its buffer. That recovery is appended as an `outbox_corrupt` event.
   */
  open(): OutboxOpenReport {
    if (this.db) return { rows: this.rowCount };
    mkdirSync(dirname(this.config.path), { recursive: true });
    try {
      this.openFile();
      return { rows: this.rowCount };
    } catch (err) {
      if (!isCorruption(err)) {
        throw new RackguardError('E_OUTBOX_OPEN', `cannot open outbox ${this.config.path}: ${(err as Error).message}`, { cause: err });
      }
      const recovered = this.recover(err);
      return { recovered, rows: this.rowCount };
    }
  }

  /** Persists cursors and closes the file. Safe to call twice or before open(). */
  close(): void {
    const db = this.db;
    if (!db) return;
    try {
      this.flushCursors();
    } finally {
      this.db = undefined;
      this.stmts = undefined;
      db.close();
    }
  }

  /** Bumped when a damaged file was replaced by a fresh one (seqs restart): sinks reading ahead reset. */
  get generation(): number {
    return this.fileGeneration;
  }

  get isOpen(): boolean {
    return this.db !== undefined;
  }

  /**
   * Declares a sink. A sink with a stored cursor resumes there; a new one starts at the end as it was
   * when the outbox was opened (so the outbox's own recovery notice is still delivered) or at the
   * beginning of what is buffered. Call after open(), before the first append of this run.
   */
  registerSink(name: string, startAt: SinkStart = 'end'): void {
    const db = this.requireDb();
    this.sinkStarts.set(name, startAt);
    const row = db.prepare<[string], { seq: number }>('SELECT seq FROM cursors WHERE sink = ?').get(name);
    if (row) {
      this.cursors.set(name, row.seq);
      return;
    }
    const seq = startAt === 'end' ? this.seqAtOpen : 0;
    this.stmts!.setCursor.run(name, seq);
    this.cursors.set(name, seq);
  }

  /** Forgets a sink (e.g. removed from the config), so its cursor no longer holds rows back. */
  removeSink(name: string): void {
    const db = this.requireDb();
    db.prepare('DELETE FROM cursors WHERE sink = ?').run(name);
    this.cursors.delete(name);
    this.dirtyCursors.delete(name);
    this.sinkStarts.delete(name);
  }

  /** Sinks with a stored cursor, including ones not registered in this run. */
  storedSinks(): string[] {
    return this.requireDb()
      .prepare<[], { sink: string }>('SELECT sink FROM cursors ORDER BY sink')
      .all()
      .map((r) => r.sink);
  }

  /**
   * Commits `entries` in ONE transaction (call once per poll cycle, not per sample: every commit is an
   * fsync with synchronous=FULL). Also persists sink cursors, deletes fully acknowledged rows in
   * batches, and enforces the byte cap. Returns the last seq written.
   */
  append(entries: readonly OutboxEntry[]): number {
    if (entries.length === 0) return this.lastSeq;
    this.requireDb();
    try {
      this.appendTx(entries);
    } catch (err) {
      if (!isCorruption(err)) {
        throw new RackguardError('E_OUTBOX_WRITE', `outbox append failed: ${(err as Error).message}`, { cause: err, retryable: true });
      }
      // The file went bad under us: keep running on a fresh one rather than losing every later record.
      this.recover(err);
      this.appendTx(entries);
    }
    // Committed: a listener's failure must neither undo that in the caller's eyes nor starve the others.
    for (const listener of this.listeners('appended') as Array<(seq: number) => void>) {
      try {
        listener(this.lastSeq);
      } catch (err) {
        this.deps.onWarning?.('outbox listener failed', { err: (err as Error).message });
      }
    }
    return this.lastSeq;
  }

  /** Appends one event (a convenience for sinks reporting what they refused). */
  appendEvent(event: OutboxEvent): number {
    return this.append([{ type: 'event', event }]);
  }

  /** Up to `limit` records after `after` (default: the sink's cursor), in append order. */
  read(sink: string, limit: number, after?: number): OutboxRecord[] {
    this.requireDb();
    const from = after ?? this.cursorOf(sink);
    let rows: RawRow[];
    try {
      rows = this.stmts!.read.all(from, limit);
    } catch (err) {
      if (!isCorruption(err)) throw new RackguardError('E_OUTBOX_WRITE', `outbox read failed: ${(err as Error).message}`, { cause: err, retryable: true });
      this.recover(err);
      return this.read(sink, limit);
    }
    const last = rows.at(-1);
    if (last && last.seq > this.maxReadSeq) this.maxReadSeq = last.seq;
    return rows.map((r) => ({
      seq: r.seq,
      cls: r.cls === TELEMETRY ? 'telemetry' : 'event',
      ts: r.ts,
      entry: JSON.parse(r.body) as OutboxEntry,
    }));
  }

  /**
   * Advances the sink's cursor to `seq` (everything up to and including it was acknowledged by the
   * sink's server). Kept in memory and persisted with the next append (once per cycle, not an fsync per
   * ack); after a crash a sink may resend up to one cycle's worth, which both sinks make idempotent or
   * at-least-once.
   */
  ack(sink: string, seq: number): void {
    const current = this.cursorOf(sink);
    if (seq <= current) return;
    this.cursors.set(sink, Math.min(seq, this.lastSeq));
    this.dirtyCursors.add(sink);
  }

  cursorOf(sink: string): number {
    const c = this.cursors.get(sink);
    if (c === undefined) throw new RackguardError('E_OUTBOX_WRITE', `unknown outbox sink "${sink}"; registerSink() first`);
    return c;
  }

  /** Records behind the sink's cursor. */
  depth(sink: string): number {
    this.requireDb();
    return this.stmts!.depth.get(this.cursorOf(sink))?.n ?? 0;
  }

  /** Age of the oldest record the sink has not acknowledged, ms since it was appended; 0 when caught up. */
  lagMs(sink: string): number {
    this.requireDb();
    const row = this.stmts!.oldestAt.get(this.cursorOf(sink));
    return row ? Math.max(0, this.clock.wallMs() - row.at) : 0;
  }

  stats(): OutboxStats {
    const sinks: Record<string, SinkStats> = {};
    for (const name of this.cursors.keys()) sinks[name] = { cursor: this.cursorOf(name), depth: this.depth(name), lagMs: this.lagMs(name) };
    return { rows: this.rowCount, bytes: this.totalBytes, maxBytes: this.config.maxBytes, lastSeq: this.lastSeq, droppedTelemetry: this.dropped, sinks };
  }

  /** Persists changed cursors now (append() does it too). */
  flushCursors(): void {
    if (!this.db || this.dirtyCursors.size === 0) return;
    const tx = this.db.transaction(() => this.writeCursors());
    tx();
  }

  /** Deletes every row all sinks acknowledged, now (append() does it in batches). */
  prune(): void {
    if (!this.db) return;
    const tx = this.db.transaction(() => this.pruneAcked(true));
    tx();
  }

  // --- internals ---------------------------------------------------------------------------------

  private requireDb(): Database.Database {
    if (!this.db) throw new RackguardError('E_OUTBOX_WRITE', 'outbox is not open');
    return this.db;
  }

  private openFile(): void {
    const db = new Database(this.config.path);
    try {
      // The first statements read the header: a garbage file fails here with SQLITE_NOTADB.
      db.pragma('journal_mode = WAL');
      // After WAL: FULL fsyncs the WAL on every commit, so a committed append survives power loss.
      db.pragma(`synchronous = ${this.config.synchronous}`);
      db.pragma('foreign_keys = OFF');
      // better-sqlite3 builds SQLite with a 16 MB page cache per connection; the outbox is written
      // sequentially and read near its tail, so 2 MB serves it and keeps a Pi's RSS small.
      db.pragma('cache_size = -2000');
      db.exec(SCHEMA);
      const agg = db.prepare<[], { rows: number; bytes: number | null; last: number | null }>('SELECT count(*) AS rows, sum(bytes) AS bytes, max(seq) AS last FROM records').get()!;
      const seqRow = db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'records'").get();
      this.rowCount = agg.rows;
      this.totalBytes = agg.bytes ?? 0;
      this.lastSeq = Math.max(agg.last ?? 0, seqRow?.seq ?? 0);
      this.seqAtOpen = this.lastSeq;
      this.stmts = {
        insert: db.prepare('INSERT INTO records (cls, ts, at, point, bytes, body) VALUES (?, ?, ?, ?, ?, ?)'),
        read: db.prepare('SELECT seq, cls, ts, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?'),
        oldestAt: db.prepare('SELECT at FROM records WHERE seq > ? ORDER BY seq LIMIT 1'),
        depth: db.prepare('SELECT count(*) AS n FROM records WHERE seq > ?'),
        setCursor: db.prepare('INSERT INTO cursors (sink, seq) VALUES (?, ?) ON CONFLICT(sink) DO UPDATE SET seq = excluded.seq'),
      };
      this.db = db;
      const stored = db.prepare<[], { sink: string; seq: number }>('SELECT sink, seq FROM cursors').all();
      for (const s of stored) if (this.sinkStarts.has(s.sink)) this.cursors.set(s.sink, s.seq);
      this.prunedThrough = 0;
    } catch (err) {
      this.db = undefined;
      this.stmts = undefined;
      try {
        db.close();
      } catch {
        // closing a handle on a bad file may fail too; the original error is the one that matters
      }
      throw err;
    }
  }

  /** Moves the damaged file aside, starts a fresh one, re-registers the sinks, appends the notice. */
  private recover(err: unknown): { movedTo: string; reason: string } {
    if (this.db) {
      try {
        this.db.close();
      } catch {
        // the file is already known to be bad
      }
      this.db = undefined;
      this.stmts = undefined;
    }
    const stamp = new Date(this.clock.wallMs()).toISOString().replace(/[:.]/g, '-');
    const movedTo = `${this.config.path}.corrupt-${stamp}`;
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(this.config.path + suffix)) renameSync(this.config.path + suffix, movedTo + suffix);
    }
    const reason = `${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}`;
    this.cursors.clear();
    this.dirtyCursors.clear();
    this.openFile();
    // Fresh file: every sink starts at its beginning, which is this notice.
    for (const name of this.sinkStarts.keys()) {
      this.stmts!.setCursor.run(name, 0);
      this.cursors.set(name, 0);
    }
    this.prunedThrough = 0;
    this.fileGeneration++;
    const notice: OutputNotice = {
      kind: 'output',
      code: 'outbox_corrupt',
      severity: 'error',
      message: `outbox ${this.config.path} was unreadable (${reason}); moved aside to ${movedTo} and started empty: records buffered in it were not delivered`,
      ts: this.clock.wallMs(),
      detail: { path: this.config.path, movedTo, reason },
    };
    this.appendTx([{ type: 'event', event: notice }]);
    this.deps.onWarning?.(notice.message, notice.detail);
    return { movedTo, reason };
  }

  private appendTx(entries: readonly OutboxEntry[]): void {
    const db = this.db!;
    const tx = db.transaction(() => {
      const at = this.clock.wallMs();
      for (const e of entries) this.insert(e, at);
      this.writeCursors();
      this.pruneAcked(false);
      if (this.totalBytes > this.config.maxBytes) this.dropOldestTelemetry(at);
    });
    // The in-memory bookkeeping changes inside the transaction; if SQLite rolls it back (disk full),
    // put it back too, or the byte cap and the saved cursors drift from the file.
    const saved = { lastSeq: this.lastSeq, totalBytes: this.totalBytes, rowCount: this.rowCount, prunedThrough: this.prunedThrough, dirty: new Set(this.dirtyCursors) };
    try {
      tx.immediate();
    } catch (err) {
      this.lastSeq = saved.lastSeq;
      this.totalBytes = saved.totalBytes;
      this.rowCount = saved.rowCount;
      this.prunedThrough = saved.prunedThrough;
      for (const name of saved.dirty) this.dirtyCursors.add(name);
      throw err;
    }
  }

  private insert(entry: OutboxEntry, at: number): void {
    const body = JSON.stringify(entry);
    const bytes = Buffer.byteLength(body) + ROW_OVERHEAD_BYTES;
    const cls = entry.type === 'sample' ? TELEMETRY : EVENT;
    const point = entry.type === 'sample' ? entry.sample.pointId : entry.event.kind === 'output' && entry.event.code === 'outbox_gap' ? GAP_MARK : null;
    const info = this.stmts!.insert.run(cls, Math.round(entryTs(entry)), at, point, bytes, body);
    this.lastSeq = Number(info.lastInsertRowid);
    this.totalBytes += bytes;
    this.rowCount++;
  }

  private writeCursors(): void {
    for (const name of this.dirtyCursors) this.stmts!.setCursor.run(name, this.cursors.get(name)!);
    this.dirtyCursors.clear();
  }

  /** Deletes rows every registered sink has acknowledged; batched unless `force`. */
  private pruneAcked(force: boolean): void {
    if (this.cursors.size === 0) return; // nobody drains yet: keep everything (the byte cap still holds)
    const below = Math.min(...this.cursors.values());
    if (below <= this.prunedThrough) return;
    if (!force && below - this.prunedThrough < PRUNE_BATCH_ROWS && this.totalBytes <= this.config.maxBytes) return;
    const db = this.db!;
    const agg = db.prepare<[number], { n: number; bytes: number | null }>('SELECT count(*) AS n, sum(bytes) AS bytes FROM records WHERE seq <= ?').get(below)!;
    db.prepare('DELETE FROM records WHERE seq <= ?').run(below);
    this.rowCount -= agg.n;
    this.totalBytes -= agg.bytes ?? 0;
    this.prunedThrough = below;
  }

  /** Drops the oldest telemetry down to DROP_TARGET_FRACTION of the cap; appends one gap event. */
  private dropOldestTelemetry(now: number): void {
    const db = this.db!;
    const target = Math.floor(this.config.maxBytes * DROP_TARGET_FRACTION);
    let toFree = this.totalBytes - target;
    const perPoint = new Map<string, { pointId: string; firstTs: number; lastTs: number; count: number }>();
    let lastDropped = 0;
    let freed = 0;
    let count = 0;
    const it = db.prepare<[number], { seq: number; point: string | null; ts: number; bytes: number }>('SELECT seq, point, ts, bytes FROM records WHERE cls = ? ORDER BY seq').iterate(TELEMETRY);
    for (const row of it) {
      if (toFree <= 0) break;
      lastDropped = row.seq;
      freed += row.bytes;
      toFree -= row.bytes;
      count++;
      const key = row.point ?? '?';
      const p = perPoint.get(key);
      if (p) {
        p.firstTs = Math.min(p.firstTs, row.ts);
        p.lastTs = Math.max(p.lastTs, row.ts);
        p.count++;
      } else perPoint.set(key, { pointId: key, firstTs: row.ts, lastTs: row.ts, count: 1 });
    }
    if (count > 0) {
      db.prepare('DELETE FROM records WHERE cls = ? AND seq <= ?').run(TELEMETRY, lastDropped);
      this.totalBytes -= freed;
      this.rowCount -= count;
      this.dropped += count;
      // Gap events no sink has read yet are folded into this one: a long outage under a small cap
      // would otherwise fill the buffer with gap events (which, being events, are never dropped).
      const unread = db
        .prepare<[number, string, number], { seq: number; bytes: number; body: string }>('SELECT seq, bytes, body FROM records WHERE cls = ? AND point = ? AND seq > ?')
        .all(EVENT, GAP_MARK, this.maxReadSeq);
      for (const g of unread) {
        const ev = (JSON.parse(g.body) as { event: OutputNotice }).event;
        const d = ev.detail as { droppedCount: number; points: Array<{ pointId: string; firstTs: number; lastTs: number; count: number }> };
        count += d.droppedCount;
        for (const gp of d.points) {
          const p = perPoint.get(gp.pointId);
          if (p) {
            p.firstTs = Math.min(p.firstTs, gp.firstTs);
            p.lastTs = Math.max(p.lastTs, gp.lastTs);
            p.count += gp.count;
          } else perPoint.set(gp.pointId, { ...gp });
        }
        db.prepare('DELETE FROM records WHERE seq = ?').run(g.seq);
        this.totalBytes -= g.bytes;
        this.rowCount--;
      }
      const points = [...perPoint.values()];
      const firstTs = Math.min(...points.map((p) => p.firstTs));
      const lastTs = Math.max(...points.map((p) => p.lastTs));
      this.insert(
        {
          type: 'event',
          event: {
            kind: 'output',
            code: 'outbox_gap',
            severity: 'warning',
            message: `outbox full (${this.config.maxBytes} bytes): dropped the ${count} oldest telemetry samples of ${points.length} points, ${new Date(firstTs).toISOString()} to ${new Date(lastTs).toISOString()}`,
            ts: now,
            detail: { droppedCount: count, firstTs, lastTs, points },
          },
        },
        now,
      );
    }
    if (this.totalBytes > this.config.maxBytes) {
      // Only events are left and they are never dropped: say so once, keep accepting.
      if (!this.overCapacityReported) {
        this.overCapacityReported = true;
        this.deps.onWarning?.('outbox holds more events than maxBytes; events are never dropped, so it keeps growing until a sink drains it', { bytes: this.totalBytes, maxBytes: this.config.maxBytes });
      }
    } else this.overCapacityReported = false;
  }
}
