import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Sample } from '../../agent/acquisition/types.js';
import { VirtualClock } from '../../agent/clock.js';
import { outboxSchema, type OutboxConfig } from '../../agent/config/outputs-schema.js';
import { Outbox, type OutboxDeps, type OutboxEntry, type OutputNotice } from '../../agent/outputs/outbox.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

function sample(pointId: string, ts: number, value = 21.5): OutboxEntry {
  return { type: 'sample', sample: { pointId, deviceId: pointId.split('.')[0]!, value, unit: '°C', quality: 'good', ts, mono: ts } satisfies Sample };
}

function alarm(zone: string, ts: number): OutboxEntry {
  return {
    type: 'event',
    event: { kind: 'zone_level', zone, from: 'normal', level: 'alarm', reason: 'test', mono: ts, ts, evidence: { sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 0, k: 2, etaCriticalS: null } },
  };
}

describe('Outbox', () => {
  let dir: TempDir;
  let clock: VirtualClock;
  const open: Outbox[] = [];

  /** commitIntervalMs 0 (a commit per append) unless told: these tests are about storage, not timing. */
  function make(over: Partial<OutboxConfig> = {}, name = 'outbox.db', deps: Partial<OutboxDeps> = {}): Outbox {
    const ob = new Outbox(outboxSchema.parse({ path: join(dir.path, name), commitIntervalMs: 0, ...over }), { clock, ...deps });
    open.push(ob);
    return ob;
  }

  beforeEach(async () => {
    dir = await tempDir('rackguard-outbox-');
    clock = new VirtualClock({ startWallMs: Date.UTC(2026, 0, 1) });
  });
  afterEach(async () => {
    for (const ob of open.splice(0)) ob.close();
    await dir.cleanup();
  });

  it('applies durability settings: WAL and synchronous=FULL by default, NORMAL when configured', () => {
    const ob = make();
    ob.open();
    ob.close();
    // Journal mode is persistent in the file; synchronous is per connection, so read it through the
    // outbox's own connection via a second open with the same settings.
    const db = new Database(join(dir.path, 'outbox.db'));
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
    const full = make();
    full.open();
    expect((full as unknown as { store: { db: Database.Database } }).store.db.pragma('synchronous', { simple: true })).toBe(2);
    const normal = make({ synchronous: 'NORMAL' }, 'normal.db');
    normal.open();
    expect((normal as unknown as { store: { db: Database.Database } }).store.db.pragma('synchronous', { simple: true })).toBe(1);
    expect((normal as unknown as { store: { db: Database.Database } }).store.db.pragma('journal_mode', { simple: true })).toBe('wal');
  });

  it('keeps append order and per-sink cursors across reopen', () => {
    const ob = make();
    ob.open();
    ob.registerSink('a');
    ob.registerSink('b');
    ob.append([sample('r1.t', 1000), sample('r2.t', 1000), alarm('z1', 1001)]);
    ob.append([sample('r1.t', 2000), sample('r2.t', 2000)]);
    const a = ob.read('a', 10);
    expect(a.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(a.map((r) => r.cls)).toEqual(['telemetry', 'telemetry', 'event', 'telemetry', 'telemetry']);
    expect(a[0]!.entry).toEqual(sample('r1.t', 1000));
    ob.ack('a', 3);
    expect(ob.read('a', 10).map((r) => r.seq)).toEqual([4, 5]);
    expect(ob.read('b', 2).map((r) => r.seq)).toEqual([1, 2]);
    expect(ob.depth('a')).toBe(2);
    expect(ob.depth('b')).toBe(5);
    clock.advance(5000);
    expect(ob.lagMs('a')).toBe(5000);
    ob.close();

    const again = make();
    again.open();
    again.registerSink('a');
    again.registerSink('b');
    expect(again.read('a', 10).map((r) => r.seq)).toEqual([4, 5]);
    expect(again.read('b', 10).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    // New sinks: 'end' skips what was buffered before this open; 'beginning' takes it all.
    again.registerSink('late', 'end');
    again.registerSink('full', 'beginning');
    expect(again.read('late', 10)).toEqual([]);
    expect(again.read('full', 10)).toHaveLength(5);
    again.append([sample('r1.t', 3000)]);
    expect(again.read('late', 10).map((r) => r.seq)).toEqual([6]);
  });

  it('deletes rows below every sink cursor, in batches', () => {
    const ob = make();
    ob.open();
    ob.registerSink('a');
    ob.registerSink('b');
    for (let c = 0; c < 100; c++) ob.append(Array.from({ length: 60 }, (_, i) => sample(`r${i}.t`, c * 1000)));
    expect(ob.stats().rows).toBe(6000);
    ob.ack('a', 6000);
    ob.append([sample('x.t', 1)]);
    expect(ob.stats().rows).toBe(6001); // b still holds everything
    ob.ack('b', 4500);
    ob.append([sample('x.t', 2)]);
    expect(ob.stats().rows).toBe(6002 - 4500);
    expect(ob.read('b', 1)[0]!.seq).toBe(4501);
    ob.ack('b', 4600); // fewer than a batch: not deleted yet
    ob.append([sample('x.t', 3)]);
    expect(ob.stats().rows).toBe(6003 - 4500);
    ob.prune();
    expect(ob.stats().rows).toBe(6003 - 4600);
    const db = new Database(join(dir.path, 'outbox.db'), { readonly: true });
    expect((db.prepare('SELECT min(seq) AS m FROM records').get() as { m: number }).m).toBe(4601);
    db.close();
  });

  it('when full drops the oldest telemetry with a gap event and keeps every event', () => {
    const ob = make({ maxBytes: 256 * 1024 });
    ob.open();
    ob.registerSink('mqtt');
    const events: number[] = [];
    for (let c = 0; c < 2000; c++) {
      const batch: OutboxEntry[] = Array.from({ length: 10 }, (_, i) => sample(`rack${i}.temp`, 1_000_000 + c * 1000));
      if (c % 50 === 0) {
        batch.push(alarm('z1', 1_000_000 + c * 1000));
        events.push(1_000_000 + c * 1000);
      }
      ob.append(batch);
    }
    const stats = ob.stats();
    expect(stats.bytes).toBeLessThanOrEqual(256 * 1024);
    expect(stats.droppedTelemetry).toBeGreaterThan(0);
    const all = ob.read('mqtt', 1_000_000);
    const alarms = all.filter((r) => r.entry.type === 'event' && r.entry.event.kind === 'zone_level');
    expect(alarms.map((r) => r.ts)).toEqual(events);
    const gaps = all.flatMap((r) => (r.entry.type === 'event' && r.entry.event.kind === 'output' && r.entry.event.code === 'outbox_gap' ? [r.entry.event as OutputNotice] : []));
    expect(gaps.length).toBeGreaterThan(0);
    const droppedInGaps = gaps.reduce((n, g) => n + (g.detail.droppedCount as number), 0);
    expect(droppedInGaps).toBe(stats.droppedTelemetry);
    const first = gaps[0]!.detail as { firstTs: number; points: Array<{ pointId: string; firstTs: number; lastTs: number; count: number }> };
    expect(first.firstTs).toBe(1_000_000);
    expect(first.points.find((p) => p.pointId === 'rack0.temp')).toMatchObject({ firstTs: 1_000_000 });
    // What is left is the newest telemetry, contiguous per point: dropped oldest first.
    const left = all.filter((r) => r.entry.type === 'sample' && r.entry.sample.pointId === 'rack0.temp').map((r) => r.ts);
    expect(left.at(-1)).toBe(1_000_000 + 1999 * 1000);
    for (let i = 1; i < left.length; i++) expect(left[i]! - left[i - 1]!).toBe(1000);
    const lastGap = gaps.at(-1)!.detail as { lastTs: number };
    expect(left[0]).toBeGreaterThan(lastGap.lastTs);
  });

  it('moves a corrupt file aside, starts fresh and reports it as an event', () => {
    const path = join(dir.path, 'outbox.db');
    writeFileSync(path, Buffer.alloc(8192, 0xa5));
    const ob = make();
    const report = ob.open();
    expect(report.recovered?.movedTo).toMatch(/outbox\.db\.corrupt-/);
    expect(report.recovered?.reason).toMatch(/SQLITE_NOTADB/);
    expect(existsSync(report.recovered!.movedTo)).toBe(true);
    expect(readdirSync(dir.path).some((f) => f.startsWith('outbox.db.corrupt-'))).toBe(true);
    ob.registerSink('mqtt', 'end');
    const recs = ob.read('mqtt', 10);
    expect(recs).toHaveLength(1);
    expect(recs[0]!.entry).toMatchObject({ type: 'event', event: { kind: 'output', code: 'outbox_corrupt', severity: 'error' } });
    ob.append([sample('r1.t', 1)]);
    expect(ob.read('mqtt', 10)).toHaveLength(2);
  });

  it('recovers from a file whose pages are damaged after the header', () => {
    const path = join(dir.path, 'outbox.db');
    const ob = make();
    ob.open();
    ob.registerSink('s');
    for (let c = 0; c < 50; c++) ob.append(Array.from({ length: 60 }, (_, i) => sample(`r${i}.t`, c)));
    ob.close();
    // Keep the 100-byte header, smash the pages (the schema lives on page 1).
    const db = new Database(path);
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.close();
    const buf = readFileSync(path);
    buf.fill(0x5a, 100, buf.length);
    writeFileSync(path, buf);
    const again = make();
    // open() scans the records table: damaged pages are found there, at open, not in the middle of a run.
    const report = again.open();
    expect(report.recovered?.reason).toMatch(/^SQLITE_(CORRUPT|NOTADB)/);
    expect(existsSync(report.recovered!.movedTo)).toBe(true);
    again.registerSink('s');
    const recs = again.read('s', 10);
    expect(recs.map((r) => r.entry)).toEqual([expect.objectContaining({ type: 'event', event: expect.objectContaining({ code: 'outbox_corrupt' }) })]);
    again.append([sample('r1.t', 1)]);
    expect(again.read('s', 10).map((r) => r.entry.type)).toEqual(['event', 'sample']);
  });
});
