/**
 * The agent as a process with its outputs, against real parts: the simulator on a socat pty,
 * a real mosquitto and a real influxd. What the simulator served reaches an MQTT subscriber and
 * InfluxDB with its original timestamp; SIGKILL turns the retained status offline (last will) and a
 * restart on the same outbox loses nothing and duplicates nothing.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startInfluxd, type Influxd } from '../helpers/influxd.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startSubscriber, type Received, type Subscriber } from '../helpers/mqtt.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { labRackConfig } from '../helpers/two-racks.js';

const ROOT = join(import.meta.dirname, '..', '..');
const BASE = 'rackguard/lab/gw1';

let tmp: TempDir;
let pty: PtyPair;
let sim: Simulator;
let broker: Mosquitto;
let influx: Influxd;
let sub: Subscriber;
let msgs: Received[] = [];
let attempts = 0;

/** The agent's config text: its outbox file, InfluxDB database and MQTT client id. */
function configText(outbox: string, db: string, clientId: string): string {
  return `${labRackConfig({ gateway: 'gw1', serialPath: pty.a, racks: 2, pollIntervalMs: 250, healthIntervalS: 1 })}zones:
  - { id: z, sensors: [r1.temperature, r2.temperature] }
outputs:
  outbox: { path: ${outbox} }
  mqtt: { url: '${broker.url}', clientId: ${clientId}, keepaliveS: 5 }
  influx: { url: '${influx.url}', database: ${db}, flushIntervalMs: 200 }
`;
}

/**
 * A directory, database and config file of one test attempt: a retry (vitest re-runs a failed test)
 * must not meet the outbox records or points of the attempt before it.
 */
async function attempt(clientId: string, outbox?: (dir: string) => string): Promise<{ dir: string; db: string; file: string }> {
  const n = ++attempts;
  const dir = join(tmp.path, `attempt${n}`);
  mkdirSync(dir);
  const db = `rg${n}`;
  await influx.query(`CREATE DATABASE ${db}`);
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, configText(outbox ? outbox(dir) : join(dir, 'state', 'outbox.db'), db, clientId));
  return { dir, db, file };
}

const waitMsg = (pred: (m: Received) => boolean, timeoutMs: number, what: string, from = 0): Promise<Received> => sub.waitMsg(pred, timeoutMs, what, from);

/** A status message with this state (the payload is JSON { state, ts, tsMs, … }). */
function isStatus(m: Received, state: 'online' | 'offline'): boolean {
  return m.topic === `${BASE}/status` && (JSON.parse(m.payload) as { state: string }).state === state;
}

function startAgent(file: string): Promise<SpawnedProcess> {
  return spawnAndWait(process.execPath, ['--import', 'tsx', join(ROOT, 'agent/main.ts'), 'run', '--config', file], { readyLine: /outbox open/, timeoutMs: 20_000 });
}

async function influxTimes(db: string, point: string): Promise<number[]> {
  const r = await influx.query(`SELECT value FROM environment WHERE point = '${point}'`, db);
  // The helper asks for epoch=ms: times come back as numbers.
  return (r.results[0]?.series?.[0]?.values ?? []).map((v) => Number(v[0]));
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-agent-outputs-');
  [pty, broker, influx] = await Promise.all([startPtyPair(), startMosquitto(), startInfluxd()]);
  sim = await startSimulator({ config: parseConfig(configText(join(tmp.path, 'unused.db'), 'unused', 'unused'), 'sim'), serialPath: pty.b });
  sim.rack.setValue('r1.temperature', 23.4);
  sim.rack.setValue('r2.temperature', 21.7);
  sub = await startSubscriber(broker.url, { clientId: 'watcher', clean: true, topic: `${BASE}/#` });
  msgs = sub.messages;
});

afterAll(async () => {
  await sub?.stop();
  await sim?.stop();
  await Promise.all([pty?.stop(), broker?.cleanup(), influx?.cleanup()]);
  await tmp?.cleanup();
});

describe('agent → MQTT and InfluxDB', () => {
  it('delivers what the simulator served, with the same timestamp on both sides; SIGKILL → offline; restart loses nothing', async () => {
    const { db, file } = await attempt('rg-test');
    const from = msgs.length;
    let agent = await startAgent(file);
    try {
      await waitMsg((m) => isStatus(m, 'online'), 15_000, 'status online', from);
      const first = await waitMsg((m) => m.topic === `${BASE}/sensors/r1.temperature`, 15_000, 'an r1 sample', from);
      const payload = JSON.parse(first.payload) as { value: number; unit: string; quality: string; tsMs: number; ts: string };
      expect(payload).toMatchObject({ value: 23.4, unit: '°C', quality: 'good' });
      expect(new Date(payload.ts).getTime()).toBe(payload.tsMs);
      await waitMsg((m) => m.topic === `${BASE}/devices/r1/availability` && m.payload === 'online', 10_000, 'r1 availability', from);
      // Each sink reports its depth and lag in the health log: a sink that keeps up reports a small
      // backlog and what it delivered (a stuck one would report a growing depth, 8 samples a second).
      type Health = { sink: string; msg: string; depth: number; lagMs: number; pointsWritten?: number; published?: number; connected?: boolean };
      const healthOf = (sink: string): Health[] => agent.lines.filter((l) => l.includes('"sink health"')).map((l) => JSON.parse(l) as Health).filter((h) => h.sink === sink);
      await expect.poll(() => healthOf('influx').some((h) => h.pointsWritten! > 0 && h.depth < 50 && h.lagMs < 5000), { timeout: 15_000, interval: 200 }).toBe(true);
      await expect.poll(() => healthOf('mqtt').some((h) => h.connected === true && h.published! > 0 && h.depth < 50 && h.lagMs < 5000), { timeout: 15_000, interval: 200 }).toBe(true);
      // The outbox reports its group commits: far fewer than one per poll (8 polls/s here).
      const ob = JSON.parse(await agent.waitForLine(/"msg":"outbox health"/, 10_000)) as { state: string; commits: number };
      expect(ob.state).toBe('open');
      expect(ob.commits).toBeGreaterThan(0);

      // InfluxDB holds the same sample at the same timestamp.
      await expect.poll(async () => (await influxTimes(db, 'r1.temperature')).includes(payload.tsMs), { timeout: 15_000, interval: 200 }).toBe(true);
      const v = await influx.query(`SELECT value, quality, zone FROM environment WHERE point = 'r1.temperature' AND time = ${payload.tsMs}ms`, db);
      expect(v.results[0]!.series![0]!.values![0]!.slice(1)).toEqual([23.4, 'good', 'z']);

      // SIGKILL: no goodbye from the agent, so the broker publishes the last will.
      const mark = msgs.length;
      agent.proc.kill('SIGKILL');
      await agent.exited;
      await waitMsg((m) => isStatus(m, 'offline'), 15_000, 'last will offline', mark);
      const sentBeforeKill = msgs.slice(from).filter((m) => m.topic === `${BASE}/sensors/r2.temperature`).map((m) => (JSON.parse(m.payload) as { tsMs: number }).tsMs);

      // Restart on the same state directory.
      agent = await startAgent(file);
      await waitMsg((m) => isStatus(m, 'online'), 15_000, 'status online again', mark);
      const after = await waitMsg((m) => m.topic === `${BASE}/sensors/r2.temperature` && (JSON.parse(m.payload) as { tsMs: number }).tsMs > Math.max(...sentBeforeKill) + 1000, 15_000, 'fresh r2 samples', mark);
      const lastTs = (JSON.parse(after.payload) as { tsMs: number }).tsMs;
      expect(await agent.stop('SIGTERM')).toBe(0);
      await waitMsg((m) => isStatus(m, 'offline'), 10_000, 'clean offline', msgs.length - 1);

      // Everything MQTT saw before the kill is in InfluxDB exactly once, with its original timestamp.
      await expect.poll(async () => (await influxTimes(db, 'r2.temperature')).includes(lastTs), { timeout: 15_000, interval: 200 }).toBe(true);
      const times = await influxTimes(db, 'r2.temperature');
      expect(new Set(times).size).toBe(times.length);
      for (const t of sentBeforeKill) expect(times).toContain(t);
      // And the MQTT side got every sample time InfluxDB has (at-least-once; duplicates carry the same time).
      const mqttTimes = new Set(msgs.slice(from).filter((m) => m.topic === `${BASE}/sensors/r2.temperature`).map((m) => (JSON.parse(m.payload) as { tsMs: number }).tsMs));
      for (const t of times) expect(mqttTimes.has(t)).toBe(true);
    } finally {
      await agent.stop('SIGKILL');
    }
  });

  it('starts on a corrupt outbox: moves it aside, reports it, and keeps delivering', async () => {
    const { dir, file: badFile } = await attempt('rg-test-2', (d) => join(d, 'outbox.db'));
    const db = join(dir, 'outbox.db');
    writeFileSync(db, Buffer.alloc(64 * 1024, 0x5a)); // garbage where a SQLite header should be
    const mark = msgs.length;
    const agent = await spawnAndWait(process.execPath, ['--import', 'tsx', join(ROOT, 'agent/main.ts'), 'run', '--config', badFile], { readyLine: /outbox open/, timeoutMs: 20_000 });
    try {
      const moved = agent.lines.find((l) => l.includes('outbox was unreadable'));
      expect(moved).toBeDefined();
      const movedTo = (JSON.parse(moved!) as { movedTo: string }).movedTo;
      expect(movedTo.startsWith(`${db}.corrupt-`)).toBe(true);
      expect(readFileSync(movedTo).subarray(0, 4).toString()).toBe('ZZZZ');
      // The recovery is an event on the bus, and readings flow again.
      await waitMsg((m) => m.topic === `${BASE}/events` && m.payload.includes('outbox_corrupt'), 15_000, 'outbox_corrupt event', mark);
      await waitMsg((m) => m.topic === `${BASE}/sensors/r1.temperature`, 15_000, 'readings after recovery', mark);
    } finally {
      expect(await agent.stop('SIGTERM')).toBe(0);
    }
  });
});
