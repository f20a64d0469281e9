/**
 * Clock sanity on virtual time (issue 9, item 4): wall-clock steps are found by comparing wall and
 * monotonic time, timesyncd's flag file marks the clock synchronised, and the outbox re-dates what it
 * still holds from before a step (in the file and in memory).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Sample } from '../../agent/acquisition/types.js';
import { VirtualClock } from '../../agent/clock.js';
import { outboxSchema } from '../../agent/config/outputs-schema.js';
import { Outbox, type OutboxEntry } from '../../agent/outputs/outbox.js';
import { ClockWatch, type ClockStep } from '../../agent/service/clock-watch.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const log = pino({ level: 'silent' });
const DAY = 86_400_000;
const START_WALL = Date.UTC(2026, 0, 1);

let dir: TempDir;
let clock: VirtualClock;
beforeEach(async () => {
  dir = await tempDir('rackguard-clock-');
  clock = new VirtualClock({ startMonoMs: 5000, startWallMs: START_WALL });
});
afterEach(async () => {
  await dir.cleanup();
});

/** A watch on the virtual clock whose timesync file sits in the temp dir (absent unless a test writes it). */
function watch(onStep?: (s: ClockStep) => number | void): { w: ClockWatch; steps: ClockStep[] } {
  const steps: ClockStep[] = [];
  const w = new ClockWatch({ syncedFile: join(dir.path, 'synchronized') }, { clock, logger: log, onStep });
  w.on('step', (s) => steps.push(s));
  return { w, steps };
}

describe('ClockWatch', () => {
  it('a wall jump of −2 weeks is one step of −2 weeks, and then the clock is synchronised', async () => {
    const { w, steps } = watch();
    await w.start();
    expect(w.synced).toBe(false);
    clock.advance(10_000);
    clock.stepWall(-14 * DAY);
    clock.advance(10_000);
    await w.stop();
    expect(steps).toHaveLength(1);
    expect(steps[0]!.stepMs).toBe(-14 * DAY);
    expect(steps[0]!.newWallMs - steps[0]!.oldWallMs).toBe(-14 * DAY);
    expect(w.synced).toBe(true);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('a wall jump of +1 hour is one step of +1 hour', async () => {
    const { w, steps } = watch();
    await w.start();
    clock.advance(3_500);
    clock.stepWall(3_600_000);
    clock.advance(60_000);
    await w.stop();
    expect(steps.map((s) => s.stepMs)).toEqual([3_600_000]);
  });

  it('normal drift and slews (500 ppm, and sub-threshold corrections) are no step', async () => {
    const { w, steps } = watch();
    await w.start();
    for (let i = 0; i < 3600; i++) {
      clock.advance(1000);
      clock.stepWall(0.5); // the most ntpd/timesyncd slew: 500 ppm
    }
    clock.stepWall(1500); // under the 2 s threshold
    clock.advance(1000);
    await w.stop();
    expect(steps).toEqual([]);
    expect(w.synced).toBe(false);
  });

  it('timesyncd’s synchronized file marks the clock synchronised; a host without timesyncd is taken as synchronised', async () => {
    const { w } = watch();
    let synced = 0;
    w.on('synced', () => synced++);
    await w.start();
    clock.advance(3000);
    expect(w.synced).toBe(false);
    writeFileSync(join(dir.path, 'synchronized'), '');
    clock.advance(1000);
    expect(w.synced).toBe(true);
    expect(synced).toBe(1);
    await w.stop();

    expect(w.knownSynced).toBe(true);

    // No timesyncd (chrony, ntpd, a container): taken as synchronised for timestamps, but not known to
    // be (a reboot's downtime cannot be judged on it) until a step is seen.
    const none = new ClockWatch({ syncedFile: join(dir.path, 'no-such-dir', 'synchronized') }, { clock, logger: log });
    await none.start();
    expect(none.synced).toBe(true);
    expect(none.knownSynced).toBe(false);
    clock.stepWall(3_600_000);
    clock.advance(1000);
    expect(none.knownSynced).toBe(true);
    await none.stop();
  });
});

describe('ClockWatch.rebase: a stamp taken before the synchronising step, handed over after it', () => {
  it('moves an old-base stamp by the step; keeps new-base stamps, later stamps, and stamps before a step on a synchronised clock', async () => {
    const { w, steps } = watch();
    await w.start();
    clock.advance(3000);
    const old = { ts: clock.wallMs(), mono: clock.monoMs() };
    expect(w.rebase(old.ts, old.mono)).toBe(old.ts); // no step yet
    clock.advance(300);
    clock.stepWall(14 * DAY);
    const between = { ts: clock.wallMs(), mono: clock.monoMs() }; // after the step, before its detection
    clock.advance(1000);
    expect(steps).toHaveLength(1);
    expect(w.rebase(old.ts, old.mono)).toBe(old.ts + 14 * DAY);
    expect(w.rebase(old.ts, old.mono) - old.mono).toBe(steps[0]!.newOffsetMs);
    expect(w.rebase(between.ts, between.mono)).toBe(between.ts);
    const later = { ts: clock.wallMs(), mono: clock.monoMs() };
    expect(w.rebase(later.ts, later.mono)).toBe(later.ts);
    // A second step, on a clock now synchronised, moves nothing (as in the outbox).
    const beforeSecond = { ts: clock.wallMs(), mono: clock.monoMs() };
    clock.stepWall(-3_600_000);
    clock.advance(1000);
    expect(steps).toHaveLength(2);
    expect(w.rebase(beforeSecond.ts, beforeSecond.mono)).toBe(beforeSecond.ts);
    await w.stop();
  });
});

function sample(pointId: string, at: { ts: number; mono: number }): OutboxEntry {
  return { type: 'sample', sample: { pointId, deviceId: pointId.split('.')[0]!, value: 21.5, unit: '°C', quality: 'good', ts: at.ts, mono: at.mono } satisfies Sample };
}

describe('Outbox re-dating after a clock step', () => {
  it('moves records stamped before the step (file and memory), leaves new-base and synchronised ones', async () => {
    let synced = false;
    const ob = new Outbox(outboxSchema.parse({ path: join(dir.path, 'outbox.db'), commitIntervalMs: 1000 }), { clock, clockSynced: () => synced });
    const { w, steps } = watch((s) => ob.redate(s));
    ob.open();
    ob.registerSink('influx', 'beginning');
    await w.start();
    const now = (): { ts: number; mono: number } => ({ ts: clock.wallMs(), mono: clock.monoMs() });
    const oldBase: number[] = [];
    // Two committed samples and a device event on the stale clock…
    for (let i = 0; i < 2; i++) {
      oldBase.push(ob.append([sample('r1.temperature', now())]));
      clock.advance(1000);
    }
    const evSeq = ob.append([{ type: 'event', event: { kind: 'device_state', deviceId: 'r1', state: 'online', previous: 'unknown', ts: clock.wallMs() } }]);
    const evTs = clock.wallMs();
    clock.advance(200);
    ob.commit();
    // … then NTP steps the clock +2 weeks: a sample stamped between the step and its detection is on
    // the new base already, and one still in memory (not committed) is on the old one.
    const stale = now();
    oldBase.push(ob.append([sample('r1.temperature', stale)]));
    clock.stepWall(14 * DAY);
    const fresh = now();
    const freshSeq = ob.append([sample('r1.temperature', fresh)]);
    clock.advance(1000); // the watch's tick sees the step
    expect(steps).toHaveLength(1);
    synced = w.synced;
    expect(synced).toBe(true);
    const after = ob.append([sample('r1.temperature', now())]);
    ob.commit();

    const recs = ob.read('influx', 100);
    const bySeq = new Map(recs.map((r) => [r.seq, r]));
    const ts = (seq: number): number => {
      const e = bySeq.get(seq)!.entry;
      return e.type === 'sample' ? e.sample.ts : e.event.ts;
    };
    for (const seq of oldBase) {
      const r = bySeq.get(seq)!;
      expect(r.entry.type === 'sample' && r.entry.sample.clockUnsynced).toBeFalsy();
      expect(r.entry.clockRedatedMs).toBe(14 * DAY);
      expect(r.ts).toBe(ts(seq));
    }
    expect(ts(oldBase[2]!)).toBe(stale.ts + 14 * DAY);
    // Each old-base record now sits where its monotonic time says on the new base.
    const offset = steps[0]!.newOffsetMs;
    for (const seq of oldBase) {
      const e = bySeq.get(seq)!.entry;
      if (e.type === 'sample') expect(e.sample.ts - e.sample.mono).toBe(offset);
    }
    expect(ts(evSeq)).toBe(evTs + 14 * DAY);
    expect(bySeq.get(evSeq)!.entry.clockUnsynced).toBeUndefined();
    // Stamped on the new base: flag gone, time unchanged.
    expect(ts(freshSeq)).toBe(fresh.ts);
    expect(bySeq.get(freshSeq)!.entry.clockRedatedMs).toBeUndefined();
    const f = bySeq.get(freshSeq)!.entry;
    expect(f.type === 'sample' && f.sample.clockUnsynced).toBeFalsy();
    // After the step: not marked.
    const a = bySeq.get(after)!.entry;
    expect(a.type === 'sample' && a.sample.clockUnsynced).toBeFalsy();
    // The byte accounting still matches the file.
    expect(ob.stats().bytes).toBeGreaterThan(0);
    await w.stop();
    ob.close();
  });

  it('a step while the clock was taken as synchronised re-dates nothing (only the append times follow)', async () => {
    const ob = new Outbox(outboxSchema.parse({ path: join(dir.path, 'outbox.db'), commitIntervalMs: 0 }), { clock, clockSynced: () => true });
    ob.open();
    ob.registerSink('influx', 'beginning');
    const t = clock.wallMs();
    ob.append([sample('r1.temperature', { ts: t, mono: clock.monoMs() })]);
    clock.stepWall(-3_600_000);
    expect(ob.redate({ stepMs: -3_600_000, newOffsetMs: clock.wallMs() - clock.monoMs(), toleranceMs: 2000 })).toBe(0);
    const r = ob.read('influx', 10)[0]!;
    expect(r.entry.type === 'sample' && r.entry.sample.ts).toBe(t);
    ob.close();
  });
});
