/**
 * rackguard's MQTT clients do not have mqtt-packet build its 65,536-entry message-id cache (about
 * 6 MB of heap for the life of the process: LEAN_MQTT_OPTIONS in agent/outputs/mqtt-connection.ts).
 * The cache is global to mqtt-packet, so each client runs in a process of its own
 * (test/fixtures/mqtt-cache-probe.ts) against a real mosquitto: the sink's options leave the cache
 * empty; mqtt.js's defaults build it, which shows the check can fail.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';

const PROBE = join(import.meta.dirname, '..', 'fixtures', 'mqtt-cache-probe.ts');
let broker: Mosquitto;

beforeAll(async () => {
  broker = await startMosquitto();
});

afterAll(async () => {
  await broker?.cleanup();
});

async function probe(mode: 'ours' | 'default'): Promise<{ writeCache: boolean | null; cached: number }> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', PROBE, broker.url, mode], { timeout: 30_000 });
  return JSON.parse(stdout) as { writeCache: boolean | null; cached: number };
}

describe('MQTT client memory', () => {
  it('the sink\'s client options publish without the 65,536-buffer message-id cache; mqtt.js defaults build it', async () => {
    const [ours, defaults] = await Promise.all([probe('ours'), probe('default')]);
    expect(ours).toEqual({ writeCache: false, cached: 0 });
    expect(defaults).toEqual({ writeCache: null, cached: 65_536 });
  });
});
