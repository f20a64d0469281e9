/**
 * Maintenance inhibit through a retained MQTT topic on a real mosquitto: the engine subscribes with
 * its own client on outputs.mqtt's broker; a retained `on` published before the engine starts holds
 * actions back (`inhibited` records, inhibit `on` event), a retained `off` lets them run again.
 * Detector events are built here (the engine's seam), the hooks are real scripts.
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
  tmp = await tempDir('rackguard-inhibit-mqtt-');
  broker = await startMosquitto();
});
afterAll(async () => {
  await broker?.cleanup();
  await tmp?.cleanup();
});

describe('inhibit through a retained MQTT topic', () => {
  it('retained on: actions held back and recorded; retained off: they run again', async () => {
    // A directory per attempt (marks, incident state, outbox): a retry must not meet the failed attempt's.
    const dir = join(tmp.path, `attempt${++attempts}`);
    mkdirSync(dir);
    const { hook, marks } = markingHook(dir);
    const config = rigConfig(dir, broker.url, inhibitActions(hook));
    const pub = await mqtt.connectAsync(broker.url, { clientId: 'maint-tool' });
    await pub.publishAsync('site/maintenance', 'on', { qos: 1, retain: true });
    const { engine, records } = rigEngine(config);
    const until = (pred: () => boolean, what: string): Promise<void> => pollUntil(pred, what, () => JSON.stringify(records), 15_000);
    try {
      await engine.start();
      await until(() => records.some((r) => r.action === 'inhibit' && r.status === 'on'), 'inhibit on from the retained message');
      expect(records.find((r) => r.action === 'inhibit')!.detail).toEqual({ sources: ['topic site/maintenance'] });
      engine.onDetection(zoneLevel('normal', 'alarm', true));
      await until(() => records.some((r) => r.action === 'page' && r.status === 'inhibited'), 'page inhibited');
      await pub.publishAsync('site/maintenance', 'off', { qos: 1, retain: true });
      await until(() => records.some((r) => r.action === 'inhibit' && r.status === 'off'), 'inhibit off');
      engine.onDetection(zoneLevel('alarm', 'critical', true));
      await until(() => records.some((r) => r.action === 'failover' && r.status === 'succeeded'), 'failover ran');
      // The held-back page is not replayed: maintenance people decide.
      expect(marks()).toEqual(['failover']);
    } finally {
      await engine.stop();
      await pub.publishAsync('site/maintenance', '', { qos: 1, retain: true });
      await pub.endAsync();
    }
  }, 60_000);
});
