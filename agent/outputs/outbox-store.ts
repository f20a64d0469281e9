/**
 * The outbox's storage: one SQLite file of records (seq, class, time, JSON body) and the sinks'
 * cursors. It knows nothing of sinks, timers or failures: outbox.ts decides when to commit, assigns
 * the seqs, and keeps what cannot be written in memory.
 *
 * Why SQLite: one file, atomic transactions, WAL (readers never block the writer), and it survives
 * `kill -9` and power loss with `synchronous=FULL` (better-sqlite3 is compiled with WAL + NORMAL as
 * its default, which may roll back the last commits on power loss: see FIELD-NOTES, SQLite).
 */
import { existsSync, renameSync, rmSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import type { OutboxConfig } from '../config/outputs-schema.js';
import { DROP_TARGET_FRACTION, GapTally, type GapDetail } from './capacity.js';
import { isGapNotice, type OutboxEntry, type OutboxRecord, type OutputNotice, type RecordClass } from './events.js';

/** A record on its way into the store: seq assigned by the outbox, `at` = wall ms it was appended. */
export interface PendingRecord extends OutboxRecord {
  at: number;
}

/** Bytes accounted per row on top of its JSON body: rowid, columns, index entries, page slack. */
const ROW_OVERHEAD_BYTES = 64;
/** Delete acknowledged rows once this many are pending deletion (a few DELETEs per hour, not per ack). */
const PRUNE_BATCH_ROWS = 2000;
/** `point` column value marking gap events, so unread ones can be found and merged. */
const GAP_MARK = '#gap';
const TELEMETRY = 0;
const EVENT = 1;
/** SQL: the row is marked clockUnsynced (a sample's flag, or an event entry's). */
const MARKED = `coalesce(json_extract(body, '$.sample.clockUnsynced'), json_extract(body, '$.clockUnsynced'), 0) = 1`;
/** SQL: its ts − mono is within @tol of the new wall − mono offset @off (stamped after the step). */
const ON_NEW_BASE = `abs(ts - coalesce(json_extract(body, '$.sample.mono'), json_extract(body, '$.mono'), -1e300) - @off) <= @tol`;

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

export function isCorruption(err: unknown): boolean {
  const code = sqliteCode(err);
  return code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB';
}

export function sqliteCode(err: unknown): string {
  return typeof err === 'object' && err && 'code' in err ? String((err as { code: unknown }).code) : '';
}

export interface CommitOptions {
  /** Wall ms of this commit (gap event time). */
  now: number;
  /** Rows at or below this seq are acknowledged by every sink and may be deleted; undefined: keep all. */
  pruneBelow: number | undefined;
  /** Highest seq any sink has read: unread gap events above it may be merged into a new one. */
  maxReadSeq: number;
  /** A fresh seq for a gap event the byte cap makes inside this commit. */
  allocSeq: () => number;
}

export interface CommitResult {
  /** Telemetry rows the byte cap dropped in this commit. */
  droppedTelemetry: number;
  /** The gap event inserted for them, if any. */
  gap?: PendingRecord;
}

export class OutboxStore {
  private db: Database.Database | undefined;
  private stmts:
    | {
        insert: Database.Statement<[number, number, number, number, string | null, number, string]>;
        read: Database.Statement<[number, number], RawRow>;
        oldestAt: Database.Statement<[number], { at: number }>;
        depth: Database.Statement<[number], { n: number }>;
        setCursor: Database.Statement<[string, number]>;
        getCursor: Database.Statement<[string], { seq: number }>;
      }
    | undefined;
  rows = 0;
  bytes = 0;
  /** Highest seq in the file, in sqlite_sequence or in a stored cursor: new seqs must be above it. */
  lastSeq = 0;
  private prunedThrough = 0;
  private overCapacityReported = false;
  /** Device and inode of the file opened, to notice it deleted or replaced under us. */
  private identity: { dev: number; ino: number } | undefined;

  constructor(
    private readonly config: OutboxConfig,
    private readonly onWarning: (message: string, detail: Record<string, unknown>) => void = () => undefined,
  ) {}

  get isOpen(): boolean {
    return this.db !== undefined;
  }

  /** Opens (or creates) the file. Throws SQLite's or the filesystem's error as is (the caller classifies). */
  open(): void {
    if (this.db) return;
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
      // A full scan: damaged pages show up here, at open, rather than in the middle of a run.
      const agg = db.prepare<[], { rows: number; bytes: number | null; last: number | null }>('SELECT count(*) AS rows, sum(bytes) AS bytes, max(seq) AS last FROM records').get()!;
      const seqRow = db.prepare<[], { seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'records'").get();
      // A cursor may be ahead of every stored row (events delivered live from memory, telemetry that
      // was never written): new seqs must still be above it, or that sink would skip them.
      const curRow = db.prepare<[], { seq: number | null }>('SELECT max(seq) AS seq FROM cursors').get();
      this.rows = agg.rows;
      this.bytes = agg.bytes ?? 0;
      this.lastSeq = Math.max(agg.last ?? 0, seqRow?.seq ?? 0, curRow?.seq ?? 0);
      this.stmts = {
        insert: db.prepare('INSERT INTO records (seq, cls, ts, at, point, bytes, body) VALUES (?, ?, ?, ?, ?, ?, ?)'),
        read: db.prepare('SELECT seq, cls, ts, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?'),
        oldestAt: db.prepare('SELECT at FROM records WHERE seq > ? ORDER BY seq LIMIT 1'),
        depth: db.prepare('SELECT count(*) AS n FROM records WHERE seq > ?'),
        setCursor: db.prepare('INSERT INTO cursors (sink, seq) VALUES (?, ?) ON CONFLICT(sink) DO UPDATE SET seq = excluded.seq'),
        getCursor: db.prepare('SELECT seq FROM cursors WHERE sink = ?'),
      };
      const st = statSync(this.config.path);
      this.identity = { dev: st.dev, ino: st.ino };
      this.db = db;
      this.prunedThrough = 0;
    } catch (err) {
      this.stmts = undefined;
      try {
        db.close();
      } catch {
        // closing a handle on a bad file may fail too; the original error is the one that matters
      }
      throw err;
    }
  }

  close(): void {
    const db = this.db;
    this.db = undefined;
    this.stmts = undefined;
    this.identity = undefined;
    db?.close();
  }

  /**
   * True when the path no longer names the open file (deleted, or replaced by another): SQLite goes on
   * writing to the orphaned inode, and everything in it is gone at the next start.
   */
  get detached(): boolean {
    if (!this.db || !this.identity) return false;
    try {
      const st = statSync(this.config.path);
      return st.ino !== this.identity.ino || st.dev !== this.identity.dev;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ENOENT';
    }
  }

  /**
   * Writes the open database (rows, seqs, cursors) back to its path and reopens it there; whatever
   * else stands at the path is moved aside (returned). Throws when the copy cannot be made (then the
   * open handle is kept, unchanged) or the copy cannot be opened (then the store is closed).
   */
  restore(stamp: string): string | undefined {
    const path = this.config.path;
    const tmp = `${path}.restore-${process.pid}`;
    rmSync(tmp, { force: true });
    try {
      this.db!.prepare('VACUUM INTO ?').run(tmp);
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
    // Closing first: it checkpoints into the orphaned file and removes our -wal/-shm, which must not be
    // applied to the restored file.
    this.close();
    let movedAside: string | undefined;
    if (existsSync(path)) {
      movedAside = `${path}.replaced-${stamp}`;
      for (const suffix of ['', '-wal', '-shm']) if (existsSync(path + suffix)) renameSync(path + suffix, movedAside + suffix);
    }
    for (const suffix of ['-wal', '-shm']) rmSync(path + suffix, { force: true });
    renameSync(tmp, path);
    this.open();
    return movedAside;
  }

  /** Moves the (damaged) file and its -wal/-shm aside; returns the new name. The store must be closed. */
  moveAside(stamp: string): string {
    if (this.db) this.close();
    const movedTo = `${this.config.path}.corrupt-${stamp}`;
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(this.config.path + suffix)) renameSync(this.config.path + suffix, movedTo + suffix);
    }
    return movedTo;
  }

  /** True while a transaction is open on the handle (a failed ROLLBACK leaves one): the handle is unusable. */
  get wedged(): boolean {
    return this.db?.inTransaction ?? false;
  }

  storedCursor(sink: string): number | undefined {
    return this.stmts!.getCursor.get(sink)?.seq;
  }

  storedSinks(): string[] {
    return this.db!.prepare<[], { sink: string }>('SELECT sink FROM cursors ORDER BY sink')
      .all()
      .map((r) => r.sink);
  }

  removeCursor(sink: string): void {
    this.db!.prepare('DELETE FROM cursors WHERE sink = ?').run(sink);
  }

  writeCursors(cursors: Iterable<[string, number]>): void {
    const tx = this.db!.transaction(() => {
      for (const [name, seq] of cursors) this.stmts!.setCursor.run(name, seq);
    });
    tx();
  }

  /**
   * ONE transaction (one fsync with synchronous=FULL): the records, the cursors, the batched deletion
   * of acknowledged rows and the byte cap. On failure (disk full, I/O error) nothing of it is kept,
   * in the file or in this object's bookkeeping, and the error is thrown as is.
   */
  commit(records: readonly PendingRecord[], cursors: Iterable<[string, number]>, opts: CommitOptions): CommitResult {
    const db = this.db!;
    const saved = { lastSeq: this.lastSeq, bytes: this.bytes, rows: this.rows, prunedThrough: this.prunedThrough };
    const result: CommitResult = { droppedTelemetry: 0 };
    const tx = db.transaction(() => {
      for (const r of records) this.insert(r);
      for (const [name, seq] of cursors) this.stmts!.setCursor.run(name, seq);
      this.pruneAcked(opts.pruneBelow, false);
      if (this.bytes > this.config.maxBytes) Object.assign(result, this.dropOldestTelemetry(opts));
    });
    try {
      tx.immediate();
    } catch (err) {
      // SQLite rolled the file back; put the in-memory bookkeeping back too, or the byte cap drifts.
      Object.assign(this, saved);
      throw err;
    }
    return result;
  }

  read(after: number, limit: number): OutboxRecord[] {
    return this.stmts!.read.all(after, limit).map((r) => ({
      seq: r.seq,
      cls: r.cls === TELEMETRY ? 'telemetry' : 'event',
      ts: r.ts,
      entry: JSON.parse(r.body) as OutboxEntry,
    }));
  }

  depth(after: number): number {
    return this.stmts!.depth.get(after)?.n ?? 0;
  }

  /** Wall ms the oldest record after `after` was appended. */
  oldestAt(after: number): number | undefined {
    return this.stmts!.oldestAt.get(after)?.at;
  }

  /**
   * After a wall-clock step: moves the rows stamped on the old time base, in ONE UPDATE (one
   * transaction). A row marked clockUnsynced whose ts − mono is within `toleranceMs` of the new offset
   * was stamped after the step and only loses the mark; every other marked row gets `stepMs` added to
   * its ts (column and body) and `clockRedatedMs` set. Unmarked rows keep their ts; every row's append
   * time `at` follows the step (it was taken before it), except the new-base ones. The same rule as
   * redateRecord() in events.ts. Returns the rows re-dated.
   */
  redate(step: { stepMs: number; newOffsetMs: number; toleranceMs: number }): number {
    const db = this.db!;
    const tx = db.transaction(() => {
      const counts = db
        .prepare<[{ off: number; tol: number }], { marked: number | null; moved: number | null }>(`SELECT sum(${MARKED}) AS marked, sum(${MARKED} AND NOT ${ON_NEW_BASE}) AS moved FROM records`)
        .get({ off: step.newOffsetMs, tol: step.toleranceMs })!;
      const marked = counts.marked ?? 0;
      const moved = counts.moved ?? 0;
      db.prepare(
        `UPDATE records SET
           at = CASE WHEN ${MARKED} AND ${ON_NEW_BASE} THEN at ELSE at + @d END,
           ts = CASE WHEN ${MARKED} AND NOT ${ON_NEW_BASE} THEN ts + @d ELSE ts END,
           body = CASE
             WHEN NOT ${MARKED} THEN body
             WHEN ${ON_NEW_BASE} THEN json_remove(body, '$.sample.clockUnsynced', '$.clockUnsynced')
             WHEN cls = ${TELEMETRY} THEN json_set(json_remove(body, '$.sample.clockUnsynced'), '$.sample.ts', json_extract(body, '$.sample.ts') + @d, '$.clockRedatedMs', @d)
             ELSE json_set(json_remove(body, '$.clockUnsynced'), '$.event.ts', json_extract(body, '$.event.ts') + @d, '$.clockRedatedMs', @d)
           END`,
      ).run({ d: step.stepMs, off: step.newOffsetMs, tol: step.toleranceMs });
      // Bodies changed length a little: keep the byte cap's accounting exact.
      if (marked > 0) {
        db.prepare(`UPDATE records SET bytes = length(CAST(body AS BLOB)) + ${ROW_OVERHEAD_BYTES} WHERE bytes != length(CAST(body AS BLOB)) + ${ROW_OVERHEAD_BYTES}`).run();
        this.bytes = db.prepare<[], { b: number | null }>('SELECT sum(bytes) AS b FROM records').get()!.b ?? 0;
      }
      return moved;
    });
    return tx.immediate();
  }

  /** Deletes every row at or below `below` now. */
  prune(below: number | undefined): void {
    const tx = this.db!.transaction(() => this.pruneAcked(below, true));
    tx();
  }

  // --- internals ---------------------------------------------------------------------------------

  private insert(r: PendingRecord): void {
    const body = JSON.stringify(r.entry);
    const bytes = Buffer.byteLength(body) + ROW_OVERHEAD_BYTES;
    const e = r.entry;
    const point = e.type === 'sample' ? e.sample.pointId : isGapNotice(e) ? GAP_MARK : null;
    this.stmts!.insert.run(r.seq, classCode(r.cls), Math.round(r.ts), r.at, point, bytes, body);
    if (r.seq > this.lastSeq) this.lastSeq = r.seq;
    this.bytes += bytes;
    this.rows++;
  }

  /** Deletes rows every registered sink has acknowledged; batched unless `force`. */
  private pruneAcked(below: number | undefined, force: boolean): void {
    if (below === undefined) return; // nobody drains yet: keep everything (the byte cap still holds)
    if (below <= this.prunedThrough) return;
    if (!force && below - this.prunedThrough < PRUNE_BATCH_ROWS && this.bytes <= this.config.maxBytes) return;
    const db = this.db!;
    const agg = db.prepare<[number], { n: number; bytes: number | null }>('SELECT count(*) AS n, sum(bytes) AS bytes FROM records WHERE seq <= ?').get(below)!;
    db.prepare('DELETE FROM records WHERE seq <= ?').run(below);
    this.rows -= agg.n;
    this.bytes -= agg.bytes ?? 0;
    this.prunedThrough = below;
  }

  /** Drops the oldest telemetry down to DROP_TARGET_FRACTION of the cap; inserts one gap event. */
  private dropOldestTelemetry(opts: CommitOptions): CommitResult {
    const db = this.db!;
    const target = Math.floor(this.config.maxBytes * DROP_TARGET_FRACTION);
    let toFree = this.bytes - target;
    const tally = new GapTally();
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
      tally.add(row.point ?? '?', row.ts);
    }
    const result: CommitResult = { droppedTelemetry: count };
    if (count > 0) {
      db.prepare('DELETE FROM records WHERE cls = ? AND seq <= ?').run(TELEMETRY, lastDropped);
      this.bytes -= freed;
      this.rows -= count;
      // Gap events no sink has read yet are folded into this one: a long outage under a small cap
      // would otherwise fill the buffer with gap events (which, being events, are never dropped).
      const unread = db
        .prepare<[number, string, number], { seq: number; bytes: number; body: string }>('SELECT seq, bytes, body FROM records WHERE cls = ? AND point = ? AND seq > ?')
        .all(EVENT, GAP_MARK, opts.maxReadSeq);
      for (const g of unread) {
        tally.merge((JSON.parse(g.body) as { event: OutputNotice }).event.detail as unknown as GapDetail);
        db.prepare('DELETE FROM records WHERE seq = ?').run(g.seq);
        this.bytes -= g.bytes;
        this.rows--;
      }
      const notice = tally.notice(opts.now, `outbox full (${this.config.maxBytes} bytes)`);
      const gap: PendingRecord = { seq: opts.allocSeq(), cls: 'event', ts: opts.now, at: opts.now, entry: { type: 'event', event: notice } };
      this.insert(gap);
      result.gap = gap;
    }
    if (this.bytes > this.config.maxBytes) {
      // Only events are left and they are never dropped: say so once, keep accepting.
      if (!this.overCapacityReported) {
        this.overCapacityReported = true;
        this.onWarning('outbox holds more events than maxBytes; events are never dropped, so it keeps growing until a sink drains it', { bytes: this.bytes, maxBytes: this.config.maxBytes });
      }
    } else this.overCapacityReported = false;
    return result;
  }
}

function classCode(cls: RecordClass): number {
  return cls === 'telemetry' ? TELEMETRY : EVENT;
}
