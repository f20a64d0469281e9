/**
 * The shipped scenarios as behaviour checks of the detector, through the real CLI: `rackguard drill
 * --trace` generates each scenario's trace, `rackguard replay --json` runs the production detector
 * over it, and the event sequence and its timing are checked against the project's targets. All on
 * virtual time: deterministic, no wall-clock timing.
 *
 * The thermal headline (when a zone's median reaches 32 / 35 °C) comes from runDrill in-process; the
 * event assertions come only from the replay output.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigFile } from '../../agent/config/load.js';
import { DETECTION_DEFAULTS } from '../../agent/config/schema.js';
import { runDrill, type ZoneHeadline } from '../../drill/drill.js';
import { loadScenarioFile } from '../../firmware-sim/scenario.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const CONFIG_FILE = 'config/rackguard.example.yaml';
const SCENARIO_DIR = 'firmware-sim/scenarios';
const ZONES = ['cold-aisle-a', 'cold-aisle-b'] as const;
const ONSET_S = 600;
const TIMEOUT_MS = 180_000;

/** One line of `rackguard replay --json`. */
interface JsonEvent {
  time_s: number;
  zone: string;
  kind: 'zone_level' | 'zone_blind';
  level: string;
  from: string | null;
  reason: string;
  eta_critical_s: number | null;
  blind?: boolean;
}

function rackguard(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'agent/main.ts', ...args], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

let tmp: TempDir;
beforeAll(async () => {
  tmp = await tempDir('rackguard-scenarios-');
});
afterAll(async () => {
  await tmp?.cleanup();
});

/** Generates the scenario's trace with `drill --trace`, replays it with `replay --json`, returns the events. */
function replayScenario(name: string): JsonEvent[] {
  const trace = join(tmp.path, `${name}.csv`);
  const drill = rackguard('drill', '--config', CONFIG_FILE, '--scenario', `${SCENARIO_DIR}/${name}.yaml`, '--trace', trace, '--json');
  expect(drill.stderr).toBe('');
  expect(drill.status).toBe(0);
  const r = rackguard('replay', '--config', CONFIG_FILE, '--trace', trace, '--json');
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as JsonEvent);
}

/** The zone's level changes in order, as "from→to". */
function transitions(events: JsonEvent[], zone: string): string[] {
  return events.filter((e) => e.kind === 'zone_level' && e.zone === zone).map((e) => `${e.from}→${e.level}`);
}

/** Time of the zone's first move to `level`. */
function firstAt(events: JsonEvent[], zone: string, level: string): number {
  const e = events.find((x) => x.kind === 'zone_level' && x.zone === zone && x.level === level);
  if (!e) throw new Error(`no ${level} event for ${zone}`);
  return e.time_s;
}

/** Per-zone thermal headline of the scenario (median 32 / 35 °C times), from the drill run in-process. */
function thermal(name: string): Map<string, ZoneHeadline> {
  const config = loadConfigFile(join(ROOT, CONFIG_FILE));
  const scenario = loadScenarioFile(join(ROOT, SCENARIO_DIR, `${name}.yaml`), { config });
  return new Map(runDrill({ config, scenario }).headline.zones.map((z) => [z.zone, z]));
}

const TRIP_SEQUENCE = ['normal→warning', 'warning→alarm', 'alarm→critical'];

describe('shipped scenarios (drill → trace → replay)', () => {
  it('covers every shipped scenario but the demo', () => {
    const shipped = readdirSync(join(ROOT, SCENARIO_DIR)).filter((f) => f.endsWith('.yaml') && f !== 'demo.yaml');
    expect(shipped.sort()).toEqual(
      ['chiller-trip-2c.yaml', 'high-density-5c.yaml', 'normal-day.yaml', 'silent-partial-0.6c.yaml', 'slow-degradation-0.12c.yaml'].sort(),
    );
  });

  it(
    'chiller trip at 2 °C/min: alarm within 60 s, critical at least 5 min before the median reaches 35 °C',
    () => {
      const events = replayScenario('chiller-trip-2c');
      const heads = thermal('chiller-trip-2c');
      expect(events.every((e) => e.time_s >= ONSET_S)).toBe(true);
      expect(events.filter((e) => e.kind === 'zone_blind')).toEqual([]);
      for (const zone of ZONES) {
        expect(transitions(events, zone), zone).toEqual(TRIP_SEQUENCE);
        const alarmAt = firstAt(events, zone, 'alarm');
        const criticalAt = firstAt(events, zone, 'critical');
        // The target; actual at the time of writing: 35 s (the tripped chiller corroborates).
        expect(alarmAt - ONSET_S, `${zone} alarm after the trip`).toBeLessThanOrEqual(60);
        const m35 = heads.get(zone)!.median35AtS;
        expect(m35, `${zone} median reaches 35 °C within the run`).not.toBeNull();
        // Target: at least 5 min of warning before the zone median reaches 35 °C.
        expect(m35! - criticalAt, `${zone} lead of critical before the median reaches 35 °C (critical at ${criticalAt} s, median 35 °C at ${m35} s)`).toBeGreaterThanOrEqual(300);
      }
    },
    TIMEOUT_MS,
  );

  it(
    'high-density trip at 5 °C/min: critical before the median reaches 35 °C',
    () => {
      const events = replayScenario('high-density-5c');
      const heads = thermal('high-density-5c');
      expect(events.every((e) => e.time_s >= ONSET_S)).toBe(true);
      expect(events.filter((e) => e.kind === 'zone_blind')).toEqual([]);
      for (const zone of ZONES) {
        expect(transitions(events, zone), zone).toEqual(TRIP_SEQUENCE);
        const alarmAt = firstAt(events, zone, 'alarm');
        const criticalAt = firstAt(events, zone, 'critical');
        const h = heads.get(zone)!;
        expect(h.median32AtS).not.toBeNull();
        expect(h.median35AtS).not.toBeNull();
        expect(alarmAt - ONSET_S).toBeLessThanOrEqual(90);
        expect(alarmAt, `${zone} alarm before the median reaches 32 °C`).toBeLessThan(h.median32AtS!);
        expect(criticalAt, `${zone} critical before the median reaches 35 °C`).toBeLessThan(h.median35AtS!);
      }
    },
    TIMEOUT_MS,
  );

  it(
    'silent partial loss at 0.6 °C/min: normal → warning → alarm without the chiller saying so',
    () => {
      const events = replayScenario('silent-partial-0.6c');
      const heads = thermal('silent-partial-0.6c');
      expect(events.filter((e) => e.kind === 'zone_blind')).toEqual([]);
      for (const zone of ZONES) {
        expect(transitions(events, zone), zone).toEqual(['normal→warning', 'warning→alarm']);
        const warnAt = firstAt(events, zone, 'warning');
        const alarmAt = firstAt(events, zone, 'alarm');
        expect(warnAt).toBeGreaterThan(ONSET_S);
        expect(alarmAt).toBeGreaterThanOrEqual(warnAt);
        // The long-window rate carries it: within one long window and the dwell of the onset.
        // Actual at the time of writing: 390 s (aisle a) and 385 s (aisle b).
        expect(alarmAt - ONSET_S).toBeLessThanOrEqual(DETECTION_DEFAULTS.longWindowS + DETECTION_DEFAULTS.dwellS);
        const alarm = events.find((e) => e.zone === zone && e.level === 'alarm')!;
        expect(alarm.reason).not.toMatch(/tripped|alarm code/);
        const m32 = heads.get(zone)!.median32AtS;
        expect(m32).not.toBeNull();
        expect(alarmAt, `${zone} alarm before the median leaves 32 °C`).toBeLessThan(m32!);
      }
    },
    TIMEOUT_MS,
  );

  it(
    'slow degradation at 0.12 °C/min: warning on the 27 °C threshold, alarm on 32 °C, no critical',
    () => {
      const events = replayScenario('slow-degradation-0.12c');
      const heads = thermal('slow-degradation-0.12c');
      expect(events.filter((e) => e.kind === 'zone_blind')).toEqual([]);
      for (const zone of ZONES) {
        expect(transitions(events, zone), zone).toEqual(['normal→warning', 'warning→alarm']);
        const warning = events.find((e) => e.zone === zone && e.level === 'warning')!;
        const alarm = events.find((e) => e.zone === zone && e.level === 'alarm')!;
        // 0.12 °C/min never reaches the 0.33 °C/min warning rate: the temperature threshold does it.
        expect(warning.reason).toMatch(/≥ 27 °C/);
        expect(warning.reason).not.toMatch(/rising/);
        expect(alarm.reason).toMatch(/≥ 32 °C/);
        expect(alarm.reason).not.toMatch(/rising/);
        // (27 − 22 − offsets) / 0.12 °C/min: not before 25 min after the onset.
        expect(warning.time_s - ONSET_S).toBeGreaterThanOrEqual(25 * 60);
        // k = 2 sensors pass 32 °C no later than the median does.
        const m32 = heads.get(zone)!.median32AtS;
        expect(m32, `${zone} median reaches 32 °C within the 3 h run`).not.toBeNull();
        expect(alarm.time_s).toBeLessThanOrEqual(m32!);
        expect(alarm.time_s).toBeGreaterThan(warning.time_s + 3600);
      }
    },
    TIMEOUT_MS,
  );

  it(
    'normal day: never above warning; warnings only for the frozen and the dead sensor',
    () => {
      const events = replayScenario('normal-day');
      expect(events.filter((e) => e.level === 'alarm' || e.level === 'critical')).toEqual([]);
      expect(events.filter((e) => e.kind === 'zone_blind')).toEqual([]);
      expect(transitions(events, 'cold-aisle-a')).toEqual(['normal→warning', 'warning→normal']);
      expect(transitions(events, 'cold-aisle-b')).toEqual(['normal→warning', 'warning→normal']);
      const [aWarn, aClear] = events.filter((e) => e.zone === 'cold-aisle-a');
      const [bWarn, bClear] = events.filter((e) => e.zone === 'cold-aisle-b');
      // rack03 frozen from 14400 s to 36000 s; frozenAfterS 1800 (xy-md02 profile).
      expect(aWarn!.reason).toMatch(/rack03/);
      expect(aWarn!.time_s).toBeGreaterThanOrEqual(14400 + 1800 - 60);
      expect(aWarn!.time_s).toBeLessThanOrEqual(14400 + 1800 + 60);
      expect(aClear!.time_s).toBeGreaterThanOrEqual(36000);
      expect(aClear!.time_s).toBeLessThanOrEqual(36000 + DETECTION_DEFAULTS.clearDelayS + 60);
      // rack07 dead from 50400 s to 72000 s (a trace records its fault value as a failed read).
      expect(bWarn!.reason).toMatch(/rack07/);
      expect(bWarn!.time_s).toBeGreaterThanOrEqual(50400);
      expect(bWarn!.time_s).toBeLessThanOrEqual(50400 + DETECTION_DEFAULTS.staleAfterS + 10);
      expect(bClear!.time_s).toBeGreaterThanOrEqual(72000);
      expect(bClear!.time_s).toBeLessThanOrEqual(72000 + DETECTION_DEFAULTS.clearDelayS + 60);
    },
    TIMEOUT_MS,
  );
});

describe('rackguard replay input checks', () => {
  const replayFile = (name: string, text: string) => {
    const file = join(tmp.path, name);
    writeFileSync(file, text);
    return { file, ...rackguard('replay', '--config', CONFIG_FILE, '--trace', file, '--json') };
  };

  it('rejects an unknown point with exit code 2, naming the line', () => {
    const r = replayFile('unknown.csv', 'time_s,point,value\n0,rack01.temperature,22.1\n5,rack99.temperature,22\n');
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`${r.file}:3: unknown point "rack99.temperature"`);
  });

  it('rejects a malformed row with exit code 2, naming the line', () => {
    const r = replayFile('short.csv', 'time_s,point,value\n0,rack01.temperature,22.1\n5,rack02.temperature,22.0\n5,rack01.temperature\n');
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`${r.file}:4: expected 3 fields`);
    const nan = replayFile('nan.csv', 'time_s,point,value\n0,rack01.temperature,abc\n');
    expect(nan.status).toBe(2);
    expect(nan.stderr).toContain(`${nan.file}:2: value of rack01.temperature is not a number: "abc"`);
  });

  it('accepts an empty value as a failed read', () => {
    // Aisle B: all four sensors good for 100 s, then three of them fail to read: quorum (k = 2) is lost.
    const rows = ['time_s,point,value'];
    for (let t = 0; t < 300; t += 5) {
      for (const rack of ['rack05', 'rack06', 'rack07', 'rack08']) rows.push(`${t},${rack}.temperature,${t >= 100 && rack !== 'rack05' ? '' : '22.3'}`);
    }
    const r = replayFile('failed-reads.csv', `${rows.join('\n')}\n`);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const events = r.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as JsonEvent);
    const blind = events.filter((e) => e.zone === 'cold-aisle-b' && e.kind === 'zone_blind');
    expect(blind).toHaveLength(1);
    expect(blind[0]).toMatchObject({ time_s: 100, blind: true });
    expect(blind[0]!.reason).toMatch(/comm_error/);
  });
});
