/**
 * Maintenance inhibit through a retained MQTT topic when the broker is unreachable at the engine's
 * start (real mosquitto, stopped and restarted on its port; real exec hooks). The documented choice
 * (agent/actions/inhibit.ts, topicSubscribed): while the topic's state is unknown, actions run, and
 * each record says the inhibit state was unknown; once the broker is back, its retained `on` holds
 * the next actions back.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inhibitActions, markingHook, pollUntil, rigConfig, rigEngine, zoneLevel } from '../helpers/actions-rig.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

let tmp: TempDir;
let broker: Mosquitto;
let attempts = 0;
beforeAll(async () => {
  tmp = await tempDir('rackguard-faults-inhibit-');
  broker = await startMosquitto();
});
afterAll(async () => {
  await broker?.cleanup();
  await tmp?.cleanup();
});

describe('inhibit topic unreadable at start', () => {
  it('broker down at start: the alarm action runs and its records say the inhibit was unknown; the retained `on` then holds the critical action back', async () => {
    // A directory per attempt (marks, incident state, outbox): a retry must not meet the failed attempt's.
    const dir = join(tmp.path, `attempt${++attempts}`);
    mkdirSync(dir);
    const { hook, marks } = markingHook(dir);
    const config = rigConfig(dir, broker.url, inhibitActions(hook));
    // Maintenance was announced (retained), then the broker went away before the gateway started.
    const pub = await mqtt.connectAsync(broker.url, { clientId: 'maint-tool' });
    await pub.publishAsync('site/maintenance', 'on', { qos: 1, retain: true });
    await pub.endAsync();
    await broker.stop();
    let brokerDown = true;

    const { engine, records } = rigEngine(config);
    const until = (pred: () => boolean, what: string): Promise<void> => pollUntil(pred, what, () => JSON.stringify(records), 20_000);
    try {
      await engine.start();
      engine.onDetection(zoneLevel('normal', 'alarm', true));
      await until(() => records.some((r) => r.action === 'page' && r.status === 'succeeded'), 'page ran');
      expect(marks()).toEqual(['page']);
      const started = records.find((r) => r.action === 'page' && r.status === 'started')!;
      expect(started.detail).toMatchObject({ inhibitUnknown: ['topic site/maintenance'] });
      expect(started.message).toMatch(/maintenance inhibit unknown/);

      await broker.restart();
      brokerDown = false;
      await until(() => records.some((r) => r.action === 'inhibit' && r.status === 'on'), 'inhibit on from the retained message once the broker is back');
      engine.onDetection(zoneLevel('alarm', 'critical', true));
      await until(() => records.some((r) => r.action === 'failover' && r.status === 'inhibited'), 'failover held back');
      expect(marks()).toEqual(['page']);
    } finally {
      await engine.stop();
      // The broker back up for a retry after a failure while it was down.
      if (brokerDown) await broker.restart();
    }
  }, 60_000);
});
