/**
 * The trace recorder against real targets the OS provides: /dev/full (every write fails with ENOSPC),
 * a FIFO that no process reads, a FIFO whose reader never reads (back-pressure), a directory, and a
 * regular file. Time for the rate-limited reports and the flush deadline is virtual.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, constants, mkdirSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sample } from '../../agent/acquisition/types.js';
import { VirtualClock } from '../../agent/clock.js';
import { TRACE_HEADER, TraceRecorder, type RecorderLogger } from '../../agent/detection/trace.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

interface Logged {
  level: 'info' | 'warn' | 'error';
  obj: Record<string, unknown>;
  msg: string;
}

function captureLogger(): RecorderLogger & { records: Logged[] } {
  const records: Logged[] = [];
  const at = (level: Logged['level']) => (obj: object, msg: string) => void records.push({ level, obj: obj as Record<string, unknown>, msg });
  return { records, info: at('info'), warn: at('warn'), error: at('error') };
}

function samples(n: number, mono: number): Sample[] {
  return Array.from({ length: n }, (_, i) => ({ pointId: `r${i}.temperature`, deviceId: `r${i}`, value: 20 + i / 10, unit: '°C', quality: 'good' as const, ts: 0, mono }));
}

function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', [path]);
  expect(r.status).toBe(0);
}

/**
 * Resolves once `pred` holds, checked after each turn of the event loop (no fixed sleeps). Bounded in
 * real time, not in turns: a write through libuv's thread pool may take many turns on a loaded machine.
 */
async function until(pred: () => boolean, what: string, limitMs = 10_000): Promise<void> {
  const deadline = performance.now() + limitMs;
  while (performance.now() < deadline) {
    if (pred()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`never happened within ${limitMs} ms: ${what}`);
}

let tmp: TempDir;
let n = 0;
/** A path of its own for each attempt: a retry must not meet the FIFO or directory the failed attempt made. */
const fresh = (name: string): string => join(tmp.path, `${name}-${++n}`);
beforeAll(async () => {
  tmp = await tempDir('rackguard-recorder-');
});
afterAll(async () => {
  await tmp?.cleanup();
});

describe('TraceRecorder', () => {
  it('writes a regular file: header, then one row per sample, seconds since the given start', async () => {
    const clock = new VirtualClock({ startMonoMs: 5000 });
    const log = captureLogger();
    const file = fresh('plain.csv');
    const rec = new TraceRecorder(file, { clock, logger: log, startMono: 4000 });
    await rec.start();
    expect(rec.recording).toBe(true);
    rec.write(samples(2, 5500));
    await rec.stop();
    expect(readFileSync(file, 'utf8')).toBe(`${TRACE_HEADER}\n1.500,r0.temperature,20\n1.500,r1.temperature,20.1\n`);
    expect(log.records.map((r) => r.msg)).toEqual(['recording samples to a trace']);
  });

  it('on a full disk (/dev/full): reports the write error once, then the dropped rows rate-limited', async () => {
    const clock = new VirtualClock();
    const log = captureLogger();
    const rec = new TraceRecorder('/dev/full', { clock, logger: log, reportIntervalMs: 60_000 });
    await rec.start();
    rec.write(samples(3, 0));
    await until(() => log.records.some((r) => r.level === 'error'), 'the ENOSPC error');
    const errors = log.records.filter((r) => r.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]!.obj.code).toBe('ENOSPC');
    expect(errors[0]!.msg).toMatch(/trace \/dev\/full: write failed .*recording stops/);
    expect(rec.recording).toBe(false);
    // Later rows are dropped, counted, and reported: once at once, then at most once a minute.
    for (let i = 0; i < 100; i++) rec.write(samples(3, i));
    const warns = () => log.records.filter((r) => r.level === 'warn');
    expect(warns()).toHaveLength(1);
    expect(warns()[0]!.msg).toMatch(/dropping rows: the trace write failed \(ENOSPC\)/);
    clock.advance(60_000);
    rec.write(samples(3, 0));
    expect(warns()).toHaveLength(2);
    expect(warns()[1]!.obj).toMatchObject({ droppedRows: 300, droppedTotal: 303 });
    expect(rec.dropped).toBe(303);
    await rec.stop();
    expect(log.records.filter((r) => r.level === 'error')).toHaveLength(1);
  });

  it('a FIFO that no process reads: start() does not block; the problem is reported and the agent goes on', async () => {
    const fifo = fresh('nobody-reads');
    mkfifo(fifo);
    const log = captureLogger();
    const rec = new TraceRecorder(fifo, { clock: new VirtualClock(), logger: log });
    await rec.start();
    expect(rec.recording).toBe(false);
    expect(log.records).toEqual([expect.objectContaining({ level: 'error', obj: expect.objectContaining({ code: 'ENXIO' }) })]);
    expect(log.records[0]!.msg).toContain(`cannot record the trace to ${fifo}: it is a FIFO that no process reads`);
    rec.write(samples(1, 0));
    expect(rec.dropped).toBe(1);
    await rec.stop();
  });

  it('a directory is reported, not thrown', async () => {
    const dir = fresh('a-dir');
    mkdirSync(dir);
    const log = captureLogger();
    const rec = new TraceRecorder(dir, { clock: new VirtualClock(), logger: log });
    await expect(rec.start()).resolves.toBeUndefined();
    expect(rec.recording).toBe(false);
    expect(log.records[0]).toMatchObject({ level: 'error', obj: { code: 'EISDIR' } });
    await rec.stop();
  });

  it('a reader that does not keep up: memory stays bounded, dropped rows are counted and reported; stop() gives up at its deadline', async () => {
    const fifo = fresh('slow-reader');
    mkfifo(fifo);
    // The reader opens first (non-blocking), then never reads: the pipe fills (64 KiB on Linux).
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const clock = new VirtualClock();
      const log = captureLogger();
      const maxBufferedBytes = 32 * 1024;
      const rec = new TraceRecorder(fifo, { clock, logger: log, maxBufferedBytes, flushTimeoutMs: 5000 });
      await rec.start();
      expect(rec.recording).toBe(true);
      // About 1 MB of rows, far more than the pipe and the cap hold together.
      for (let i = 0; i < 1000; i++) rec.write(samples(30, i));
      await until(() => rec.dropped > 0, 'dropped rows');
      expect(rec.rows + rec.dropped).toBe(30_000);
      expect(rec.rows * 20).toBeLessThan(64 * 1024 + maxBufferedBytes + 30 * 40);
      const warns = log.records.filter((r) => r.level === 'warn');
      expect(warns).toHaveLength(1);
      expect(warns[0]!.msg).toMatch(/dropping rows: writes are backing up/);
      // stop() waits for the reader until its flush deadline, then discards the rest and says so.
      const stopped = rec.stop();
      let done = false;
      void stopped.then(() => (done = true));
      await until(() => clock.pendingTimers() > 0, 'the flush deadline');
      expect(done).toBe(false);
      clock.advance(5000);
      await stopped;
      expect(log.records.some((r) => r.level === 'warn' && /bytes not written within 5000 ms of stopping: discarded/.test(r.msg))).toBe(true);
      // What did reach the pipe starts with the header.
      const buf = Buffer.alloc(64);
      const n = readSync(reader, buf, 0, 64, null);
      expect(buf.toString('utf8', 0, n)).toMatch(new RegExp(`^${TRACE_HEADER}\n0\\.000,r0\\.temperature,20\n`));
    } finally {
      closeSync(reader);
    }
  });

  it('a reader that goes away: the broken pipe is reported once and recording stops', async () => {
    const fifo = fresh('reader-leaves');
    mkfifo(fifo);
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const log = captureLogger();
    const rec = new TraceRecorder(fifo, { clock: new VirtualClock(), logger: log });
    await rec.start();
    closeSync(reader);
    rec.write(samples(2, 0));
    await until(() => log.records.some((r) => r.level === 'error'), 'the EPIPE error');
    expect(log.records.find((r) => r.level === 'error')!.obj.code).toBe('EPIPE');
    expect(rec.recording).toBe(false);
    await rec.stop();
  });
});
