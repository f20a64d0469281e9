/**
 * Traces: recorded samples as long CSV, `time_s,point,value`. time_s is float seconds from the
 * trace's start, point a configured point id, value a number (chiller running as 0/1) or empty for
 * a failed read. `rackguard run --record FILE` writes them; `rackguard replay` reads them.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
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

/** Appends samples to a trace file as they come. Times are seconds since the recorder started. */
export class TraceRecorder {
  private stream: WriteStream | undefined;
  private startMono = 0;
  rows = 0;

  constructor(private readonly file: string) {}

  start(startMono: number): Promise<void> {
    this.startMono = startMono;
    return new Promise((resolve, reject) => {
      const s = createWriteStream(this.file, { flags: 'w' });
      s.once('open', () => {
        this.stream = s;
        s.write(`${TRACE_HEADER}\n`);
        resolve();
      });
      s.once('error', (err) => reject(new RackguardError('E_TRACE_INVALID', `cannot write trace ${this.file}: ${err.message}`, { cause: err })));
    });
  }

  write(samples: readonly Sample[]): void {
    if (!this.stream) return;
    let out = '';
    for (const s of samples) {
      const t = ((s.mono - this.startMono) / 1000).toFixed(3);
      out += `${t},${s.pointId},${s.value === null ? '' : s.value}\n`;
    }
    this.rows += samples.length;
    this.stream.write(out);
  }

  stop(): Promise<void> {
    const s = this.stream;
    this.stream = undefined;
    if (!s) return Promise.resolve();
    return new Promise((resolve) => s.end(() => resolve()));
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
