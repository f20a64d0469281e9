/**
 * The Grafana dashboard (docs/grafana/rackguard.json) against what rackguard really writes: the real
 * agent (the simulator on a socat pty and on Modbus TCP, a chiller trip and a silent device from a
 * scenario, sped up) fills a real influxd through its influx sink; then EVERY InfluxQL query of the
 * dashboard (panel targets, annotations, template variables), with Grafana's macros replaced by
 * concrete values, runs against influxd's /query and must return rows with values.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { parseScenario, startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startInfluxd, type Influxd, type InfluxSeries } from '../helpers/influxd.js';
import { freePort } from '../helpers/ports.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const DB = 'rackguard';
const ZONES = ['cold-aisle-a', 'cold-aisle-b'];

let tmp: TempDir;
let pty: PtyPair;
let sim: Simulator;
let influx: Influxd;
let agent: SpawnedProcess | undefined;

interface Target {
  query: string;
  rawQuery?: boolean;
}
interface Panel {
  title: string;
  type: string;
  targets?: Target[];
  datasource?: { type: string; uid: string };
}
interface Dashboard {
  __inputs: Array<{ name: string; pluginId: string }>;
  panels: Panel[];
  annotations: { list: Array<{ name: string; query?: string; datasource?: { uid: string } }> };
  templating: { list: Array<{ name: string; query: string }> };
}

const dashboard = JSON.parse(readFileSync(join(ROOT, 'docs/grafana/rackguard.json'), 'utf8')) as Dashboard;

/** Grafana's macros and variables as Grafana would expand them (multi-value: a regex group). */
function expand(q: string): string {
  return q
    .replaceAll('$timeFilter', 'time >= now() - 1h')
    .replaceAll('$__interval', '2s')
    .replaceAll('$site', '(lab)')
    .replaceAll('$gateway', '(gw1)')
    .replaceAll('$zone', `(${ZONES.join('|')})`);
}

/** Every query of the dashboard, with where it comes from. */
function allQueries(): Array<{ where: string; query: string }> {
  const out: Array<{ where: string; query: string }> = [];
  for (const p of dashboard.panels) for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}"`, query: t.query });
  for (const a of dashboard.annotations.list) if (a.query) out.push({ where: `annotation "${a.name}"`, query: a.query });
  for (const v of dashboard.templating.list) out.push({ where: `variable $${v.name}`, query: v.query });
  return out;
}

/** A series has at least one row with a value besides the time column. */
const hasValues = (s: InfluxSeries): boolean => (s.values ?? []).some((row) => row.some((v, i) => s.columns[i] !== 'time' && v !== null && v !== ''));

async function rows(query: string): Promise<InfluxSeries[]> {
  const r = await influx.query(query, DB);
  if (r.error || r.results[0]?.error) throw new Error(`${query}: ${r.error ?? r.results[0]?.error}`);
  return r.results[0]?.series ?? [];
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-grafana-');
  [pty, influx] = await Promise.all([startPtyPair(), startInfluxd()]);
  await influx.query(`CREATE DATABASE ${DB}`);
  const tcpPort = await freePort();
  const text = `version: 1
site: lab
gateway: gw1
logging: { samples: false }
# Short windows: the run is sped up, and the ETA needs rates estimated over a covered window.
detection: { shortWindowS: 5, longWindowS: 20, horizonS: 120 }
buses:
  - id: rs485
    type: serial
    path: ${pty.a}
    devices:
      - { id: rack01, unitId: 1, profile: xy-md02, pollIntervalMs: 250, timeoutMs: 100 }
      - { id: rack02, unitId: 2, profile: xy-md02, pollIntervalMs: 250, timeoutMs: 100 }
      - { id: rack03, unitId: 3, profile: xy-md02, pollIntervalMs: 250, timeoutMs: 100 }
      - { id: rack04, unitId: 4, profile: xy-md02, pollIntervalMs: 250, timeoutMs: 100 }
  - id: chillers
    type: tcp
    host: 127.0.0.1
    port: ${tcpPort}
    devices:
      - { id: chiller1, profile: generic-chiller, unitId: 1, pollIntervalMs: 250 }
zones:
  - { id: cold-aisle-a, sensors: [rack01.temperature, rack02.temperature] }
  - { id: cold-aisle-b, sensors: [rack03.temperature, rack04.temperature] }
chillers:
  - { id: ch1, running: chiller1.running, alarm: chiller1.alarm_code, supplyTemp: chiller1.supply_temp, returnTemp: chiller1.return_temp, zones: [cold-aisle-a, cold-aisle-b] }
outputs:
  outbox: { path: ${join(tmp.path, 'outbox.db')} }
  influx: { url: '${influx.url}', database: ${DB}, flushIntervalMs: 200 }
`;
  const file = join(tmp.path, 'agent.yaml');
  writeFileSync(file, text);
  const config = parseConfig(text, 'sim');
  // Sped up ×20: rack04 goes silent for a while (device health, failed readings), then ch1 trips and
  // the room heats (zone levels, rates, ETA, chiller values).
  const scenario = parseScenario(
    `name: grafana-fill
description: a silent device, then a chiller trip
seed: 1
room: { itLoadKw: 100, initialRiseCPerMin: 2 }
events:
  - { at: 20, device: rack04, fault: silent }
  - { at: 200, chiller: trip }
  - { at: 500, device: rack04, fault: none }
`,
    'grafana-fill',
    { config },
  );
  sim = await startSimulator({ config, scenario, serialPath: pty.b, tcpPort, timeScale: 20 });
  agent = await spawnAndWait(process.execPath, ['--import', 'tsx', join(ROOT, 'agent/main.ts'), 'run', '--config', file], { readyLine: /outbox open/, timeoutMs: 20_000 });
});

afterAll(async () => {
  if (agent) await agent.stop('SIGTERM');
  await sim?.stop();
  await Promise.all([pty?.stop(), influx?.cleanup()]);
  await tmp?.cleanup();
});

describe('Grafana dashboard against a real influxd filled by the agent', () => {
  it('is an importable InfluxDB dashboard: every panel and annotation uses the ${DS_INFLUXDB} input with raw InfluxQL', () => {
    expect(dashboard.__inputs).toEqual([expect.objectContaining({ name: 'DS_INFLUXDB', pluginId: 'influxdb' })]);
    for (const p of dashboard.panels.filter((x) => x.type !== 'row')) {
      expect(p.datasource?.uid, p.title).toBe('${DS_INFLUXDB}');
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets!) expect(t.rawQuery, p.title).toBe(true);
    }
    expect(dashboard.annotations.list.filter((a) => a.query !== undefined).every((a) => a.datasource?.uid === '${DS_INFLUXDB}')).toBe(true);
    expect(allQueries().length).toBeGreaterThanOrEqual(18);
  });

  it('every query returns rows with values', async () => {
    // Wait until the trip has played out: a zone in alarm with an ETA, and rack04's outage recorded.
    await expect
      .poll(async () => (await rows(`SELECT max("level_rank") FROM "zone_level"`))[0]?.values?.[0]?.[1], { timeout: 120_000, interval: 1000 })
      .toBeGreaterThanOrEqual(2);
    await expect.poll(async () => (await rows(`SELECT count("eta_critical_s") FROM "zone_level"`)).length, { timeout: 60_000, interval: 1000 }).toBeGreaterThan(0);
    await expect.poll(async () => (await rows(`SELECT count("message") FROM "events" WHERE "kind" = 'device_state' AND "device" = 'rack04' AND "severity" = 'warning'`)).length, { timeout: 60_000, interval: 1000 }).toBeGreaterThan(0);

    const failures: string[] = [];
    for (const { where, query } of allQueries()) {
      const q = expand(query);
      expect(q, where).not.toMatch(/\$[A-Za-z_{]/); // no variable or macro left (a regex may end in $)
      const series = await rows(q);
      if (!series.some(hasValues)) failures.push(`${where}: no rows with values for ${q}`);
    }
    expect(failures).toEqual([]);

    // The zone variable lists the configured zones; the rate panel's derivative sees the heating.
    const zones = (await rows(expand(dashboard.templating.list.find((v) => v.name === 'zone')!.query)))[0]!.values!.map((r) => r[1]);
    expect(zones.sort()).toEqual(ZONES);
    const rate = dashboard.panels.find((p) => p.title === 'Rate of change per sensor')!.targets![0]!.query;
    const rates = (await rows(expand(rate))).flatMap((s) => (s.values ?? []).map((r) => Number(r[1])));
    expect(Math.max(...rates)).toBeGreaterThan(0.5); // °C/min, on the sped-up trip
  }, 240_000);
});
