/**
 * A critical level the safety gate refused stays due (engine.ts), but the detector emits a zone_level
 * event only when the level changes: a zone that went critical on one sensor (a corroborating chiller
 * lowers k to 1) and is then confirmed by a second one stays `critical` without a new event. The engine
 * must see the quorum arrive from the detector's current status and run the critical actions then, and
 * still never on one sensor, stale data or a blind zone. VirtualClock and the engine's zoneStatus seam;
 * dry run, so the records say what would run without processes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ActionEngine } from '../../agent/actions/engine.js';
import { VirtualClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import type { Evidence, Level, ZoneStatus } from '../../agent/detection/types.js';
import type { ActionEvent } from '../../agent/outputs/events.js';
import { silentLogger } from '../helpers/agent.js';
import { settle } from '../helpers/fake-serial.js';
import { rackText } from '../helpers/config-text.js';

const dirs: string[] = [];
const engines: ActionEngine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Evidence with `good` sensors flagged critical and `stale` ones flagged critical but stale; k as the detector used it. */
function evidence(good: number, o: { stale?: number; k?: number } = {}): Evidence {
  const sensors = ['r1', 'r2', 'r3'].map((d, i) => ({
    pointId: `${d}.temperature`,
    tempC: 36,
    status: i < good ? 'good' : i < good + (o.stale ?? 0) ? 'stale' : 'good',
    rateShortCPerMin: 2,
    rateLongCPerMin: 1,
    etaCriticalS: 0,
    flags: i < good + (o.stale ?? 0) ? ['alarm_temp', 'critical_temp'] : [],
  }));
  const agreeing = good + (o.stale ?? 0);
  return { sensors, chillers: [], agreeingAlarm: agreeing, agreeingCritical: agreeing, k: o.k ?? 2, etaCriticalS: 0 };
}

async function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'rackguard-gate-recheck-'));
  dirs.push(dir);
  const config = parseConfig(
    `${rackText(3, { id: 'za', extra: 'detection: { corroborationLowersK: true }' })}actions:
  stateDir: state
  policies:
    - level: critical
      actions: [{ kind: exec, name: drain, argv: [/bin/true] }]
`,
    join(dir, 'c.yaml'),
    { baseDir: dir },
  );
  const clock = new VirtualClock({ startWallMs: Date.now() });
  const records: ActionEvent[] = [];
  let status: ZoneStatus = { zone: 'za', level: 'normal', blind: false, sinceMono: 0, evidence: evidence(0) };
  const engine = new ActionEngine(config.actions!, { clock, logger: silentLogger, site: 's', gateway: 'g', zones: config.zones, record: (e) => records.push(e), dryRun: true, zoneStatus: () => status });
  engines.push(engine);
  await engine.start();
  const detector = (level: Level, ev: Evidence, blind = false): void => {
    status = { zone: 'za', level, blind, sinceMono: clock.monoMs(), evidence: ev };
  };
  /** The detector's zone_level event for the current status. */
  const event = (from: Level): void =>
    engine.onDetection({ kind: 'zone_level', zone: 'za', from, level: status.level, reason: `to ${status.level}`, mono: clock.monoMs(), ts: clock.wallMs(), evidence: status.evidence });
  const run = async (ms: number): Promise<void> => {
    for (let t = 0; t < ms; t += 500) {
      clock.advance(500);
      await settle();
    }
  };
  const drain = () => records.filter((r) => r.action === 'drain').map((r) => r.status);
  return { clock, engine, records, detector, event, run, drain };
}

describe('critical actions refused by the gate', () => {
  it('run once the zone, still critical without a new event, reaches quorum', async () => {
    const s = await setup();
    // A chiller trip lowered k to 1: the detector says critical on one sensor. The gate refuses.
    s.detector('critical', evidence(1, { k: 1 }));
    s.event('alarm');
    await settle();
    expect(s.drain()).toEqual(['skipped']);
    await s.run(5000);
    // Not again and again while nothing changes.
    expect(s.drain()).toEqual(['skipped']);
    // A second sensor agrees; the zone stays critical, so the detector emits nothing.
    s.detector('critical', evidence(2, { k: 1 }));
    await s.run(5000);
    expect(s.drain()).toEqual(['skipped', 'dry-run']);
    await s.run(5000);
    expect(s.drain()).toEqual(['skipped', 'dry-run']);
  });

  it('never on one sensor with stale support, nor on a blind zone, nor once the zone left critical', async () => {
    const s = await setup();
    s.detector('critical', evidence(1, { k: 1 }));
    s.event('alarm');
    await settle();
    s.detector('critical', evidence(1, { stale: 1, k: 1 }));
    await s.run(5000);
    s.detector('critical', evidence(2, { k: 1 }), true);
    await s.run(5000);
    s.detector('alarm', evidence(2, { k: 1 }));
    await s.run(5000);
    expect(s.drain()).toEqual(['skipped']);
  });
});
