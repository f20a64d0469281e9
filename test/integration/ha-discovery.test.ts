/**
 * Home Assistant discovery end to end: the real agent (simulator on a socat pty) against a real
 * mosquitto with `homeAssistantDiscovery: true`. The configs are retained (a client subscribing after
 * they were published still gets them), every topic they name receives messages, their templates
 * render (real Jinja2) against the payloads that really arrived, HA's birth message makes the agent
 * publish them again, and a retained config of a point no longer configured is cleared.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { renderHaTemplates } from '../helpers/ha-template.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startSubscriber, type Received, type Subscriber } from '../helpers/mqtt.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { twoRacksConfig } from '../helpers/two-racks.js';

const ROOT = join(import.meta.dirname, '..', '..');
const BASE = 'rackguard/lab/gw1';
const NODE = 'rackguard_lab_gw1';
const STALE = `homeassistant/sensor/${NODE}/r9_temperature/config`;

let tmp: TempDir;
let pty: PtyPair;
let sim: Simulator;
let broker: Mosquitto;
let agent: SpawnedProcess | undefined;
let watch: Subscriber;

interface Cfg {
  name: string;
  state_topic: string;
  value_template: string;
  json_attributes_topic?: string;
  json_attributes_template?: string;
  availability: Array<{ topic: string; value_template?: string; payload_available?: string }>;
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-ha-');
  [pty, broker] = await Promise.all([startPtyPair(), startMosquitto()]);
  const text = `${twoRacksConfig({ bus: { serialPath: pty.a }, device: 'pollIntervalMs: 250' })}zones:
  - { id: z, sensors: [r1.temperature, r2.temperature], detection: { dwellS: 1 } }
outputs:
  outbox: { path: ${join(tmp.path, 'outbox.db')} }
  mqtt: { url: '${broker.url}', clientId: rg-ha, homeAssistantDiscovery: true }
`;
  const file = join(tmp.path, 'agent.yaml');
  writeFileSync(file, text);
  sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b });
  sim.rack.setValue('r1.temperature', 22.5);
  sim.rack.setValue('r2.temperature', 22.9);
  // A config left by an earlier run whose point r9 has since been removed from the config.
  const pub = await mqtt.connectAsync(broker.url, { clientId: 'old-run' });
  await pub.publishAsync(STALE, JSON.stringify({ name: 'r9.temperature', state_topic: `${BASE}/sensors/r9.temperature` }), { qos: 1, retain: true });
  await pub.endAsync();
  watch = await startSubscriber(broker.url, { clientId: 'watch', clean: true, topic: '#' });
  agent = await spawnAndWait(process.execPath, ['--import', 'tsx', join(ROOT, 'agent/main.ts'), 'run', '--config', file], { readyLine: /outbox open/, timeoutMs: 20_000 });
});

afterAll(async () => {
  if (agent) await agent.stop('SIGTERM');
  await watch?.stop();
  await sim?.stop();
  await Promise.all([pty?.stop(), broker?.cleanup()]);
  await tmp?.cleanup();
});

const configTopics = (msgs: Received[]): Set<string> => new Set(msgs.filter((m) => /^homeassistant\/(sensor|binary_sensor)\/.*\/config$/.test(m.topic) && m.payload !== '').map((m) => m.topic));

describe('Home Assistant discovery against a real broker', () => {
  it('configs are retained, name topics that receive messages, and render against the real payloads', async () => {
    // 2 devices × (temperature, humidity) + 3 per zone + 2 device-state sensors.
    const expected = 4 + 3 + 2;
    await watch.waitFor((all) => configTopics(all).size >= expected, 20_000, 'discovery configs');
    // The stale config of the removed point is cleared: an empty retained payload removes it in HA.
    await watch.waitMsg((m) => m.topic === STALE && m.payload === '', 10_000, 'stale config cleared');

    // Heat the zone so its state topic gets messages too.
    sim.rack.setValue('r1.temperature', 40);
    sim.rack.setValue('r2.temperature', 40.4);
    await watch.waitMsg((m) => m.topic === `${BASE}/zones/z/state` && ['alarm', 'critical'].includes((JSON.parse(m.payload) as { level: string }).level), 30_000, 'zone alarm');

    // A client that subscribes now, after the configs were published, still gets every one (retained).
    // Stopped at the end of the attempt: a retry's own client must not fight it over the client id.
    const late = await startSubscriber(broker.url, { clientId: 'late', clean: true, topic: 'homeassistant/#' });
    try {
      await late.waitFor((all) => configTopics(all).size >= expected, 10_000, 'retained configs for a late subscriber');
      expect(late.messages.filter((m) => configTopics([m]).size > 0).every((m) => m.retain)).toBe(true);
      expect(late.messages.some((m) => m.topic === STALE)).toBe(false);
      const configs = late.messages.filter((m) => configTopics([m]).size > 0).map((m) => ({ topic: m.topic, body: JSON.parse(m.payload) as Cfg }));
      expect(configs.length).toBe(expected);

      // Every topic a config names has received messages; each template renders against what arrived.
      const pairs: Array<[string, string]> = [];
      const what: string[] = [];
      for (const { topic, body } of configs) {
        const uses: Array<[string, string | undefined]> = [[body.state_topic, body.value_template], [body.json_attributes_topic ?? body.state_topic, body.json_attributes_template], ...body.availability.map((a): [string, string | undefined] => [a.topic, a.value_template])];
        for (const [t, tpl] of uses) {
          const got = watch.messages.filter((m) => m.topic === t);
          expect(got.length, `${topic} names ${t}, which never received a message`).toBeGreaterThan(0);
          if (tpl === undefined) continue;
          for (const m of got.slice(-3)) {
            pairs.push([tpl, m.payload]);
            what.push(`${topic}: ${tpl} on ${t} = ${m.payload}`);
          }
        }
        for (const a of body.availability.filter((x) => x.value_template === undefined)) {
          expect(watch.messages.filter((m) => m.topic === a.topic).at(-1)!.payload).toBe(a.payload_available);
        }
      }
      const rendered = renderHaTemplates(pairs);
      rendered.forEach((r, i) => expect('error' in r ? r.error : '', what[i]).toBe(''));
      const out = (start: string): string[] => rendered.filter((_r, i) => what[i]!.startsWith(start)).map((r) => ('ok' in r ? r.ok : ''));
      expect(out(`homeassistant/binary_sensor/${NODE}/zone_z_alarm/config: {{ 'ON'`)).toContain('ON');
      expect(out(`homeassistant/sensor/${NODE}/r1_temperature/config: {{ value_json.value`).map(Number)).toContain(40);
      expect(out(`homeassistant/sensor/${NODE}/r1_temperature/config: {{ value_json.state }}`)).toContain('online');
    } finally {
      await late.stop();
    }
  });

  it("HA's birth message makes the agent publish its configs again", async () => {
    const mark = watch.messages.length;
    const ha = await mqtt.connectAsync(broker.url, { clientId: 'fake-ha-birth' });
    await ha.publishAsync('homeassistant/status', 'online', { qos: 1 });
    await ha.endAsync();
    await watch.waitFor((all) => configTopics(all.slice(mark)).size >= 9, 10_000, 'configs re-published after the birth message');
  });
});
