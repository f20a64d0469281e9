/**
 * Outages with the real agent: mosquitto stopped for 60 s mid-run and restarted, then influxd the
 * same. After recovery every sample of the run is in InfluxDB exactly once and has reached a
 * persistent-session QoS 1 subscriber, in order for each point, with no gap in the cadence.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startInfluxd, type Influxd } from '../helpers/influxd.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startSubscriber, type Subscriber } from '../helpers/mqtt.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const BASE = 'rackguard/lab/gw2';
const DB = 'rg';
const OUTAGE_MS = 60_000;
const POLL_MS = 500;
const POINTS = ['r1.temperature', 'r1.humidity', 'r2.temperature', 'r2.humidity'];

describe('outages of the broker and the database', () => {
  it('lose nothing: every sample reaches the subscriber in order and InfluxDB exactly once', async () => {
    // Everything per attempt: a retry after a failure midway (the agent already stopped, a server left
    // down) must not meet the previous attempt's processes, outbox, database or received samples.
    let tmp: TempDir | undefined;
    let pty: PtyPair | undefined;
    let sim: Simulator | undefined;
    let broker: Mosquitto | undefined;
    let influx: Influxd | undefined;
    let agent: SpawnedProcess | undefined;
    let sub: Subscriber | undefined;
    const received = new Map<string, number[]>(POINTS.map((p) => [p, []]));
    try {
      tmp = await tempDir('rackguard-agent-outage-');
      [pty, broker, influx] = await Promise.all([startPtyPair(), startMosquitto(), startInfluxd()]);
      const db = influx;
      await db.query(`CREATE DATABASE ${DB}`);
      const text = `version: 1
site: lab
gateway: gw2
logging: { samples: false }
buses:
  - { id: l, type: serial, path: ${pty.a}, devices: [{ id: r1, unitId: 1, profile: xy-md02, pollIntervalMs: ${POLL_MS} }, { id: r2, unitId: 2, profile: xy-md02, pollIntervalMs: ${POLL_MS} }] }
outputs:
  outbox: { path: ${join(tmp.path, 'outbox.db')} }
  mqtt: { url: '${broker.url}', clientId: rg-outage, reconnectInitialMs: 200, reconnectMaxMs: 2000 }
  influx: { url: '${influx.url}', database: ${DB}, flushIntervalMs: 200, retryInitialMs: 200, retryMaxMs: 2000 }
`;
      const file = join(tmp.path, 'agent.yaml');
      writeFileSync(file, text);
      sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b });
      // A persistent session: the broker keeps what the agent publishes while we are away.
      sub = await startSubscriber(broker.url, { clientId: 'outage-watcher', topic: `${BASE}/sensors/#` });
      sub.client.on('message', (topic, payload) => {
        const point = topic.slice(`${BASE}/sensors/`.length);
        if (topic.startsWith(`${BASE}/sensors/`)) received.get(point)?.push((JSON.parse(payload.toString()) as { tsMs: number }).tsMs);
      });
      agent = await spawnAndWait(process.execPath, ['--import', 'tsx', join(ROOT, 'agent/main.ts'), 'run', '--config', file], { readyLine: /outbox open/, timeoutMs: 20_000 });

      const count = (): number => [...received.values()].reduce((n, a) => n + a.length, 0);

      async function influxTimes(point: string): Promise<number[]> {
        const r = await db.query(`SELECT value FROM environment WHERE point = '${point}'`, DB);
        return (r.results[0]?.series?.[0]?.values ?? []).map((v) => Number(v[0]));
      }

      await expect.poll(count, { timeout: 15_000 }).toBeGreaterThan(8);

      await broker.stop();
      await new Promise((r) => setTimeout(r, OUTAGE_MS)); // the outage itself: a duration, not a synchronisation
      await broker.restart();
      const afterMqtt = Date.now();
      await expect.poll(() => Math.max(...received.get('r1.temperature')!), { timeout: 30_000, interval: 250 }).toBeGreaterThan(afterMqtt);

      await influx.stop();
      await new Promise((r) => setTimeout(r, OUTAGE_MS));
      await influx.restart();
      const afterInflux = Date.now();
      await expect.poll(async () => Math.max(0, ...(await influxTimes('r2.humidity'))), { timeout: 30_000, interval: 250 }).toBeGreaterThan(afterInflux);

      // Stop the agent cleanly so both sides settle on the same last sample.
      expect(await agent.stop('SIGTERM')).toBe(0);
      await expect.poll(async () => (await influxTimes('r1.temperature')).length, { timeout: 10_000 }).toBeGreaterThan(0);

      for (const point of POINTS) {
        const inflx = await influxTimes(point);
        const got = received.get(point)!;
        // In order per point, by first arrival: QoS 1 redelivers what was in flight at a reconnect, and a
        // group commit puts several samples of one point in flight at once, so a repeat may follow a
        // newer sample; what is new must never arrive out of order.
        const mqttSet = [...new Set(got)];
        for (let i = 1; i < mqttSet.length; i++) expect(mqttSet[i]!).toBeGreaterThan(mqttSet[i - 1]!);
        // Exactly once in InfluxDB, and the same samples on both sides.
        expect(new Set(inflx).size).toBe(inflx.length);
        expect(inflx.filter((t) => !mqttSet.includes(t))).toEqual([]);
        expect(mqttSet.filter((t) => !inflx.includes(t))).toEqual([]);
        // No hole in the cadence across either outage: nothing was lost in between.
        const sorted = [...inflx].sort((a, b) => a - b);
        const gaps = sorted.slice(1).map((t, i) => t - sorted[i]!);
        expect(Math.max(...gaps)).toBeLessThan(POLL_MS * 4);
        expect(sorted[sorted.length - 1]! - sorted[0]!).toBeGreaterThan(2 * OUTAGE_MS);
      }
    } finally {
      await agent?.stop('SIGTERM');
      await sub?.stop();
      await sim?.stop();
      await Promise.all([pty?.stop(), broker?.cleanup(), influx?.cleanup()]);
      await tmp?.cleanup();
    }
  }, 240_000);
});
