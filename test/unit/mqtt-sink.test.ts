/**
 * The MQTT sink through its seams, on virtual time: a fake mqtt.js client (the `connect` dependency)
 * whose publishes wait for the test to acknowledge or refuse them, an in-memory outbox, VirtualClock.
 * Ack order, publish timeout, outbox generation change, reconnect cap, Receive Maximum, retained
 * newest-wins, stop() with publishes in flight, the stamped status, and the component lifecycle.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../agent/clock.js';
import { mqttSchema } from '../../agent/config/outputs-schema.js';
import type { OutputContext } from '../../agent/outputs/context.js';
import { heldIsOlder, MqttSink, type MqttSinkDeps } from '../../agent/outputs/mqtt.js';
import type { OutboxEntry } from '../../agent/outputs/outbox.js';
import { FakeBroker, settle, type FakeClient } from '../helpers/fake-mqtt.js';
import { MemoryOutbox } from '../helpers/memory-outbox.js';

const logger = pino({ level: process.env.RACKGUARD_TEST_LOG ?? 'silent' });
const BASE = 'rackguard/s1/g1';
const TS = Date.UTC(2026, 0, 1, 12);
const context: OutputContext = { site: 's1', gateway: 'g1', points: new Map(), zones: ['z1'] };

function sample(i: number): OutboxEntry {
  return { type: 'sample', sample: { pointId: 'r1.t', deviceId: 'r1', value: 20 + i, unit: '°C', quality: 'good', ts: TS + i * 1000, mono: i * 1000 } };
}

function zone(level: 'warning' | 'alarm' | 'critical', from: 'normal' | 'warning' | 'alarm'): OutboxEntry {
  return { type: 'event', event: { kind: 'zone_level', zone: 'z1', from, level, reason: `${from} to ${level}`, mono: 0, ts: TS, evidence: { sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 0, k: 2, etaCriticalS: null } } };
}

function setup(config: Record<string, unknown> = {}, deps: Partial<MqttSinkDeps> = {}) {
  const clock = new VirtualClock({ startWallMs: TS });
  const outbox = new MemoryOutbox();
  const broker = new FakeBroker();
  const sink = new MqttSink(mqttSchema.parse({ url: 'mqtt://127.0.0.1:1', publishTimeoutMs: 1000, reconnectInitialMs: 100, reconnectMaxMs: 800, maxInFlight: 10, ...config }), {
    outbox,
    context,
    logger,
    clock,
    connect: broker.connect,
    statusRefreshMs: 30_000,
    stopDrainMs: 2000,
    startAt: 'beginning',
    ...deps,
  });
  /** start(), the broker accepts, and our `online` status is acknowledged: records may flow. */
  const online = async (connack: Parameters<FakeClient['accept']>[0] = {}): Promise<FakeClient> => {
    if (broker.clients.length === 0) await sink.start();
    const client = broker.last;
    client.accept(connack);
    await settle();
    const status = client.outstanding.find((p) => p.topic === `${BASE}/status`);
    expect(status).toBeDefined();
    status!.ack();
    await settle();
    return client;
  };
  const records = (client: FakeClient) => client.outstanding.filter((p) => p.topic !== `${BASE}/status`);
  return { clock, outbox, broker, sink, online, records };
}

describe('MQTT sink seams (fake client, virtual time)', () => {
  it('ack order: the cursor moves only over the contiguous acknowledged prefix', async () => {
    const { broker, outbox, sink, online, records } = setup();
    outbox.append([sample(1), sample(2), sample(3)]);
    const client = await online();
    const [p1, p2, p3] = records(client);
    expect([p1, p2, p3].map((p) => JSON.parse(p!.payload).value)).toEqual([21, 22, 23]);
    p3!.ack();
    await settle();
    expect(outbox.cursorOf('mqtt')).toBe(0);
    p1!.ack();
    await settle();
    // A PUBACK counts once a later packet shows the connection outlived it (mosquitto acknowledges a
    // refused publish and then closes the connection).
    expect(outbox.cursorOf('mqtt')).toBe(0);
    p2!.ack();
    await settle();
    expect(outbox.cursorOf('mqtt')).toBe(3);
    expect(sink.stats()).toMatchObject({ published: 3, inFlight: 0 });
    broker.autoAck = true;
    await sink.stop();
  });

  it('publish timeout: no PUBACK within publishTimeoutMs drops the link; the record is resent after the reconnect', async () => {
    const { clock, outbox, broker, sink, online, records } = setup();
    outbox.append([sample(1)]);
    const first = await online();
    expect(records(first)).toHaveLength(1);
    clock.advance(999);
    await settle();
    expect(first.ended).toBe(false);
    clock.advance(1);
    await settle();
    expect(first.ended).toBe(true);
    expect(sink.stats().lastError).toMatch(/no acknowledgement within 1000 ms/);
    expect(outbox.cursorOf('mqtt')).toBe(0);
    clock.advance(100); // the first reconnect delay is at most reconnectInitialMs
    expect(broker.clients).toHaveLength(2);
    const second = await online();
    const again = records(second);
    expect(again.map((p) => JSON.parse(p.payload).value)).toEqual([21]);
    again[0]!.ack();
    await settle();
    expect(outbox.cursorOf('mqtt')).toBe(1);
    broker.autoAck = true;
    await sink.stop();
  });

  it('a PUBACK followed by the connection closing (mosquitto refusing under MQTT 3.1.1) moves no cursor; alone three times, it is given up with an event naming the topic', async () => {
    const { clock, outbox, broker, sink, online, records } = setup();
    outbox.append([sample(1)]);
    outbox.append([sample(2)]);
    let client = await online();
    client.answerPings = false;
    const [p1, p2] = records(client);
    p1!.ack(); // accepted
    await settle();
    p2!.ack(); // its packet confirms the first; "accepted", then the broker closes: nothing confirms it
    await settle();
    expect(outbox.cursorOf('mqtt')).toBe(1);
    expect(client.pings).toBe(1);
    client.drop();
    await settle();
    for (let strike = 1; strike <= 3; strike++) {
      clock.advance(800);
      client = await online();
      client.answerPings = false;
      const again = records(client);
      expect(again.map((p) => JSON.parse(p.payload).value)).toEqual([22]);
      again[0]!.ack();
      await settle();
      expect(outbox.cursorOf('mqtt')).toBe(1); // acknowledged, but not confirmed yet
      client.drop();
      await settle();
    }
    expect(outbox.cursorOf('mqtt')).toBe(2);
    const notice = outbox.records.map((r) => r.entry).flatMap((e) => (e.type === 'event' && e.event.kind === 'output' ? [e.event] : []))[0];
    expect(notice?.detail.topic).toBe(`${BASE}/sensors/r1.t`);
    expect(notice?.message).toMatch(/acknowledged this publish, sent alone, and then closed the connection, 3 times/);
    expect(sink.stats().skipped).toBe(1);
    broker.autoAck = true;
    clock.advance(800);
    await sink.stop();
  });

  it('outbox generation change: a stale PUBACK for the old file does not move the new file’s cursor', async () => {
    const { broker, outbox, sink, online, records } = setup();
    outbox.append([sample(1), sample(2)]);
    const client = await online();
    const stale = records(client);
    expect(stale).toHaveLength(2);
    // The outbox found its file damaged and started a fresh one (seq 1 is its recovery notice).
    outbox.replaceFile();
    for (const p of stale) p.ack();
    await settle();
    expect(outbox.acks.filter((a) => a.generation === 1)).toEqual([]);
    expect(outbox.cursorOf('mqtt')).toBe(0);
    // Delivery restarts on the new file: the notice, then new records.
    const notice = records(client).find((p) => p.topic === `${BASE}/events`);
    expect(notice?.payload).toContain('outbox_corrupt');
    outbox.append([sample(3)]);
    await settle();
    for (const p of records(client)) p.ack();
    await settle();
    for (const p of records(client)) p.ack();
    await settle();
    expect(outbox.cursorOf('mqtt')).toBe(2);
    broker.autoAck = true;
    await sink.stop();
  });

  it('reconnect: the delay grows from reconnectInitialMs and never exceeds reconnectMaxMs, jitter included', async () => {
    for (const r of [0, 0.5, 0.999]) {
      const { clock, broker, sink } = setup({}, { random: () => r });
      await sink.start();
      const delays: number[] = [];
      for (let attempt = 0; attempt < 8; attempt++) {
        broker.last.drop(); // the broker refuses the connection
        const before = broker.clients.length;
        let waited = 0;
        while (broker.clients.length === before) {
          clock.advance(1);
          waited++;
          expect(waited).toBeLessThanOrEqual(800);
        }
        delays.push(waited);
      }
      expect(Math.max(...delays)).toBeLessThanOrEqual(800);
      expect(delays[0]).toBeGreaterThanOrEqual(80);
      expect(delays.at(-1)).toBeGreaterThanOrEqual(640); // reached the cap (minus at most 20 % jitter)
      await sink.stop();
    }
  });

  it('Receive Maximum from CONNACK: never more QoS 1 publishes in flight than the broker allows', async () => {
    const { broker, outbox, sink, online } = setup();
    for (let i = 1; i <= 10; i++) outbox.append([sample(i)]);
    const client = await online({ receiveMaximum: 2 });
    let rounds = 0;
    while (outbox.cursorOf('mqtt') < 10) {
      expect(client.outstanding.length).toBeLessThanOrEqual(2);
      expect(client.outstanding.length).toBeGreaterThan(0);
      for (const p of client.outstanding) p.ack();
      await settle();
      expect(++rounds).toBeLessThan(20);
    }
    expect(rounds).toBeGreaterThanOrEqual(5);
    expect(sink.stats().receiveMaximum).toBe(2);
    broker.autoAck = true;
    await sink.stop();
  });

  it('a restored state refused on a live connection (MQTT 5) ends the restore: a later blip does not forget the other restored states', async () => {
    const { clock, broker, outbox, sink, online, records } = setup({ protocolVersion: 5 });
    outbox.append([zone('critical', 'alarm')]);
    outbox.append([{ type: 'event', event: { kind: 'device_state', deviceId: 'd1', state: 'online', previous: 'unknown', ts: TS } }]);
    let client = await online();
    for (let i = 0; i < 5; i++) {
      for (const p of records(client)) p.ack();
      await settle();
    }
    expect(outbox.cursorOf('mqtt')).toBe(2);
    const retainedTopics = (c: FakeClient): string[] => c.publishes.filter((p) => p.retain && p.topic !== `${BASE}/status`).map((p) => p.topic).sort();
    const confirmed = retainedTopics(client);
    expect(confirmed).toContain(`${BASE}/zones/z1/state`);
    // A blip: the new connection restores every confirmed state; the ACL now refuses one of them.
    client.drop();
    await settle();
    clock.advance(800);
    client = await online();
    expect(retainedTopics(client)).toEqual(confirmed);
    for (const p of records(client)) {
      if (p.topic === `${BASE}/devices/d1/state`) p.refuse(0x87);
      else p.ack();
    }
    await settle();
    // Another blip, later: the states that were restored are still ours to restore (not the refused one).
    client.drop();
    await settle();
    clock.advance(800);
    client = await online();
    expect(retainedTopics(client)).toEqual(confirmed.filter((t) => t !== `${BASE}/devices/d1/state`));
    broker.autoAck = true;
    for (const p of records(client)) p.ack();
    await settle();
    await sink.stop();
  });

  it('retained newest-wins: a refused zone state retried after a newer state was acknowledged is not resent', async () => {
    const { broker, outbox, sink, online, records } = setup({ protocolVersion: 5 });
    outbox.append([zone('alarm', 'warning'), zone('critical', 'alarm')]);
    const client = await online();
    const states = records(client).filter((p) => p.topic === `${BASE}/zones/z1/state`);
    expect(states.map((p) => JSON.parse(p.payload).level)).toEqual(['alarm', 'critical']);
    states[1]!.ack(); // the newer state is retained
    await settle();
    states[0]!.refuse(0x97); // the older one was refused (quota): it will be retried
    await settle();
    for (let i = 0; i < 5; i++) {
      for (const p of records(client)) p.ack();
      await settle();
    }
    expect(outbox.cursorOf('mqtt')).toBe(2);
    const sentStates = client.publishes.filter((p) => p.topic === `${BASE}/zones/z1/state`).map((p) => JSON.parse(p.payload).level);
    expect(sentStates).toEqual(['alarm', 'critical']);
    expect(JSON.parse(broker.retained.get(`${BASE}/zones/z1/state`)!.payload).level).toBe('critical');
    // The event of the older transition is still delivered.
    expect(client.publishes.filter((p) => p.topic === `${BASE}/events` && p.settled).map((p) => JSON.parse(p.payload).level)).toContain('alarm');
    broker.autoAck = true;
    await sink.stop();
  });

  it('stop() waits (bounded) for the in-flight window and acks only what was acknowledged', async () => {
    const { clock, outbox, sink, online, records } = setup();
    outbox.append([sample(1), sample(2)]);
    const client = await online();
    const [p1] = records(client);
    let stopped = false;
    const stopping = sink.stop().then(() => {
      stopped = true;
    });
    await settle();
    expect(client.publishes.filter((p) => p.topic === `${BASE}/status`)).toHaveLength(1); // no offline yet
    p1!.ack();
    await settle();
    expect(outbox.cursorOf('mqtt')).toBe(0); // awaits a later packet (the second's PUBACK never comes)
    clock.advance(2000); // the second never gets its PUBACK: the drain deadline passes
    await settle();
    const offline = client.outstanding.find((p) => p.topic === `${BASE}/status`);
    expect(JSON.parse(offline!.payload)).toMatchObject({ state: 'offline', reason: 'stopped', tsMs: TS + 2000 });
    offline!.ack();
    await stopping;
    expect(stopped).toBe(true);
    expect(client.ended).toBe(true);
    expect(outbox.cursorOf('mqtt')).toBe(1);
    expect(outbox.acks.map((a) => a.seq)).toEqual([1]);
  });

  it('status: retained JSON stamped with the wall time, republished every statusRefreshMs', async () => {
    const { clock, sink, online } = setup();
    const client = await online();
    const status = () => client.publishes.filter((p) => p.topic === `${BASE}/status`);
    expect(status()[0]).toMatchObject({ retain: true, qos: 1 });
    expect(JSON.parse(status()[0]!.payload)).toEqual({ state: 'online', ts: new Date(TS).toISOString(), tsMs: TS, refreshS: 30 });
    clock.advance(30_000);
    await settle();
    expect(status()).toHaveLength(2);
    expect(JSON.parse(status()[1]!.payload).tsMs).toBe(TS + 30_000);
    status()[1]!.ack();
    await settle();
    clock.advance(30_000);
    await settle();
    expect(status()).toHaveLength(3);
    // The last will is JSON too; the broker sends it, so it carries no time of ours.
    expect(JSON.parse(client.opts.will!.payload.toString())).toEqual({ state: 'offline', reason: 'connection lost' });
    const stopping = sink.stop();
    await settle();
    client.outstanding.forEach((p) => p.ack());
    await stopping;
  });

  it('lifecycle: stop before start and twice is safe; start after stop connects again without a second listener', async () => {
    const { outbox, broker, sink, online, records } = setup();
    expect(sink.name).toBe('sink:mqtt');
    await sink.stop();
    await sink.stop();
    await online();
    expect(outbox.listenerCount('appended')).toBe(1);
    broker.autoAck = true; // the offline status is acknowledged at once
    await sink.stop();
    await sink.stop();
    expect(outbox.listenerCount('appended')).toBe(0);
    broker.autoAck = false;
    await sink.start();
    await sink.start();
    expect(broker.clients).toHaveLength(2);
    expect(outbox.listenerCount('appended')).toBe(1);
    const client = await online();
    outbox.append([sample(1)]);
    await settle();
    records(client)[0]!.ack();
    await settle();
    expect(outbox.cursorOf('mqtt')).toBe(1);
    const stopping = sink.stop();
    await settle();
    client.outstanding.forEach((p) => p.ack());
    await stopping;
  });
});

describe('restoring retained states on a reconnect: which ones', () => {
  const state = (level: string, tsMs: number): string => JSON.stringify({ level, tsMs });
  it('restores what the broker lost or holds older; keeps what it holds newer (acknowledged, not yet confirmed when the link died)', () => {
    expect(heldIsOlder(undefined, state('critical', 2000))).toBe(true);
    expect(heldIsOlder(state('critical', 2000), state('critical', 2000))).toBe(false);
    expect(heldIsOlder(state('alarm', 1000), state('critical', 2000))).toBe(true);
    expect(heldIsOlder(state('normal', 3000), state('critical', 2000))).toBe(false);
    // No time to compare (availability): a different payload is restored.
    expect(heldIsOlder('offline', 'online')).toBe(true);
    expect(heldIsOlder('online', 'online')).toBe(false);
  });
});
