import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
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

  it('group commit: one transaction per interval, an event commits on the next turn, sinks read only committed records', () => {
    const commits: number[] = [];
    const ob = make({ commitIntervalMs: 1000 }, 'group.db', { beforeCommit: (info) => commits.push(info.records) });
    ob.open();
    ob.registerSink('s');
    for (let c = 0; c < 10; c++) {
      ob.append([sample('r1.t', c * 100)]);
      clock.advance(50);
    }
    // Not committed yet: not readable, and no cursor can move past it.
    expect(ob.read('s', 100)).toEqual([]);
    ob.ack('s', 10);
    expect(ob.cursorOf('s')).toBe(0);
    expect(ob.stats()).toMatchObject({ pending: 10, commits: 0 });
    clock.advance(500);
    expect(commits).toEqual([10]);
    expect(ob.read('s', 100).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // An event does not wait for the interval: it is committed on the next turn of the event loop.
    ob.append([sample('r1.t', 2000), alarm('z1', 2000)]);
    clock.advance(0);
    expect(commits).toEqual([10, 2]);
    expect(ob.read('s', 100, 10).map((r) => r.cls)).toEqual(['telemetry', 'event']);
    expect(ob.stats().commits).toBe(2);
    // A commit also persists cursors: a reopen resumes there.
    ob.ack('s', 12);
    ob.append([sample('r1.t', 3000)]);
    clock.advance(1000);
    ob.close();
    const again = make({}, 'group.db');
    again.open();
    again.registerSink('s');
    expect(again.read('s', 10).map((r) => r.seq)).toEqual([13]);
  });

  it('an outbox path that is a directory: start() does not throw, events are served from memory, written when it is fixed', async () => {
    const path = join(dir.path, 'dir.db');
    mkdirSync(path);
    const warnings: string[] = [];
    const ob = make({ commitIntervalMs: 1000, reopenInitialMs: 100, reopenMaxMs: 400 }, 'dir.db', { onWarning: (m) => warnings.push(m) });
    await ob.start();
    expect(ob.stats().state).toBe('unavailable');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/cannot be opened/);
    ob.registerSink('s');
    ob.append([sample('r1.t', 1), alarm('z1', 2)]);
    // Live: the notice, the sample and the alarm come from memory.
    const live = ob.read('s', 10);
    expect(live.map((r) => (r.entry.type === 'event' ? (r.entry.event.kind === 'output' ? r.entry.event.code : r.entry.event.kind) : 'sample'))).toEqual(['outbox_unavailable', 'sample', 'zone_level']);
    ob.ack('s', live.at(-1)!.seq);
    // Retries with backoff, silently (the failure was logged once).
    clock.advance(10_000);
    expect(warnings).toHaveLength(1);
    expect(ob.stats().state).toBe('unavailable');
    rmSync(path, { recursive: true });
    clock.advance(400);
    expect(ob.stats()).toMatchObject({ state: 'open', pending: 0 });
    expect(warnings.at(-1)).toMatch(/writable again/);
    ob.append([alarm('z1', 3)]);
    clock.advance(0);
    // The sink does not get again what it had from memory; the file holds all of it.
    expect(ob.read('s', 10).map((r) => r.entry.type === 'event' && r.entry.event.kind)).toEqual(['zone_level']);
    ob.close();
    const db = new Database(path, { readonly: true });
    const kinds = db.prepare<[], { body: string }>('SELECT body FROM records ORDER BY seq').all().map((r) => JSON.parse(r.body) as OutboxEntry);
    db.close();
    expect(kinds.map((e) => (e.type === 'event' ? e.event.kind : 'sample'))).toEqual(['output', 'sample', 'zone_level', 'zone_level']);
  });

  it('stop() after the fault was fixed but before the next retry: the held events are written, not lost', async () => {
    const path = join(dir.path, 'fixed.db');
    mkdirSync(path);
    const warnings: string[] = [];
    // A long backoff: the fix comes while the next retry is still far away, and then SIGTERM.
    const ob = make({ commitIntervalMs: 1000, reopenInitialMs: 60_000, reopenMaxMs: 60_000 }, 'fixed.db', { onWarning: (m) => warnings.push(m) });
    await ob.start();
    expect(ob.stats().state).toBe('unavailable');
    ob.registerSink('s');
    ob.append([sample('r1.t', 1), alarm('z1', 2)]);
    rmSync(path, { recursive: true });
    await ob.stop();
    expect(warnings.filter((w) => /lost with this stop/.test(w))).toEqual([]);
    const db = new Database(path, { readonly: true });
    const kinds = db.prepare<[], { body: string }>('SELECT body FROM records ORDER BY seq').all().map((r) => JSON.parse(r.body) as OutboxEntry);
    db.close();
    expect(kinds.map((e) => (e.type === 'event' ? e.event.kind : 'sample'))).toEqual(['output', 'sample', 'zone_level']);
  });

  it('the file deleted while open: restored at its path with its backlog, seqs and cursors, and told as an event', () => {
    const path = join(dir.path, 'deleted.db');
    const warnings: string[] = [];
    const ob = make({ commitIntervalMs: 1000 }, 'deleted.db', { onWarning: (m) => warnings.push(m) });
    ob.open();
    ob.registerSink('s');
    ob.append([sample('r1.t', 1), alarm('z1', 1)]);
    clock.advance(1000);
    ob.ack('s', 1);
    // Someone removes the file (and its WAL): SQLite would go on writing to the unlinked inode, and
    // everything not yet delivered would vanish at the next start.
    for (const suffix of ['', '-wal', '-shm']) rmSync(path + suffix, { force: true });
    ob.append([sample('r1.t', 2), alarm('z2', 2)]);
    clock.advance(1000);
    expect(existsSync(path)).toBe(true);
    expect(warnings.filter((w) => /deleted|replaced/.test(w))).toHaveLength(1);
    ob.append([sample('r1.t', 3)]);
    clock.advance(1000);
    ob.close();
    const again = make({}, 'deleted.db');
    again.open();
    again.registerSink('s');
    const recs = again.read('s', 100);
    expect(recs.map((r) => r.seq)).toEqual([2, 3, 4, 5, 6]);
    expect(recs.map((r) => (r.entry.type === 'event' ? (r.entry.event.kind === 'output' ? r.entry.event.code : r.entry.event.kind) : r.entry.sample.ts))).toEqual(['zone_level', 2, 'zone_level', 'outbox_restored', 3]);
  });

  it('a file that opens late and already holds higher seqs: the memory tail is renumbered above them and sinks re-read', () => {
    const path = join(dir.path, 'late.db');
    const first = make({}, 'late.db');
    first.open();
    first.registerSink('a');
    for (let c = 0; c < 5; c++) first.append([sample('r1.t', c)]);
    first.ack('a', 3);
    first.close();
    // The file is away at start (a directory stands in its place), and back later.
    renameSync(path, `${path}.away`);
    mkdirSync(path);
    const ob = make({ reopenInitialMs: 100, reopenMaxMs: 100 }, 'late.db');
    ob.open();
    ob.registerSink('a');
    ob.append([alarm('z1', 10)]);
    const live = ob.read('a', 10);
    expect(live.map((r) => r.seq)).toEqual([1, 2]); // the unavailable notice and the alarm, from memory
    ob.ack('a', 2);
    const generation = ob.generation;
    rmSync(path, { recursive: true });
    renameSync(`${path}.away`, path);
    clock.advance(100);
    expect(ob.stats().state).toBe('open');
    // Seqs 1 and 2 meant other records in this file: the tail became 6 and 7, and the sink starts
    // again from its stored cursor (3), so it gets the file's backlog and then the held events.
    expect(ob.generation).toBe(generation + 1);
    expect(ob.cursorOf('a')).toBe(3);
    const recs = ob.read('a', 10);
    expect(recs.map((r) => r.seq)).toEqual([4, 5, 6, 7]);
    expect(recs.slice(2).map((r) => (r.entry as { event: { kind: string } }).event.kind)).toEqual(['output', 'zone_level']);
    ob.append([sample('r1.t', 20)]);
    expect(ob.read('a', 10, 7).map((r) => r.seq)).toEqual([8]);
  });

  /** A tmpfs of its own (root and mount(8) needed: the test says so and fails, it does not skip). */
  function tmpfs(name: string, size: string): string {
    const mnt = join(dir.path, name);
    mkdirSync(mnt);
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mnt], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cannot mount a tmpfs (${r.error?.message ?? r.stderr.trim()}): this test needs root and mount(8); it does not skip`);
    mounts.push(mnt);
    return mnt;
  }
  const mounts: string[] = [];
  afterEach(() => {
    for (const m of mounts.splice(0)) spawnSync('umount', ['-l', m]);
  });

  function fill(path: string, count?: number): void {
    spawnSync('dd', ['if=/dev/zero', `of=${path}`, 'bs=64k', ...(count !== undefined ? [`count=${count}`] : [])]);
  }

  it('full disk: events held in memory (bounded) and served live, written first when space is back, one gap event', () => {
    const mnt = tmpfs('full', '1m');
    const warnings: string[] = [];
    const ob = new Outbox(outboxSchema.parse({ path: join(mnt, 'outbox.db'), commitIntervalMs: 1000, reopenInitialMs: 100, reopenMaxMs: 400, maxQueuedEvents: 100, reserveBytes: 0 }), { clock, onWarning: (m) => warnings.push(m) });
    open.push(ob);
    ob.open();
    ob.registerSink('s');
    ob.append([sample('r1.t', 0)]);
    clock.advance(1000);
    fill(join(mnt, 'fill'));
    expect(statfsSync(mnt).bavail).toBe(0);
    // 150 alarms and 450 samples while the disk is full: the queue keeps the newest 100 events, the
    // outbox_unavailable notice among them (it explains the rest, so it is never the one dropped).
    for (let c = 1; c <= 150; c++) {
      ob.append([sample('r1.t', c * 1000), sample('r2.t', c * 1000), sample('r3.t', c * 1000), alarm(`z${c}`, c * 1000)]);
      clock.advance(200);
    }
    expect(ob.stats().state).toBe('unwritable');
    expect(warnings.filter((w) => /cannot be written/.test(w))).toHaveLength(1);
    expect(warnings.filter((w) => /memory queue full/.test(w))).toHaveLength(1);
    const live = ob.read('s', 10_000);
    const liveAlarms = live.flatMap((r) => (r.entry.type === 'event' && r.entry.event.kind === 'zone_level' ? [r.entry.event.zone] : []));
    expect(liveAlarms).toEqual(Array.from({ length: 99 }, (_, i) => `z${i + 52}`));
    // Samples are served live too, up to the same bound.
    expect(live.filter((r) => r.cls === 'telemetry').length).toBeGreaterThan(80);
    ob.ack('s', live.at(-1)!.seq);
    rmSync(join(mnt, 'fill'));
    clock.advance(1000);
    expect(ob.stats().state).toBe('open');
    expect(warnings.filter((w) => /writable again/.test(w))).toHaveLength(1);
    ob.close();
    const db = new Database(join(mnt, 'outbox.db'), { readonly: true });
    const events = db
      .prepare<[], { body: string }>('SELECT body FROM records WHERE cls = 1 ORDER BY seq')
      .all()
      .map((r) => (JSON.parse(r.body) as { event: OutputNotice | { kind: string; zone: string } }).event);
    db.close();
    const codes = events.flatMap((e) => (e.kind === 'output' ? [(e as OutputNotice).code] : []));
    expect(codes.sort()).toEqual(['outbox_events_dropped', 'outbox_gap', 'outbox_unavailable']);
    expect(events[0]).toMatchObject({ kind: 'output', code: 'outbox_unavailable' });
    expect(events.filter((e) => e.kind === 'zone_level').map((e) => (e as { zone: string }).zone)).toEqual(liveAlarms);
    expect(events.find((e) => e.kind === 'output' && (e as OutputNotice).code === 'outbox_events_dropped')).toMatchObject({ detail: { droppedEvents: 51 } });
    // Samples beyond the memory bound are the telemetry hole: one gap event, per point.
    const gap = events.find((e) => e.kind === 'output' && (e as OutputNotice).code === 'outbox_gap') as OutputNotice;
    const points = gap.detail.points as Array<{ pointId: string; count: number }>;
    expect(points.map((p) => p.pointId).sort()).toEqual(['r1.t', 'r2.t', 'r3.t']);
    expect(gap.detail.droppedCount).toBe(points.reduce((n, p) => n + p.count, 0));
    expect(gap.detail.droppedCount as number).toBeGreaterThan(300);
  });

  it('disk reserve: below it telemetry is not written but events are; one gap event when space is back', () => {
    const mnt = tmpfs('reserve', '2m');
    const warnings: string[] = [];
    const ob = new Outbox(outboxSchema.parse({ path: join(mnt, 'outbox.db'), commitIntervalMs: 1000, reserveBytes: 1024 * 1024 }), { clock, onWarning: (m) => warnings.push(m) });
    open.push(ob);
    ob.open();
    ob.registerSink('s');
    ob.append([sample('r1.t', 0)]);
    clock.advance(1000);
    fill(join(mnt, 'fill'), 16); // 1 MiB of 2: less than the 1 MiB reserve left
    for (let c = 1; c <= 5; c++) {
      ob.append([sample('r1.t', c * 1000), ...(c === 3 ? [alarm('z1', c * 1000)] : [])]);
      clock.advance(1000);
    }
    expect(ob.stats().state).toBe('open');
    expect(warnings.filter((w) => /reserve/.test(w))).toHaveLength(1);
    // The alarm is durable and delivered; the samples after the fill are not stored.
    expect(ob.read('s', 100).map((r) => (r.entry.type === 'event' ? r.entry.event.kind : r.entry.sample.ts))).toEqual([0, 'zone_level']);
    rmSync(join(mnt, 'fill'));
    ob.append([sample('r1.t', 6000)]);
    clock.advance(1000);
    const after = ob.read('s', 100).slice(2);
    expect(after.map((r) => (r.entry.type === 'event' ? r.entry.event.kind : r.entry.sample.ts))).toEqual([6000, 'output']);
    const gap = (after[1]!.entry as { event: OutputNotice }).event;
    expect(gap).toMatchObject({ code: 'outbox_gap', detail: { droppedCount: 5, firstTs: 1000, lastTs: 5000 } });
  });
});
