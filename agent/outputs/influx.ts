/**
 * InfluxDB sink: drains the outbox through its own cursor into InfluxDB 1.x `/write` (InfluxDB 2.x
 * accepts the same through its 1.x-compatible API) with npm `influx`. A Component (agent/component.ts).
 * The layout of the points is ./influx-layout.ts (pure); this file is the drain loop: batching by size
 * and interval, retry with backoff, bisecting a refused batch down to the points to quarantine, and a
 * bounded drain on stop.
 */
import { InfluxDB } from 'influx';
import type { Logger } from 'pino';
import { systemClock, type Clock, type TimerHandle } from '../clock.js';
import { RackguardError, asError } from '../errors.js';
import type { InfluxConfig } from '../config/outputs-schema.js';
import type { Component } from '../component.js';
import { readCredential, type OutputContext, type SinkOutbox } from './context.js';
import { toPoints, type TaggedPoint } from './influx-layout.js';
import { isClockUnsynced } from './events.js';
import type { OutboxRecord, OutputNotice, SinkStart } from './outbox.js';
import type { ClockSync } from '../service/clock-watch.js';

export interface InfluxSinkDeps {
  outbox: SinkOutbox;
  context: OutputContext;
  logger: Logger;
  clock?: Clock;
  /** Cursor name in the outbox. Default 'influx'. */
  sinkName?: string;
  /** Where a sink new to this outbox starts. Default 'end'. */
  startAt?: SinkStart;
  /** At most one quarantine event per point per this interval (the rest are counted into the next). Default 10 min. */
  quarantineEventIntervalMs?: number;
  /** stop() writes what is buffered for at most this long, ms. Default 2 s. */
  drainMs?: number;
  env?: NodeJS.ProcessEnv;
  /**
   * The clock's state: while it is not synchronised, records stamped on it are held (the cursor waits)
   * until the step re-dates them, or for at most `unsyncedHoldMs` (then written as they are).
   */
  clockSync?: ClockSync;
  /** Default 600 000 (10 min); 0: never hold. */
  unsyncedHoldMs?: number;
}

export interface InfluxSinkStats {
  /** `held`: waiting for the clock to be synchronised (records stamped on an unsynchronised clock). */
  state: 'stopped' | 'idle' | 'writing' | 'backoff' | 'held';
  depth: number;
  lagMs: number;
  pointsWritten: number;
  pointsQuarantined: number;
  lastError?: string;
}

/** node-influx backoff interface: we own the retry schedule, so its host is re-enabled at once. */
const NO_BACKOFF = {
  getDelay: () => 0,
  next() {
    return NO_BACKOFF;
  },
  reset() {
    return NO_BACKOFF;
  },
};

function statusOf(err: unknown): number | undefined {
  const res = (err as { res?: { statusCode?: number } } | undefined)?.res;
  return typeof res?.statusCode === 'number' ? res.statusCode : undefined;
}

export class InfluxSink implements Component {
  readonly name: string;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly cursor: string;
  /** Bumped by stop(): a loop left behind at the drain deadline (a write still hanging) ends without acking. */
  private epoch = 0;
  private client: InfluxDB | undefined;
  private running = false;
  /** While stopping: monotonic deadline for writing what is already buffered. */
  private drainUntil: number | undefined;
  private loopDone: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private wakeOnAppend = false;
  private timer: TimerHandle | undefined;
  private state: InfluxSinkStats['state'] = 'stopped';
  private pointsWritten = 0;
  private pointsQuarantined = 0;
  private lastError: string | undefined;
  private databaseReady = false;
  private readonly quarantineReported = new Map<string, { atMono: number; suppressed: number }>();
  /** Monotonic ms the current hold for an unsynchronised clock began. */
  private holdSinceMono: number | undefined;
  private holdExpired = false;
  /** An influx_auth_failed event was appended since the last successful write. */
  private authRefusedReported = false;
  private readonly onSynced = (): void => {
    this.holdSinceMono = undefined;
    this.holdExpired = false;
    this.wake?.();
  };
  private readonly onAppended = (): void => {
    if (this.wakeOnAppend) this.wake?.();
  };

  constructor(
    private readonly config: InfluxConfig,
    private readonly deps: InfluxSinkDeps,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger;
    this.cursor = deps.sinkName ?? 'influx';
    this.name = `sink:${this.cursor}`;
  }

  /** Registers the cursor and starts the drain loop; resolves at once (never waits for InfluxDB). */
  async start(): Promise<void> {
    if (this.running) return;
    this.drainUntil = undefined;
    const env = this.deps.env ?? process.env;
    const url = new URL(this.config.url);
    const username = readCredential(this.config.usernameFile, 'RACKGUARD_INFLUX_USERNAME', env);
    const password = readCredential(this.config.passwordFile, 'RACKGUARD_INFLUX_PASSWORD', env);
    this.client = new InfluxDB({
      hosts: [{ host: url.hostname, port: Number(url.port || (url.protocol === 'https:' ? 443 : 8086)), protocol: url.protocol === 'https:' ? 'https' : 'http', path: url.pathname }],
      database: this.config.database,
      ...(username !== undefined ? { username, password: password ?? '' } : {}),
      // One attempt per call and no host blacklisting: the retry schedule is ours (retryInitialMs…).
      pool: { maxRetries: 0, requestTimeout: this.config.requestTimeoutMs, backoff: NO_BACKOFF },
    });
    this.deps.outbox.registerSink(this.cursor, this.deps.startAt ?? 'end');
    this.deps.outbox.on('appended', this.onAppended);
    this.deps.clockSync?.on('synced', this.onSynced);
    this.running = true;
    this.state = 'idle';
    this.databaseReady = false;
    this.loopDone = this.loop(this.epoch).catch((err: unknown) => {
      this.log.error({ err }, 'influx sink loop failed');
    });
  }

  /**
   * Stops the loop. What is already buffered gets up to `drainMs` to be written (a clean SIGTERM
   * leaves InfluxDB current); whatever is left stays in the outbox for the next start. No retries
   * while draining: a database that is down must not hold up shutdown, and a write that hangs is
   * abandoned at the deadline (its records stay unacknowledged). Safe at any stage and twice.
   */
  async stop(drainMs = this.deps.drainMs ?? 2000): Promise<void> {
    this.drainUntil = this.clock.monoMs() + drainMs;
    this.running = false;
    this.deps.outbox.off('appended', this.onAppended);
    this.deps.clockSync?.off('synced', this.onSynced);
    this.wake?.();
    try {
      if (this.loopDone) await this.within(this.loopDone, drainMs);
    } finally {
      this.epoch++;
      this.wake?.();
      this.loopDone = undefined;
      this.state = 'stopped';
      try {
        if (this.deps.outbox.isOpen) this.deps.outbox.flushCursors();
      } catch (err) {
        this.log.warn({ err }, 'influx sink: could not persist its cursor on stop');
      }
    }
  }

  stats(): InfluxSinkStats {
    const ob = this.deps.outbox;
    const open = ob.isOpen && this.state !== 'stopped';
    return {
      state: this.state,
      depth: open ? ob.depth(this.cursor) : 0,
      lagMs: open ? ob.lagMs(this.cursor) : 0,
      pointsWritten: this.pointsWritten,
      pointsQuarantined: this.pointsQuarantined,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }

  /** Waits for `p`, at most `ms` on the injected clock. */
  private within(p: Promise<void>, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = this.clock.setTimeout(resolve, ms);
      void p.then(() => {
        this.clock.clearTimeout(t);
        resolve();
      });
    });
  }

  /** Resolves after `ms` (or at once on stop; also on a new append when `onAppend`). */
  private sleep(ms: number | undefined, onAppend: boolean): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.clock.clearTimeout(this.timer);
        this.timer = undefined;
        this.wake = undefined;
        this.wakeOnAppend = false;
        resolve();
      };
      this.wake = done;
      this.wakeOnAppend = onAppend;
      if (ms !== undefined) this.timer = this.clock.setTimeout(done, ms);
    });
  }

  private async loop(epoch: number): Promise<void> {
    const outbox = this.deps.outbox;
    let backoffMs = this.config.retryInitialMs;
    let partialSinceMono: number | undefined;
    while (epoch === this.epoch && (this.running || this.clock.monoMs() < (this.drainUntil ?? 0))) {
      if (!outbox.isOpen) return;
      let records;
      try {
        records = outbox.read(this.cursor, this.config.batchSize);
      } catch (err) {
        // A transient read error (busy, I/O) must not end the sink for good: back off and retry.
        if (!this.running) return;
        this.lastError = asError(err).message;
        this.log.error({ err: this.lastError, retryInMs: backoffMs }, 'influx sink: outbox read failed; retrying');
        await this.sleep(backoffMs, false);
        backoffMs = Math.min(backoffMs * 2, this.config.retryMaxMs);
        continue;
      }
      if (records.length === 0) {
        if (!this.running) return; // drained
        partialSinceMono = undefined;
        this.state = 'idle';
        await this.sleep(undefined, true);
        continue;
      }
      const holdAt = this.holdIndex(records);
      if (holdAt === 0) {
        // Never write a point at a time that is days off: wait for the step (or the hold's end).
        if (!this.running) return;
        partialSinceMono = undefined;
        this.state = 'held';
        await this.sleep(Math.max(0, this.holdSinceMono! + this.unsyncedHoldMs - this.clock.monoMs()), false);
        continue;
      }
      if (holdAt < records.length) records = records.slice(0, holdAt);
      if (records.length < this.config.batchSize && this.running) {
        // Batch by size and interval: a partial batch waits up to flushIntervalMs for more.
        partialSinceMono ??= this.clock.monoMs();
        const waitMs = partialSinceMono + this.config.flushIntervalMs - this.clock.monoMs();
        if (waitMs > 0) {
          this.state = 'idle';
          await this.sleep(waitMs, true);
          continue;
        }
      }
      this.state = 'writing';
      try {
        const generation = outbox.generation;
        await this.ensureDatabase();
        await this.writeBisecting(this.toPoints(records));
        if (epoch !== this.epoch) return; // stop() gave up on this write: leave the cursor alone
        // A damaged outbox replaced during the write restarts its seqs: acking the old seq would skip new records.
        if (outbox.generation === generation) outbox.ack(this.cursor, records.at(-1)!.seq);
        partialSinceMono = undefined;
        backoffMs = this.config.retryInitialMs;
        this.lastError = undefined;
        this.authRefusedReported = false;
      } catch (err) {
        if (!this.running || epoch !== this.epoch) return;
        // Retryable (network, timeout, 5xx, 429, or a refusal we cannot attribute to points): the cursor
        // stays, the same records are written again later, idempotently.
        this.lastError = asError(err).message;
        this.log.warn({ err: this.lastError, retryInMs: backoffMs, depth: outbox.depth(this.cursor) }, 'influx write failed; retrying');
        this.reportRefusal(statusOf(err) ?? statusOf((err as { cause?: unknown }).cause));
        this.state = 'backoff';
        await this.sleep(backoffMs, false);
        backoffMs = Math.min(backoffMs * 2, this.config.retryMaxMs);
      }
    }
  }

  private get unsyncedHoldMs(): number {
    return this.deps.unsyncedHoldMs ?? 600_000;
  }

  /** Index of the first record to hold back for the clock (records.length: none). */
  private holdIndex(records: readonly OutboxRecord[]): number {
    const sync = this.deps.clockSync;
    if (!sync || sync.synced || this.holdExpired || this.unsyncedHoldMs === 0) return records.length;
    const i = records.findIndex((r) => isClockUnsynced(r.entry));
    if (i < 0) return records.length;
    const now = this.clock.monoMs();
    this.holdSinceMono ??= now;
    if (now - this.holdSinceMono < this.unsyncedHoldMs) return i;
    this.holdExpired = true;
    this.log.warn(
      { unsyncedHoldS: this.unsyncedHoldMs / 1000 },
      'influx: the wall clock is still not synchronised after the hold; writing records with their times as they are (field clock_unsynced=true)',
    );
    return records.length;
  }

  private async ensureDatabase(): Promise<void> {
    if (this.databaseReady) return;
    try {
      // CREATE DATABASE is idempotent in 1.x. 2.x (or a user without admin) refuses: then the database
      // must already exist, which the first write tells us soon enough.
      await this.client!.createDatabase(this.config.database);
    } catch (err) {
      const status = statusOf(err);
      if (status === undefined || status >= 500) {
        throw new RackguardError('E_INFLUX_WRITE', `influx CREATE DATABASE ${this.config.database} at ${this.where()} failed: ${this.describe(err)}`, { cause: err, retryable: true });
      }
      this.log.info({ err: asError(err).message }, 'influx: CREATE DATABASE refused; assuming the database exists');
    }
    this.databaseReady = true;
  }

  /** The server and database, for errors: the URL without any user:password part. */
  private where(): string {
    let url = '(unparsable url)';
    try {
      const u = new URL(this.config.url);
      u.username = '';
      u.password = '';
      url = u.toString().replace(/\/$/, '');
    } catch {
      // schema-checked; keep the placeholder
    }
    return `${url} (database ${this.config.database})`;
  }

  /** node-influx's error text, with its bare "Request timed out" (a server that never answers, e.g. frozen) made explicit. */
  private describe(err: unknown): string {
    const msg = asError(err).message;
    return /^Request timed out$/i.test(msg) ? `request timed out: no answer within requestTimeoutMs (${this.config.requestTimeoutMs} ms)` : msg;
  }

  /** Writes the batch; on a 400/413 splits it in halves until the bad points are isolated and quarantined. */
  private async writeBisecting(points: TaggedPoint[]): Promise<void> {
    if (points.length === 0) return;
    try {
      await this.client!.writePoints(
        points.map((p) => p.point),
        { precision: 'n' },
      );
      this.pointsWritten += points.length;
    } catch (err) {
      const status = statusOf(err);
      if (status === 404 && /database not found/i.test(asError(err).message)) this.databaseReady = false;
      if (status !== 400 && status !== 413) {
        throw new RackguardError('E_INFLUX_WRITE', `influx write of ${points.length} points to ${this.where()} failed: ${this.describe(err)}`, { cause: err, retryable: true });
      }
      if (points.length === 1) {
        this.quarantine(points[0]!, asError(err).message);
        return;
      }
      const mid = Math.ceil(points.length / 2);
      await this.writeBisecting(points.slice(0, mid));
      await this.writeBisecting(points.slice(mid));
    }
  }

  /**
   * 401/403: wrong or missing credentials, or a user without write access. Retrying cannot fix it and
   * every point waits in the outbox meanwhile: one error event per episode (until a write succeeds), so
   * an operator sees it in the events and not only in the log.
   */
  private reportRefusal(status: number | undefined): void {
    if ((status !== 401 && status !== 403) || this.authRefusedReported) return;
    this.authRefusedReported = true;
    const notice: OutputNotice = {
      kind: 'output',
      code: 'influx_auth_failed',
      severity: 'error',
      message: `InfluxDB ${this.where()} refused the write with HTTP ${status}: check usernameFile/passwordFile and the user's write permission; points wait in the outbox and are retried`,
      ts: this.clock.wallMs(),
      detail: { server: this.where(), httpStatus: status },
    };
    this.deps.outbox.appendEvent(notice);
  }

  private quarantine(p: TaggedPoint, reason: string): void {
    this.pointsQuarantined++;
    const key = `${p.point.measurement}/${p.label}`;
    const seen = this.quarantineReported.get(key);
    const now = this.clock.monoMs();
    const intervalMs = this.deps.quarantineEventIntervalMs ?? 600_000;
    this.log.warn({ measurement: p.point.measurement, point: p.label, reason }, 'influx refused a point; quarantined (skipped)');
    if (seen && now - seen.atMono < intervalMs) {
      seen.suppressed++;
      return;
    }
    const suppressed = seen?.suppressed ?? 0;
    this.quarantineReported.set(key, { atMono: now, suppressed: 0 });
    const notice: OutputNotice = {
      kind: 'output',
      code: 'influx_point_quarantined',
      severity: 'warning',
      message: `InfluxDB refused ${p.point.measurement} point ${p.label}: ${reason.slice(0, 300)}; skipped${suppressed > 0 ? ` (and ${suppressed} earlier ones of it since the last report)` : ''}`,
      ts: this.clock.wallMs(),
      detail: { measurement: p.point.measurement, point: p.label, seq: p.seq, time: p.point.timestamp, tags: p.point.tags, fields: p.point.fields, reason, suppressedSinceLastReport: suppressed },
    };
    this.deps.outbox.appendEvent(notice);
  }

  /** Pure mapping of outbox records to InfluxDB points (see ./influx-layout.ts). */
  toPoints(records: readonly OutboxRecord[]): TaggedPoint[] {
    return toPoints(records, this.deps.context, this.config.measurementPrefix ?? '');
  }
}
