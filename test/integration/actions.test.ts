/**
 * The actions with the real agent (createAgent), the simulator on a socat pty serving real Modbus on
 * accelerated simulated time, real exec hooks writing marker files, and the real outbox file where
 * every action record must land:
 * - a chiller trip and its restore: the alarm hook once, the critical hook once, onClear once, one
 *   incident id throughout;
 * - a zone flapping between warning and alarm inside one incident: each action once;
 * - a single-sensor runaway, a dead sensor (its zone blind): no action at all;
 * - a maintenance inhibit file: no hook runs, `inhibited` records instead;
 * - dry run: no hook runs, `dry-run` records instead.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import { parseConfig } from '../../agent/config/load.js';
import type { DetectorEvent } from '../../agent/detection/types.js';
import type { ActionEvent } from '../../agent/outputs/events.js';
import { parseScenario, startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { silentLogger } from '../helpers/agent.js';
import { startPtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { labRackConfig } from '../helpers/two-racks.js';

let tmp: TempDir;
const cleanups: Array<() => Promise<void> | void> = [];
let n = 0;

beforeAll(async () => {
  tmp = await tempDir('rackguard-actions-');
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(async () => {
  await tmp?.cleanup();
});

interface Rig {
  agent: Agent;
  /** The simulator, in this process: its scenario events can be applied when the test has seen what it waits for. */
  sim: Simulator;
  dir: string;
  detections: DetectorEvent[];
  /** Lines of the marker file: `<hook> <level> <incident>`. */
  marks(): string[];
  /** Stops the agent and returns the action records in its outbox file. */
  stopAndRecords(): Promise<ActionEvent[]>;
}

const ROOM = 'room: { itLoadKw: 100, initialRiseCPerMin: 5, cyclingAmplitudeC: 0, sensorOffsetMaxC: 0, noiseC: 0.02, doorTimeConstantS: 2 }';

async function rig(o: { detection: string; zones: string; policies: string; scenario: string; timeScale: number; inhibit?: boolean; dryRun?: boolean }): Promise<Rig> {
  const dir = join(tmp.path, `case${++n}`);
  const { mkdirSync } = await import('node:fs');
  mkdirSync(dir, { recursive: true });
  const hook = join(dir, 'hook.sh');
  writeFileSync(hook, `#!/bin/sh\nprintf '%s %s %s\\n' "$1" "$RACKGUARD_LEVEL" "$RACKGUARD_INCIDENT" >> ${join(dir, 'marks')}\n`);
  chmodSync(hook, 0o755);
  const pty = await startPtyPair();
  cleanups.push(() => pty.stop());
  const text = `${labRackConfig({ gateway: `gw${n}`, serialPath: pty.a, racks: 4, pollIntervalMs: 250, chiller: true, healthIntervalS: 600 })}zones:
${o.zones}
chillers:
  - { id: ch1, running: chiller1.running, alarm: chiller1.alarm_code, supplyTemp: chiller1.supply_temp, returnTemp: chiller1.return_temp, zones: [za] }
detection: ${o.detection}
outputs:
  outbox: { path: outbox.db }
actions:
  stateDir: state
${o.inhibit ? '  inhibit: { file: maintenance }\n' : ''}  policies:
${o.policies.replaceAll('HOOK', hook)}
`;
  const file = join(dir, 'rackguard.yaml');
  writeFileSync(file, text);
  const config = parseConfig(text, file, { baseDir: dir });
  if (o.inhibit) writeFileSync(join(dir, 'maintenance'), 'planned work\n');
  const sim = await startSimulator({ config, serialPath: pty.b, timeScale: o.timeScale, scenario: parseScenario(o.scenario, 'inline', { config }) });
  cleanups.push(() => sim.stop());
  const agent = createAgent(config, { logger: silentLogger, ...(o.dryRun ? { actionsDryRun: true } : {}) });
  const detections: DetectorEvent[] = [];
  agent.on('detection', (e) => detections.push(e));
  let stopped = false;
  cleanups.push(async () => {
    if (!stopped) await agent.stop();
  });
  await agent.start();
  const markFile = join(dir, 'marks');
  return {
    agent,
    sim,
    dir,
    detections,
    marks: () => (existsSync(markFile) ? readFileSync(markFile, 'utf8').trim().split('\n') : []),
    stopAndRecords: async () => {
      stopped = true;
      await agent.stop();
      const db = new Database(join(dir, 'outbox.db'), { readonly: true });
      try {
        return db
          .prepare<[], { body: string }>('SELECT body FROM records WHERE cls = 1 ORDER BY seq')
          .all()
          .map((r) => (JSON.parse(r.body) as { event: ActionEvent }).event)
          .filter((e) => e.kind === 'action');
      } finally {
        db.close();
      }
    },
  };
}

/** Fast detection: windows of seconds (the simulator runs minutes in seconds). */
const FAST = '{ k: 2, dwellS: 1, shortWindowS: 10, longWindowS: 30, clearDelayS: 2, hysteresisC: 0.5, staleAfterS: 10 }';
const TWO_ZONES = '  - { id: za, sensors: [r1.temperature, r2.temperature] }\n  - { id: zb, sensors: [r3.temperature, r4.temperature] }';
const ALARM_AND_CRITICAL = `    - level: alarm
      actions: [{ kind: exec, name: alarm-hook, argv: [HOOK, alarm-hook] }]
      onClear: [{ kind: exec, name: clear-hook, argv: [HOOK, clear-hook] }]
    - level: critical
      actions: [{ kind: exec, name: critical-hook, argv: [HOOK, critical-hook] }]`;
const TRIP = `name: trip\nseed: 1\n${ROOM}\nevents:\n  - { at: 5, chiller: trip }\n`;

async function until(what: string, pred: () => boolean, timeoutMs: number, show: () => unknown): Promise<void> {
  await expect
    .poll(pred, { timeout: timeoutMs, interval: 100 })
    .toBe(true)
    .catch((err: unknown) => {
      throw new Error(`${what}: ${(err as Error).message}; state: ${JSON.stringify(show())}`);
    });
}

const levelsOf = (r: Rig, zone: string): string[] => r.detections.filter((e) => e.zone === zone && e.kind === 'zone_level').map((e) => e.level);

describe('actions with the real agent and the simulator', () => {
  it('chiller trip and restore: the alarm hook once, the critical hook once, onClear once, one incident id; every record in the outbox', async () => {
    const r = await rig({
      detection: FAST,
      zones: '  - { id: za, sensors: [r1.temperature, r2.temperature] }',
      policies: ALARM_AND_CRITICAL,
      scenario: TRIP,
      timeScale: 20,
    });
    // The chiller is restored once the zone is critical, not at a fixed simulated time: on a loaded machine
    // a slow agent start-up could otherwise let the restore come before the agent ever saw the room hot.
    await until('za critical', () => levelsOf(r, 'za').includes('critical'), 120_000, () => levelsOf(r, 'za'));
    r.sim.rack.applyEvent({ kind: 'chiller', action: 'restore' });
    await until('za back to normal after critical', () => levelsOf(r, 'za').at(-1) === 'normal', 120_000, () => levelsOf(r, 'za'));
    await until('the clear hook ran', () => r.marks().some((m) => m.startsWith('clear-hook')), 20_000, () => r.marks());
    const records = await r.stopAndRecords();
    const marks = r.marks();
    expect(marks.map((m) => m.split(' ').slice(0, 2).join(' '))).toEqual(['alarm-hook alarm', 'critical-hook critical', 'clear-hook normal']);
    const ids = new Set(marks.map((m) => m.split(' ')[2]));
    expect(ids.size).toBe(1);
    const id = [...ids][0]!;
    const statuses = records.map((e) => `${e.action}:${e.status}`);
    expect(statuses.filter((s) => !s.startsWith('incident:'))).toEqual(['alarm-hook:started', 'alarm-hook:succeeded', 'critical-hook:started', 'critical-hook:succeeded', 'clear-hook:started', 'clear-hook:succeeded']);
    expect(statuses[0]).toBe('incident:opened');
    expect(statuses.filter((s) => s === 'incident:cleared')).toHaveLength(1);
    expect(statuses.indexOf('incident:cleared')).toBeLessThan(statuses.indexOf('clear-hook:started'));
    expect(records.every((e) => e.incident === id && e.zone === 'za')).toBe(true);
    expect(records.find((e) => e.action === 'critical-hook' && e.status === 'succeeded')!.detail).toMatchObject({ exitCode: 0, level: 'critical' });
  }, 180_000);

  it('a zone flapping between warning and alarm runs each action once in the incident', async () => {
    const r = await rig({
      // No rate criteria worth the name (the door steps are fast in real time) and no critical: levels follow the temperatures.
      detection: '{ k: 2, dwellS: 0.5, shortWindowS: 10, longWindowS: 30, clearDelayS: 1, hysteresisC: 0.3, staleAfterS: 10, warnTempC: 24, alarmTempC: 26, criticalTempC: 60, horizonS: 1, warnRateCPerMin: 1000, alarmShortRateCPerMin: 1000, alarmLongRateCPerMin: 1000 }',
      zones: '  - { id: za, sensors: [r1.temperature, r2.temperature] }',
      policies: `    - level: warning\n      actions: [{ kind: exec, name: warn-hook, argv: [HOOK, warn-hook] }]\n${ALARM_AND_CRITICAL}`,
      scenario: `name: flap\nseed: 2\n${ROOM}\nevents: []\n`,
      timeScale: 4,
    });
    // A door held open (+3 °C: warning) with three bumps on top (+6 °C: alarm), then closed. Each step is
    // taken once the agent has seen the previous one, not on a timeline a slow start-up or a stall of a
    // loaded machine could outrun. Doors add up, so a door of -deltaC for good closes one.
    const door = (deltaC: number): void => r.sim.rack.applyEvent({ kind: 'door', door: ['r1', 'r2'], deltaC, durationS: 1e6 });
    const last = (level: string) => () => levelsOf(r, 'za').at(-1) === level;
    door(3);
    await until('za warning (door held open)', last('warning'), 60_000, () => levelsOf(r, 'za'));
    for (let bump = 1; bump <= 3; bump++) {
      door(6);
      await until(`za alarm (bump ${bump})`, last('alarm'), 60_000, () => levelsOf(r, 'za'));
      door(-6);
      await until(`za back to warning (bump ${bump})`, last('warning'), 60_000, () => levelsOf(r, 'za'));
    }
    door(-3);
    await until('za back to normal', last('normal'), 120_000, () => levelsOf(r, 'za'));
    await until('the clear hook ran', () => r.marks().some((m) => m.startsWith('clear-hook')), 20_000, () => r.marks());
    const levels = levelsOf(r, 'za');
    // The flapping really happened inside one incident: alarm entered at least twice before normal.
    expect(levels.filter((l) => l === 'alarm').length).toBeGreaterThanOrEqual(2);
    expect(levels.indexOf('normal')).toBe(levels.length - 1);
    const records = await r.stopAndRecords();
    expect(r.marks().map((m) => m.split(' ')[0])).toEqual(['warn-hook', 'alarm-hook', 'clear-hook']);
    expect(new Set(r.marks().map((m) => m.split(' ')[2])).size).toBe(1);
    expect(records.filter((e) => e.action === 'incident' && e.status === 'opened')).toHaveLength(1);
  }, 180_000);

  it('a single-sensor runaway and a dead sensor (its zone blind) run no action', async () => {
    const r = await rig({
      detection: FAST,
      zones: TWO_ZONES,
      policies: ALARM_AND_CRITICAL,
      scenario: `name: faults\nseed: 3\n${ROOM}\nevents:\n  - { at: 5, sensor: r1.temperature, fault: drift, rateCPerMin: 20 }\n  - { at: 5, sensor: r3.temperature, fault: dead }\n`,
      timeScale: 10,
    });
    const samples: Array<{ pointId: string; value: number | null }> = [];
    r.agent.on('samples', (b) => samples.push(...b));
    await until('zb blind (dead sensor)', () => r.detections.some((e) => e.zone === 'zb' && e.kind === 'zone_blind' && e.blind), 60_000, () => r.detections.map((e) => `${e.zone}:${e.kind}:${e.level}`));
    // The runaway sensor far past the critical temperature, and the detector given time to see it.
    await until('r1 past 45 °C', () => samples.some((s) => s.pointId === 'r1.temperature' && (s.value ?? 0) > 45), 60_000, () => samples.filter((s) => s.pointId === 'r1.temperature').slice(-3));
    const mark = samples.length;
    await until('40 more samples', () => samples.length > mark + 40, 30_000, () => samples.length);
    const records = await r.stopAndRecords();
    expect(r.marks()).toEqual([]);
    expect(records.filter((e) => e.status === 'started')).toEqual([]);
    expect(levelsOf(r, 'za')).not.toContain('alarm');
  }, 120_000);

  it('maintenance inhibit (file): no hook runs during a trip; inhibited records and the inhibition event instead', async () => {
    const r = await rig({ detection: FAST, zones: '  - { id: za, sensors: [r1.temperature, r2.temperature] }', policies: ALARM_AND_CRITICAL, scenario: TRIP, timeScale: 20, inhibit: true });
    await until('za critical', () => levelsOf(r, 'za').includes('critical'), 120_000, () => levelsOf(r, 'za'));
    const records = await r.stopAndRecords();
    expect(r.marks()).toEqual([]);
    expect(records.find((e) => e.action === 'inhibit')).toMatchObject({ status: 'on' });
    expect(records.filter((e) => e.status === 'inhibited').map((e) => e.action)).toEqual(['alarm-hook', 'critical-hook']);
    expect(records.filter((e) => e.status === 'started')).toEqual([]);
    // Detection and publishing are untouched: the zone events are in the outbox too.
    expect(levelsOf(r, 'za')).toContain('critical');
  }, 180_000);

  it('dry run (rackguard run --dry-run): no hook runs; dry-run records instead', async () => {
    const r = await rig({ detection: FAST, zones: '  - { id: za, sensors: [r1.temperature, r2.temperature] }', policies: ALARM_AND_CRITICAL, scenario: TRIP, timeScale: 20, dryRun: true });
    await until('za critical', () => levelsOf(r, 'za').includes('critical'), 120_000, () => levelsOf(r, 'za'));
    const records = await r.stopAndRecords();
    expect(r.marks()).toEqual([]);
    expect(records.filter((e) => e.status === 'dry-run').map((e) => e.action)).toEqual(['alarm-hook', 'critical-hook']);
    expect(records.filter((e) => e.status === 'started')).toEqual([]);
  }, 180_000);
});
