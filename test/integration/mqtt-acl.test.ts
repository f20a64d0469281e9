/**
 * The MQTT sink against a real mosquitto that refuses some publishes: an acl_file that denies one of
 * the agent's topics and a message_size_limit below a large event. mosquitto 2.0 answers such a publish
 * with a PUBACK (no reason code under MQTT 3.1.1, 0x87 / 0x95 under MQTT 5) and then closes the
 * connection. Whatever the protocol: the refused record is never acknowledged silently (an
 * `mqtt_publish_rejected` event names its topic), it never blocks the records after it, and every
 * other reading arrives.
 */
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mqttSchema } from '../../agent/config/outputs-schema.js';
import type { OutputContext } from '../../agent/outputs/context.js';
import { MqttSink } from '../../agent/outputs/mqtt.js';
import type { OutboxEntry } from '../../agent/outputs/outbox.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startSubscriber, type Received, type Subscriber } from '../helpers/mqtt.js';
import { BASE_TS, Cleanups, openOutbox, outputContext, sampleEntry as sample, testLogger as logger } from '../helpers/outputs-rig.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const BASE = 'rackguard/s1/g1';
const POINTS = ['rack01.temperature', 'rack02.temperature'];
/** The ACL denies publishing to this point's topic. */
const DENIED_POINT = 'secret.temperature';
const CYCLES = 12;

// Every point in zone z1, the denied one too.
const context = (): OutputContext => outputContext([...POINTS, DENIED_POINT], { allInZone: true });

interface Rejection {
  kind: string;
  code: string;
  message: string;
  detail: { topic: string; reasonCode?: number; seq: number };
}

const rejections = (m: Received[]): Rejection[] =>
  m.filter((x) => x.topic === `${BASE}/events` && x.payload.includes('"mqtt_publish_rejected"')).map((x) => JSON.parse(x.payload) as Rejection);

function sensorTimes(m: Received[], point: string): number[] {
  return [...new Set(m.filter((x) => x.topic === `${BASE}/sensors/${point}`).map((x) => (JSON.parse(x.payload) as { tsMs: number }).tsMs))];
}

describe('MQTT sink and a broker that refuses publishes (acl_file, message_size_limit)', () => {
  let broker: Mosquitto;
  let dir: TempDir;
  let n = 0;
  const cleanups = new Cleanups();

  beforeAll(async () => {
    [broker, dir] = await Promise.all([
      startMosquitto({
        users: { rg: 'pub-secret', rgha: 'ha-secret', watcher: 'sub-secret' },
        // Every topic of the agent but one sensor and the zone state; rgha may also use the Home Assistant
        // discovery prefix; the watcher reads everything.
        acl: ['rg', 'rgha']
          .flatMap((u) => [`user ${u}`, ...POINTS.map((p) => `topic write ${BASE}/sensors/${p}`), `topic write ${BASE}/events`, `topic write ${BASE}/status`, `topic write ${BASE}/devices/#`])
          .concat(['topic readwrite homeassistant/#', 'user watcher', 'topic read #'])
          .join('\n'),
        messageSizeLimit: 4096,
      }),
      tempDir('rackguard-mqtt-acl-'),
    ]);
  });
  afterEach(() => cleanups.run());
  afterAll(async () => {
    await broker?.cleanup();
    await dir?.cleanup();
  });

  /** A sink as user rg (its outbox fresh) and a watcher of everything under BASE, both stopped after the test. */
  async function startSinkAndWatcher(over: Record<string, unknown>, log: typeof logger, user: [string, string] = ['rg', 'pub-secret']) {
    const id = ++n;
    const outbox = openOutbox(dir.path, `outbox-${id}.db`, { commitIntervalMs: 0 });
    const sink = new MqttSink(mqttSchema.parse({ url: broker.url, clientId: `rg-acl-${id}`, usernameFile: undefined, ...over }), {
      outbox,
      context: context(),
      logger: log,
      env: { RACKGUARD_MQTT_USERNAME: user[0], RACKGUARD_MQTT_PASSWORD: user[1] },
    });
    const s: Subscriber = await startSubscriber(broker.url, { clientId: `rg-acl-sub-${id}`, topic: `${BASE}/#`, username: 'watcher', password: 'sub-secret', clean: true });
    cleanups.push(() => outbox.close());
    cleanups.push(() => sink.stop());
    cleanups.push(() => s.stop());
    await sink.start();
    return { outbox, sink, s };
  }

  for (const protocolVersion of [4, 5] as const) {
    it(`MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}: a denied sensor topic, a denied zone state and an oversized event each become an event naming the topic; every other reading arrives`, async () => {
      const id = ++n;
      const outbox = openOutbox(dir.path, `outbox-${id}.db`, { commitIntervalMs: 0 });
      const sink = new MqttSink(
        mqttSchema.parse({ url: broker.url, protocolVersion, clientId: `rg-acl-${id}`, reconnectInitialMs: 50, reconnectMaxMs: 200, publishTimeoutMs: 2000, usernameFile: undefined }),
        { outbox, context: context(), logger, env: { RACKGUARD_MQTT_USERNAME: 'rg', RACKGUARD_MQTT_PASSWORD: 'pub-secret' } },
      );
      const s: Subscriber = await startSubscriber(broker.url, { clientId: `rg-acl-sub-${id}`, topic: `${BASE}/#`, username: 'watcher', password: 'sub-secret', clean: true });
      cleanups.push(() => outbox.close());
      cleanups.push(() => sink.stop());
      cleanups.push(() => s.stop());
      await sink.start();

      const big: OutboxEntry = { type: 'event', event: { kind: 'action', action: 'exec', status: 'failed', ts: BASE_TS + 4500, message: 'x'.repeat(10_000) } };
      const zone: OutboxEntry = { type: 'event', event: { kind: 'zone_level', zone: 'z1', from: 'warning', level: 'alarm', reason: 'test', mono: 7000, ts: BASE_TS + 7001, evidence: { sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 0, k: 2, etaCriticalS: 300 } } };
      for (let c = 0; c < CYCLES; c++) {
        const entries = POINTS.map((p) => sample(p, c));
        if (c === 2) entries.push(sample(DENIED_POINT, c));
        if (c === 4) entries.push(big);
        if (c === 7) entries.push(zone);
        outbox.append(entries);
      }
      await s.waitFor((m) => POINTS.every((p) => sensorTimes(m, p).length === CYCLES) && rejections(m).length >= 3, 40_000, 'every allowed reading and three rejection events');
      for (const p of POINTS) expect(sensorTimes(s.messages, p)).toEqual(Array.from({ length: CYCLES }, (_, c) => BASE_TS + c * 1000));
      const byTopic = new Map(rejections(s.messages).map((r) => [r.detail.topic, r]));
      expect([...byTopic.keys()].sort()).toEqual([`${BASE}/events`, `${BASE}/sensors/${DENIED_POINT}`, `${BASE}/zones/z1/state`].sort());
      expect(byTopic.get(`${BASE}/sensors/${DENIED_POINT}`)!.message).toMatch(/sample of secret\.temperature/);
      expect(byTopic.get(`${BASE}/events`)!.message).toMatch(/action event, 10\d\d\d bytes/);
      if (protocolVersion === 5) expect(byTopic.get(`${BASE}/zones/z1/state`)!.detail.reasonCode).toBe(0x87);
      // The zone record's other message (the events topic is allowed) was not lost with it.
      expect(s.messages.some((x) => x.topic === `${BASE}/events` && x.payload.includes('"zone_level"'))).toBe(true);
      await until(() => outbox.depth('mqtt') === 0, 10_000, 'the cursor past every record');
      expect(sink.stats().skipped).toBe(3);
    });

    it(`MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}: a sensor whose topic is denied in every cycle does not hold the others back; its skipped messages are reported and counted`, async () => {
      // The default reconnect schedule: every connection mosquitto closes on a refusal costs about a second.
      const { outbox, sink, s } = await startSinkAndWatcher({ protocolVersion }, logger);
      const cycles = 30;
      for (let c = 0; c < cycles; c++) outbox.append([...POINTS.map((p) => sample(p, c)), sample(DENIED_POINT, c)]);
      // Without a quarantine of the refused topic each of its 30 messages costs about three reconnects.
      await s.waitFor((m) => POINTS.every((p) => sensorTimes(m, p).length === cycles), 25_000, 'every allowed reading');
      await until(() => outbox.depth('mqtt') === 0, 10_000, 'the cursor past every record');
      expect(sink.stats().skipped).toBe(cycles);
      const r = rejections(s.messages).filter((x) => x.detail.topic === `${BASE}/sensors/${DENIED_POINT}`);
      expect(r.length).toBeGreaterThanOrEqual(1);
      expect(r.some((x) => /further messages to this topic are skipped unsent for 60 s/.test(x.message))).toBe(true);
    });

    it(`MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}: Home Assistant discovery denied by the ACL: discovery pauses with one error naming it, and every reading arrives`, async () => {
      const logs: Array<{ level: number; msg: string }> = [];
      const capture = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as { level: number; msg: string }) });
      const { outbox, sink, s } = await startSinkAndWatcher({ protocolVersion, reconnectInitialMs: 50, reconnectMaxMs: 200, homeAssistantDiscovery: true }, capture);
      const cycles = 10;
      for (let c = 0; c < cycles; c++) outbox.append(POINTS.map((p) => sample(p, c)));
      await s.waitFor((m) => POINTS.every((p) => sensorTimes(m, p).length === cycles), 25_000, 'every reading');
      await until(() => outbox.depth('mqtt') === 0, 10_000, 'the cursor past every record');
      const off = logs.filter((l) => l.level === 50 && /closed the connection 2 times in a row at the Home Assistant discovery configs/.test(l.msg));
      // mosquitto 2.0 closes the connection at the denied discovery configs under both protocol versions.
      expect(off).toHaveLength(1);
      expect(off[0]!.msg).toMatch(/discovery pauses for 10 min.*allow this client to publish and subscribe under homeassistant\//);
      expect(sink.stats().skipped).toBe(0);
    });

    it(`MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}: discovery allowed and a sensor topic denied: the refusals are the sensor's, discovery is never paused`, async () => {
      const logs: Array<{ level: number; msg: string }> = [];
      const capture = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as { level: number; msg: string }) });
      const { outbox, sink, s } = await startSinkAndWatcher({ protocolVersion, homeAssistantDiscovery: true }, capture, ['rgha', 'ha-secret']);
      const cycles = 10;
      for (let c = 0; c < cycles; c++) outbox.append([...POINTS.map((p) => sample(p, c)), sample(DENIED_POINT, c)]);
      await s.waitFor((m) => POINTS.every((p) => sensorTimes(m, p).length === cycles), 25_000, 'every allowed reading');
      await until(() => outbox.depth('mqtt') === 0, 10_000, 'the cursor past every record');
      expect(sink.stats().skipped).toBe(cycles);
      expect(logs.filter((l) => /Home Assistant discovery configs/.test(l.msg))).toEqual([]);
      expect(s.messages.some((m) => m.topic === `${BASE}/status`)).toBe(true);
    });
  }
});
