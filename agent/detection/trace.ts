/**
 * Traces: recorded samples as long CSV, `time_s,point,value`. time_s is float seconds from the
 * trace's start, point a configured point id, value a number (chiller running as 0/1) or empty for
 * a failed read. `rackguard run --record FILE` writes them; `rackguard replay` reads them.
 */
import { close, constants, createWriteStream, fstat, open, type Stats } from 'node:fs';
import { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import type { Clock } from '../clock.js';
import type { Component } from '../component.js';
import { describeFileType } from '../config/read-file.js';
import type { Config, PointDef } from '../config/model.js';
import { RackguardError } from '../errors.js';
import { NUMBER_TEXT, PointTracker } from '../acquisition/samples.js';
import type { Sample } from '../acquisition/types.js';

export const TRACE_HEADER = 'time_s,point,value';

export class TraceError extends RackguardError {
  constructor(source: string, line: number, message: string) {
    super('E_TRACE_INVALID', `${source}:${line}: ${message}`);
  }
}

export interface TraceBatch {
  timeS: number;
  samples: Sample[];
}


/**
 * Parses a trace into batches of samples that share a time. Values go through the point's quality
 * rules again (valid range, frozen detection), as the live agent applies them. Times must not go
 * backwards. `startWallMs` dates the samples for humans; detection uses only the monotonic time.
 */
export function* parseTrace(text: string, config: Config, opts: { source?: string; startWallMs?: number } = {}): Generator<TraceBatch> {
  const source = opts.source ?? 'trace';
  const startWall = opts.startWallMs ?? Date.UTC(2026, 0, 1);
  const trackers = new Map<string, PointTracker>();
  const tracker = (p: PointDef): PointTracker => {
    let t = trackers.get(p.id);
    if (!t) trackers.set(p.id, (t = new PointTracker(p)));
    return t;
  };
  let pos = 0;
  let lineNo = 0;
  let batch: TraceBatch | undefined;
  let lastTime = -Infinity;
  while (pos < text.length) {
    let end = text.indexOf('\n', pos);
    if (end < 0) end = text.length;
    let line = text.slice(pos, end);
    pos = end + 1;
    lineNo++;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (lineNo === 1) {
      if (line.trim() !== TRACE_HEADER) throw new TraceError(source, 1, `expected the header "${TRACE_HEADER}", got "${line.slice(0, 60)}"`);
      continue;
    }
    if (line.trim() === '') continue;
    const c1 = line.indexOf(',');
    const c2 = c1 < 0 ? -1 : line.indexOf(',', c1 + 1);
    if (c1 < 0 || c2 < 0 || line.indexOf(',', c2 + 1) >= 0) throw new TraceError(source, lineNo, `expected 3 fields (time_s,point,value), got "${line.slice(0, 80)}"`);
    const timeText = line.slice(0, c1).trim();
    const pointId = line.slice(c1 + 1, c2).trim();
    const valueText = line.slice(c2 + 1).trim();
    if (!NUMBER_TEXT.test(timeText)) throw new TraceError(source, lineNo, `time_s is not a number: "${timeText}"`);
    const timeS = Number(timeText);
    if (timeS < lastTime) throw new TraceError(source, lineNo, `time_s goes backwards (${timeS} after ${lastTime})`);
    const point = config.points.get(pointId);
    if (!point) throw new TraceError(source, lineNo, `unknown point "${pointId}" (not in ${config.source})`);
    if (valueText !== '' && !NUMBER_TEXT.test(valueText)) throw new TraceError(source, lineNo, `value of ${pointId} is not a number: "${valueText}"`);
    if (batch && timeS !== batch.timeS) {
      yield batch;
      batch = undefined;
    }
    lastTime = timeS;
    batch ??= { timeS, samples: [] };
    const at = { ts: startWall + timeS * 1000, mono: timeS * 1000 };
    const t = tracker(point);
    batch.samples.push(valueText === '' ? t.failed('recorded as a failed read', at) : t.engineering(Number(valueText), at));
  }
  if (batch) yield batch;
}

/** What the recorder logs through: pino's Logger fits. */
export interface RecorderLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface TraceRecorderDeps {
  clock: Clock;
  logger: RecorderLogger;
  /** Trace times are seconds since this monotonic instant. Default: when start() is called. */
  startMono?: number;
  /** Bytes waiting to be written beyond which new rows are dropped, and counted. Default 1 MiB. */
  maxBufferedBytes?: number;
  /** Dropped rows are logged once when the dropping starts, then summarised at most this often. Default 60 s. */
  reportIntervalMs?: number;
  /** How long stop() waits for buffered rows to reach the file or pipe. Default 10 s. */
  flushTimeoutMs?: number;
}

const DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024;
const DEFAULT_REPORT_INTERVAL_MS = 60_000;
const DEFAULT_FLUSH_TIMEOUT_MS = 10_000;

function openNonBlocking(file: string): Promise<number> {
  return new Promise((resolve, reject) =>
    // O_NONBLOCK: a FIFO nobody reads fails at once (ENXIO) instead of blocking a libuv thread, and with
    // it start-up and every later signal (issue 7: two SIGTERMs were ignored). O_NOCTTY: a tty path never
    // becomes our controlling terminal.
    open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NONBLOCK | constants.O_NOCTTY, 0o644, (err, fd) => (err ? reject(err) : resolve(fd))),
  );
}

function fstatAsync(fd: number): Promise<Stats> {
  return new Promise((resolve, reject) => fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));
}

/**
 * `rackguard run --record FILE`: appends every sample to a trace as it comes, with times in seconds
 * since the recorder started.
 *
 * The trace is a diagnostic side channel, so it never holds the agent back: the open is asynchronous
 * and non-blocking, and a target that cannot be opened (a FIFO that no process reads, a directory,
 * a missing directory) is reported and the agent goes on without recording; it does not refuse to
 * start, because acquisition and detection matter more than their recording. A regular file, a
 * FIFO or pipe with a reader (`--record >(gzip > t.csv.gz)`) and a character device are accepted.
 * After the open, back-pressure and write errors are reported too: at most maxBufferedBytes wait in
 * memory, rows beyond that are dropped and counted, the first drop is logged at once and later ones
 * as a rate-limited summary; a write error (disk full, reader gone) is logged once and ends the
 * recording.
 */
export class TraceRecorder implements Component {
  readonly name = 'recorder';
  /** Rows handed to the file or pipe since start(). */
  rows = 0;
  /** Rows dropped since start(): not open, failed, or the writes backed up past maxBufferedBytes. */
  dropped = 0;
  private out: Writable | undefined;
  private state: 'idle' | 'opening' | 'open' | 'failed' | 'stopped' = 'idle';
  private startMono = 0;
  private opening: Promise<void> | undefined;
  /** Rows dropped since the last report, why, and when the last report was logged. */
  private unreported = 0;
  private dropReason = '';
  private lastReportMono: number | undefined;
  private readonly maxBufferedBytes: number;
  private readonly reportIntervalMs: number;
  private readonly flushTimeoutMs: number;

  constructor(
    readonly file: string,
    private readonly deps: TraceRecorderDeps,
  ) {
    this.maxBufferedBytes = deps.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    this.reportIntervalMs = deps.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS;
    this.flushTimeoutMs = deps.flushTimeoutMs ?? DEFAULT_FLUSH_TIMEOUT_MS;
  }

  /** Whether rows are being written now. */
  get recording(): boolean {
    return this.state === 'open';
  }

  /**
   * Opens the trace without blocking. Never rejects: a target that cannot be opened is reported
   * and the recorder stays off until the next start().
   */
  async start(): Promise<void> {
    if (this.state === 'opening' || this.state === 'open') return this.opening;
    this.state = 'opening';
    this.rows = 0;
    this.dropped = 0;
    this.unreported = 0;
    this.lastReportMono = undefined;
    this.startMono = this.deps.startMono ?? this.deps.clock.monoMs();
    this.opening = this.open();
    return this.opening;
  }

  private async open(): Promise<void> {
    const log = this.deps.logger;
    let fd: number;
    try {
      fd = await openNonBlocking(this.file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENXIO' ? 'it is a FIFO that no process reads' : (err as Error).message;
      if (this.state === 'opening') this.state = 'failed';
      log.error({ file: this.file, code }, `cannot record the trace to ${this.file}: ${why}; the agent goes on without recording`);
      return;
    }
    let st: Stats;
    try {
      st = await fstatAsync(fd);
    } catch (err) {
      close(fd, () => {});
      if (this.state === 'opening') this.state = 'failed';
      log.error({ file: this.file, err }, `cannot record the trace to ${this.file}: ${(err as Error).message}; the agent goes on without recording`);
      return;
    }
    if (this.state !== 'opening') {
      // stop() came during the open.
      close(fd, () => {});
      return;
    }
    let out: Writable;
    if (st.isFIFO() || st.isSocket()) {
      // A pipe: libuv's stream handle writes without blocking and signals back-pressure (write()
      // returns false, then 'drain'), as process.stdout does for a pipe.
      out = new Socket({ fd, readable: false, writable: true });
    } else if (st.isFile() || st.isCharacterDevice()) {
      out = createWriteStream('', { fd, highWaterMark: 64 * 1024 });
    } else {
      close(fd, () => {});
      this.state = 'failed';
      log.error({ file: this.file }, `cannot record the trace to ${this.file}: ${describeFileType(st)}, not a file or pipe; the agent goes on without recording`);
      return;
    }
    out.on('error', (err: NodeJS.ErrnoException) => this.onWriteError(out, err));
    // A drained stream is a natural moment for the summary, but still no more often than reportIntervalMs.
    out.on('drain', () => this.reportDrops(false));
    this.out = out;
    this.state = 'open';
    out.write(`${TRACE_HEADER}\n`);
    log.info({ file: this.file }, 'recording samples to a trace');
  }

  private onWriteError(out: Writable, err: NodeJS.ErrnoException): void {
    if (this.out === out) {
      this.state = 'failed';
      this.out = undefined;
    }
    out.destroy();
    this.deps.logger.error({ file: this.file, code: err.code, rows: this.rows }, `trace ${this.file}: write failed (${err.message}); recording stops, the agent goes on`);
    this.dropReason = `the trace write failed (${err.code ?? err.message})`;
  }

  write(samples: readonly Sample[]): void {
    if (samples.length === 0 || this.state === 'stopped' || this.state === 'idle') return;
    const out = this.out;
    if (this.state !== 'open' || !out) {
      // Opening, or failed: say so (rate-limited) rather than lose rows silently.
      if (this.state === 'failed') this.drop(samples.length, this.dropReason || 'the trace could not be opened');
      return;
    }
    if (out.writableLength > this.maxBufferedBytes) {
      this.drop(samples.length, `writes are backing up (over ${this.maxBufferedBytes} bytes waiting: the disk or the reader is too slow)`);
      return;
    }
    let text = '';
    for (const s of samples) {
      const t = ((s.mono - this.startMono) / 1000).toFixed(3);
      text += `${t},${s.pointId},${s.value === null ? '' : s.value}\n`;
    }
    this.rows += samples.length;
    out.write(text);
  }

  private drop(n: number, reason: string): void {
    this.dropped += n;
    this.unreported += n;
    this.dropReason = reason;
    this.reportDrops(false);
  }

  /** The first drop at once, then a summary at most every reportIntervalMs (checked on the next drop or drain, and at stop). */
  private reportDrops(force: boolean): void {
    if (this.unreported === 0) return;
    const now = this.deps.clock.monoMs();
    if (!force && this.lastReportMono !== undefined && now - this.lastReportMono < this.reportIntervalMs) return;
    const first = this.lastReportMono === undefined;
    this.lastReportMono = now;
    this.deps.logger.warn(
      { file: this.file, droppedRows: this.unreported, droppedTotal: this.dropped },
      first ? `trace ${this.file}: dropping rows: ${this.dropReason}` : `trace ${this.file}: ${this.unreported} more rows dropped: ${this.dropReason}`,
    );
    this.unreported = 0;
  }

  /**
   * Flushes and closes the trace; waits at most flushTimeoutMs for a slow disk or reader, then
   * discards what is left (and says so). Safe at any stage.
   */
  async stop(): Promise<void> {
    this.state = 'stopped';
    await this.opening;
    const out = this.out;
    this.out = undefined;
    this.reportDrops(true);
    if (!out || out.destroyed) return;
    await new Promise<void>((resolve) => {
      const clock = this.deps.clock;
      const timer = clock.setTimeout(() => {
        this.deps.logger.warn({ file: this.file, bytes: out.writableLength }, `trace ${this.file}: ${out.writableLength} bytes not written within ${this.flushTimeoutMs} ms of stopping: discarded`);
        out.destroy();
      }, this.flushTimeoutMs);
      out.once('close', () => {
        clock.clearTimeout(timer);
        resolve();
      });
      out.end();
    });
  }
}

/** Renders batches as trace CSV text (for generated traces and tests). */
export function traceText(batches: Iterable<TraceBatch>): string {
  const parts = [`${TRACE_HEADER}\n`];
  for (const b of batches) {
    for (const s of b.samples) parts.push(`${Number(b.timeS.toFixed(3))},${s.pointId},${s.value === null ? '' : s.value}\n`);
  }
  return parts.join('');
}
