/**
 * Maintenance inhibit through a retained MQTT topic when the broker is unreachable at the engine's
 * start (real mosquitto, stopped and restarted on its port; real exec hooks). The documented choice
 * (agent/actions/inhibit.ts, topicSubscribed): while the topic's state is unknown, actions run, and
 * each record says the inhibit state was unknown; once the broker is back, its retained `on` holds
 * the next actions back.
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
  tmp = await tempDir('rackguard-faults-inhibit-');
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
    .poll(pred, { timeout: 20_000, interval: 20 })
    .toBe(true)
    .catch((err: unknown) => {
      throw new Error(`${what}: ${(err as Error).message}; ${JSON.stringify(show())}`);
    });
}

describe('inhibit topic unreadable at start', () => {
  it('broker down at start: the alarm action runs and its records say the inhibit was unknown; the retained `on` then holds the critical action back', async () => {
    const dir = tmp.path;
    const hook = join(dir, 'hook.sh');
    writeFileSync(hook, `#!/bin/sh\necho "$1" >> ${join(dir, 'marks')}\n`);
    chmodSync(hook, 0o755);
    const config = parseConfig(
      `version: 1
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
`,
      join(dir, 'c.yaml'),
      { baseDir: dir },
    );
    // Maintenance was announced (retained), then the broker went away before the gateway started.
    const pub = await mqtt.connectAsync(broker.url, { clientId: 'maint-tool' });
    await pub.publishAsync('site/maintenance', 'on', { qos: 1, retain: true });
    await pub.endAsync();
    await broker.stop();

    const records: ActionEvent[] = [];
    const engine = new ActionEngine(config.actions!, { clock: systemClock, logger: silentLogger, site: 's', gateway: 'g', zones: config.zones, mqtt: config.outputs!.mqtt!, record: (e) => records.push(e) });
    const marks = (): string[] => (existsSync(join(dir, 'marks')) ? readFileSync(join(dir, 'marks'), 'utf8').trim().split('\n') : []);
    try {
      await engine.start();
      engine.onDetection(lvl('normal', 'alarm'));
      await until(() => records.some((r) => r.action === 'page' && r.status === 'succeeded'), 'page ran', () => records);
      expect(marks()).toEqual(['page']);
      const started = records.find((r) => r.action === 'page' && r.status === 'started')!;
      expect(started.detail).toMatchObject({ inhibitUnknown: ['topic site/maintenance'] });
      expect(started.message).toMatch(/maintenance inhibit unknown/);

      await broker.restart();
      await until(() => records.some((r) => r.action === 'inhibit' && r.status === 'on'), 'inhibit on from the retained message once the broker is back', () => records);
      engine.onDetection(lvl('alarm', 'critical'));
      await until(() => records.some((r) => r.action === 'failover' && r.status === 'inhibited'), 'failover held back', () => records);
      expect(marks()).toEqual(['page']);
    } finally {
      await engine.stop();
    }
  }, 60_000);
});
