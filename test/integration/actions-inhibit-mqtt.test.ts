/**
 * Maintenance inhibit through a retained MQTT topic on a real mosquitto: the engine subscribes with
 * its own client on outputs.mqtt's broker; a retained `on` published before the engine starts holds
 * actions back (`inhibited` records, inhibit `on` event), a retained `off` lets them run again.
 * Detector events are built here (the engine's seam), the hooks are real scripts.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../agent/clock.js';
import { ActionEngine } from '../../agent/actions/engine.js';
import { parseConfig } from '../../agent/config/load.js';
import type { DetectorEvent, Level } from '../../agent/detection/types.js';
import type { ActionEvent } from '../../agent/outputs/events.js';
import { silentLogger } from '../helpers/agent.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

let tmp: TempDir;
let broker: Mosquitto;
beforeAll(async () => {
  tmp = await tempDir('rackguard-inhibit-mqtt-');
  broker = await startMosquitto();
});
afterAll(async () => {
  await broker?.cleanup();
  await tmp?.cleanup();
});

function lvl(from: Level, level: Level): DetectorEvent {
  const s = (id: string) => ({ pointId: id, tempC: 36, status: 'good', rateShortCPerMin: 2, rateLongCPerMin: 1, etaCriticalS: 0, flags: ['alarm_temp', 'critical_temp'] });
  return { kind: 'zone_level', zone: 'za', from, level, reason: `to ${level}`, mono: performance.now(), ts: Date.now(), evidence: { sensors: [s('r1.temperature'), s('r2.temperature')], chillers: [], agreeingAlarm: 2, agreeingCritical: 2, k: 2, etaCriticalS: 0 } };
}

async function until(pred: () => boolean, what: string, show: () => unknown): Promise<void> {
  await expect
    .poll(pred, { timeout: 15_000, interval: 20 })
    .toBe(true)
    .catch((err: unknown) => {
      throw new Error(`${what}: ${(err as Error).message}; ${JSON.stringify(show())}`);
    });
}

describe('inhibit through a retained MQTT topic', () => {
  it('retained on: actions held back and recorded; retained off: they run again', async () => {
    const dir = tmp.path;
    const hook = join(dir, 'hook.sh');
    writeFileSync(hook, `#!/bin/sh\necho "$1" >> ${join(dir, 'marks')}\n`);
    chmodSync(hook, 0o755);
    const text = `version: 1
buses:
  - { id: l, type: serial, path: /dev/null, devices: [{ id: r1, unitId: 1, profile: xy-md02 }, { id: r2, unitId: 2, profile: xy-md02 }] }
zones:
  - { id: za, sensors: [r1.temperature, r2.temperature] }
outputs:
  outbox: { path: outbox.db }
  mqtt: { url: "${broker.url}" }
actions:
  stateDir: state
  inhibit: { mqttTopic: site/maintenance }
  policies:
    - { level: alarm, actions: [{ kind: exec, name: page, argv: ["${hook}", page] }] }
    - { level: critical, actions: [{ kind: exec, name: failover, argv: ["${hook}", failover] }] }
`;
    const config = parseConfig(text, join(dir, 'c.yaml'), { baseDir: dir });
    const pub = await mqtt.connectAsync(broker.url, { clientId: 'maint-tool' });
    await pub.publishAsync('site/maintenance', 'on', { qos: 1, retain: true });
    const records: ActionEvent[] = [];
    const engine = new ActionEngine(config.actions!, { clock: systemClock, logger: silentLogger, site: 's', gateway: 'g', zones: config.zones, mqtt: config.outputs!.mqtt!, record: (e) => records.push(e) });
    const marks = (): string[] => (existsSync(join(dir, 'marks')) ? readFileSync(join(dir, 'marks'), 'utf8').trim().split('\n') : []);
    try {
      await engine.start();
      await until(() => records.some((r) => r.action === 'inhibit' && r.status === 'on'), 'inhibit on from the retained message', () => records);
      expect(records.find((r) => r.action === 'inhibit')!.detail).toEqual({ sources: ['topic site/maintenance'] });
      engine.onDetection(lvl('normal', 'alarm'));
      await until(() => records.some((r) => r.action === 'page' && r.status === 'inhibited'), 'page inhibited', () => records);
      await pub.publishAsync('site/maintenance', 'off', { qos: 1, retain: true });
      await until(() => records.some((r) => r.action === 'inhibit' && r.status === 'off'), 'inhibit off', () => records);
      engine.onDetection(lvl('alarm', 'critical'));
      await until(() => records.some((r) => r.action === 'failover' && r.status === 'succeeded'), 'failover ran', () => records);
      // The held-back page is not replayed: maintenance people decide.
      expect(marks()).toEqual(['failover']);
    } finally {
      await engine.stop();
      await pub.publishAsync('site/maintenance', '', { qos: 1, retain: true });
      await pub.endAsync();
    }
  }, 60_000);
});
