/**
 * The outputs layer against a real mosquitto and a real influxd, each started by the test on free
 * loopback ports in temp dirs: round trip, outages and restarts, SIGKILL of the writer, the byte cap,
 * the last will, and refusals (a point InfluxDB rejects, an oversized payload, an ACL-denied topic).
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { influxSchema, mqttSchema } from '../../agent/config/outputs-schema.js';
import type { OutputContext } from '../../agent/outputs/context.js';
import { InfluxSink } from '../../agent/outputs/influx.js';
import { MqttSink } from '../../agent/outputs/mqtt.js';
import type { OutboxEntry } from '../../agent/outputs/outbox.js';
import { startInfluxd, type Influxd } from '../helpers/influxd.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { spawnAndWait } from '../helpers/proc.js';
import { startSubscriber, type Received, type Subscriber } from '../helpers/mqtt.js';
import { BASE_TS, Cleanups, cycleEntries, cycleTimes as expectedTimes, influxTimes, openOutbox, outputContext, testLogger as logger } from '../helpers/outputs-rig.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const WRITER = fileURLToPath(new URL('../fixtures/outbox-writer.ts', import.meta.url));
const POINTS = ['rack01.temperature', 'rack02.temperature', 'rack03.temperature', 'chiller1.supply'];
const BASE = 'rackguard/s1/g1';

const context = (points = POINTS, chillerPoint?: string): OutputContext => outputContext(points, { chillerPoint });
const cycle = (c: number, points = POINTS): OutboxEntry[] => cycleEntries(c, points);

function alarmEvent(c: number): OutboxEntry {
  return { type: 'event', event: { kind: 'zone_level', zone: 'z1', from: 'warning', level: 'alarm', reason: `cycle ${c}`, mono: c * 1000, ts: BASE_TS + c * 1000 + 1, evidence: { sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 0, k: 2, etaCriticalS: 300 } } };
}

/** A persistent-session QoS 1 subscriber (clean: false) to the whole tree, as a dashboard or a bridge would be. */
const subscriber = (url: string, clientId: string, opts: { username?: string; password?: string } = {}): Promise<Subscriber> => startSubscriber(url, { clientId, topic: `${BASE}/#`, ...opts });

/** A status message with this state (the payload is JSON { state, ts, tsMs, … }). */
function isStatus(m: Received, state: 'online' | 'offline'): boolean {
  return m.topic === `${BASE}/status` && (JSON.parse(m.payload) as { state: string }).state === state;
}

/** Per point, the distinct timestamps in first-arrival order. */
function arrivals(messages: Received[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const seen = new Set<string>();
  for (const m of messages) {
    if (!m.topic.startsWith(`${BASE}/sensors/`)) continue;
    const point = m.topic.slice(`${BASE}/sensors/`.length);
    const body = JSON.parse(m.payload) as { tsMs: number };
    const key = `${point}@${body.tsMs}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.set(point, [...(out.get(point) ?? []), body.tsMs]);
  }
  return out;
}

describe('outputs against real mosquitto and influxd', () => {
  let broker: Mosquitto;
  let influx: Influxd;
  let dir: TempDir;
  let n = 0;
  const cleanups = new Cleanups();

  beforeAll(async () => {
    [broker, influx, dir] = await Promise.all([startMosquitto(), startInfluxd(), tempDir('rackguard-outputs-')]);
  });
  afterEach(() => cleanups.run());
  // An outage test that fails between stopping a server and restarting it must not leave it down for
  // its retry and the tests after it (afterEach runs after every attempt; beforeAll does not run again).
  afterEach(async () => {
    for (const server of [broker, influx]) {
      const proc = server?.process.proc;
      if (proc && (proc.exitCode !== null || proc.signalCode !== null)) await server.restart();
    }
  });
  afterAll(async () => {
    await broker?.cleanup();
    await influx?.cleanup();
    await dir?.cleanup();
  });

  function setup(over: { maxBytes?: number; mqtt?: Record<string, unknown> | false; influx?: Record<string, unknown> | false; ctx?: OutputContext; url?: string } = {}) {
    const id = ++n;
    const db = `rg${id}`;
    const outbox = openOutbox(dir.path, `outbox-${id}.db`, over.maxBytes ? { maxBytes: over.maxBytes } : {});
    const ctx = over.ctx ?? context();
    const mqttSink =
      over.mqtt === false ? undefined : new MqttSink(mqttSchema.parse({ url: over.url ?? broker.url, baseTopic: 'rackguard/{site}/{gateway}', clientId: `rg-pub-${id}`, reconnectInitialMs: 100, reconnectMaxMs: 400, publishTimeoutMs: 2000, ...(over.mqtt ?? {}) }), { outbox, context: ctx, logger });
    const influxSink = over.influx === false ? undefined : new InfluxSink(influxSchema.parse({ url: influx.url, database: db, flushIntervalMs: 100, retryInitialMs: 100, retryMaxMs: 400, requestTimeoutMs: 2000, ...(over.influx ?? {}) }), { outbox, context: ctx, logger });
    cleanups.push(async () => {
      await mqttSink?.stop();
      await influxSink?.stop();
      outbox.close();
    });
    return { outbox, mqttSink, influxSink, db, id };
  }

  async function sub(id: string | number, opts: { username?: string; password?: string; url?: string } = {}) {
    const s = await subscriber(opts.url ?? broker.url, `rg-sub-${id}`, opts);
    cleanups.push(() => {
      s.client.end(true);
    });
    return s;
  }

  it('round trip: MQTT topics and InfluxDB points carry the appended values and original timestamps', async () => {
    const { outbox, mqttSink, influxSink, db, id } = setup({ ctx: context(POINTS, 'chiller1.supply') });
    const s = await sub(id);
    await mqttSink!.start();
    await influxSink!.start();
    for (let c = 0; c < 10; c++) outbox.append(c === 5 ? [...cycle(c), alarmEvent(c), { type: 'event', event: { kind: 'device_state', deviceId: 'rack02', state: 'offline', previous: 'online', ts: BASE_TS + 5001, reason: 'timeout' } }] : cycle(c));
    await s.waitFor((m) => arrivals(m).get('rack03.temperature')?.length === 10 && m.some((x) => x.topic.endsWith('/events')) && m.some((x) => isStatus(x, 'online')), 15_000, 'all messages');
    const sensor = s.messages.find((m) => m.topic === `${BASE}/sensors/rack02.temperature`)!;
    expect(JSON.parse(sensor.payload)).toEqual({ value: 0.01, unit: '°C', quality: 'good', ts: new Date(BASE_TS).toISOString(), tsMs: BASE_TS });
    for (const p of POINTS) expect(arrivals(s.messages).get(p)).toEqual(expectedTimes(0, 9));
    const zone = s.messages.find((m) => m.topic === `${BASE}/zones/z1/state`)!;
    expect(zone.retain).toBe(false); // live delivery of a retained publish has retain=false for existing subscribers
    expect(JSON.parse(zone.payload)).toMatchObject({ level: 'alarm', from: 'warning', evidence: { k: 2, etaCriticalS: 300 } });
    await s.waitFor((m) => m.some((x) => x.topic === `${BASE}/devices/rack02/availability` && x.payload === 'offline'), 5000, 'availability');

    await until(async () => influxSink!.stats().depth === 0 && (await influxTimes(influx, db, 'environment')).get('rack03.temperature')?.length === 10, 15_000, 'influx drained');
    const env = await influx.query('SELECT value, quality, zone, device FROM environment WHERE point = \'rack02.temperature\'', db);
    expect(env.results[0]!.series![0]!.values![0]).toEqual([BASE_TS, 0.01, 'good', 'z1', 'rack02']);
    expect((await influxTimes(influx, db, 'chiller')).get('chiller1.supply')).toEqual(expectedTimes(0, 9));
    const zl = await influx.query('SELECT level, level_rank, eta_critical_s FROM zone_level', db);
    expect(zl.results[0]!.series![0]!.values).toEqual([[BASE_TS + 5001, 'alarm', 2, 300]]);
    const ev = await influx.query('SELECT count(message) FROM events', db);
    expect(ev.results[0]!.series![0]!.values![0]![1]).toBe(2);
  });

  it('MQTT outage: after the broker returns, a persistent QoS 1 subscriber gets every record, in order per point', async () => {
    const { outbox, mqttSink, id } = setup({ influx: false });
    const s = await sub(id);
    await mqttSink!.start();
    for (let c = 0; c < 20; c++) outbox.append(cycle(c));
    await s.waitFor((m) => arrivals(m).get('rack01.temperature')?.length === 20, 10_000, 'before outage');
    await broker.stop();
    // A few seconds of outage, one cycle every 50 ms.
    for (let c = 20; c < 80; c++) {
      outbox.append(cycle(c));
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(mqttSink!.stats().connected).toBe(false);
    expect(outbox.depth('mqtt')).toBeGreaterThanOrEqual(60 * POINTS.length);
    await broker.restart();
    for (let c = 80; c < 100; c++) outbox.append(cycle(c));
    await s.waitFor((m) => POINTS.every((p) => arrivals(m).get(p)?.length === 100), 30_000, 'every record after the outage');
    for (const p of POINTS) expect(arrivals(s.messages).get(p)).toEqual(expectedTimes(0, 99));
    await until(() => outbox.depth('mqtt') === 0, 5000, 'cursor caught up');
  });

  it('InfluxDB outage: after influxd returns it holds every sample exactly once', async () => {
    const { outbox, influxSink, db } = setup({ mqtt: false });
    await influxSink!.start();
    for (let c = 0; c < 20; c++) outbox.append(cycle(c));
    await until(() => influxSink!.stats().depth === 0, 10_000, 'before outage');
    await influx.stop();
    for (let c = 20; c < 80; c++) {
      outbox.append(cycle(c));
      await new Promise((r) => setTimeout(r, 40));
    }
    // Between attempts it sits in backoff (a refused connect takes no time, but a loaded machine may catch it mid-attempt).
    await until(() => influxSink!.stats().state === 'backoff', 5000, 'the sink in backoff while influxd is down');
    await influx.restart();
    for (let c = 80; c < 100; c++) outbox.append(cycle(c));
    await until(() => influxSink!.stats().depth === 0, 30_000, 'influx drained after outage');
    const times = await influxTimes(influx, db, 'environment');
    for (const p of POINTS) expect(times.get(p)).toEqual(expectedTimes(0, 99));
    const count = await influx.query('SELECT count(value) FROM environment', db);
    expect(count.results[0]!.series![0]!.values![0]![1]).toBe(100 * POINTS.length);
  });

  it('one sink down never delays the other', async () => {
    const { outbox, mqttSink, influxSink, db, id } = setup({ url: 'mqtt://127.0.0.1:1' });
    void id;
    await mqttSink!.start();
    await influxSink!.start();
    for (let c = 0; c < 10; c++) outbox.append(cycle(c));
    await until(() => influxSink!.stats().depth === 0, 10_000, 'influx drained while mqtt is down');
    expect((await influxTimes(influx, db, 'environment')).get('rack01.temperature')).toEqual(expectedTimes(0, 9));
    expect(mqttSink!.stats().connected).toBe(false);
    expect(outbox.depth('mqtt')).toBe(10 * POINTS.length);
  });

  it('buffer cap during an outage: oldest telemetry dropped with a gap event, every alarm event delivered', async () => {
    const { outbox, mqttSink, id } = setup({ influx: false, maxBytes: 64 * 1024 });
    const s = await sub(id);
    await mqttSink!.start();
    await s.waitFor((m) => m.some((x) => x.topic === `${BASE}/status`), 5000, 'online');
    await broker.stop();
    const alarms: number[] = [];
    for (let c = 0; c < 600; c++) {
      const e = cycle(c);
      if (c % 25 === 0) {
        e.push(alarmEvent(c));
        alarms.push(BASE_TS + c * 1000 + 1);
      }
      outbox.append(e);
    }
    expect(outbox.stats().droppedTelemetry).toBeGreaterThan(0);
    await broker.restart();
    const isAlarm = (x: Received): boolean => x.topic === `${BASE}/events` && (JSON.parse(x.payload) as { kind: string }).kind === 'zone_level';
    // The gap event of a group commit comes after the newest samples it did not drop: wait for it too.
    await s.waitFor((m) => m.filter(isAlarm).length >= alarms.length && arrivals(m).get('rack01.temperature')?.at(-1) === BASE_TS + 599_000 && m.some((x) => x.payload.includes('"outbox_gap"')), 30_000, 'alarms, newest telemetry and the gap event').catch((e: unknown) => {
      console.log(s.messages.filter(isAlarm).length, alarms.length, arrivals(s.messages).get('rack01.temperature'), BASE_TS + 599_000, outbox.stats(), s.messages.map((x) => x.topic).join(' '));
      throw e;
    });
    const got = [...new Set(s.messages.filter(isAlarm).map((x) => (JSON.parse(x.payload) as { ts: number }).ts))];
    expect(got).toEqual(alarms);
    const gaps = s.messages.filter((x) => x.topic === `${BASE}/events` && x.payload.includes('"outbox_gap"')).map((x) => JSON.parse(x.payload) as { detail: { firstTs: number; lastTs: number; droppedCount: number } });
    expect(gaps.length).toBeGreaterThan(0);
    expect(gaps[0]!.detail.firstTs).toBe(BASE_TS);
    // Telemetry that arrived is the newest, contiguous, and starts after the last gap.
    const r1 = arrivals(s.messages).get('rack01.temperature')!;
    const lastGapEnd = Math.max(...gaps.map((g) => g.detail.lastTs));
    expect(r1.filter((t) => t > lastGapEnd)).toEqual(expectedTimes((lastGapEnd - BASE_TS) / 1000 + 1, 599));
  });

  it('SIGKILL of the writer mid-run: nothing committed is lost, resends are idempotent', async () => {
    const id = ++n;
    const db = `rgkill${id}`;
    const outboxPath = join(dir.path, `kill-${id}.db`);
    const s = await sub(`kill-${id}`);
    const opts = { outboxPath, points: POINTS, baseTs: BASE_TS, mqtt: { url: broker.url, clientId: `rg-kill-${id}`, reconnectInitialMs: 100, reconnectMaxMs: 400 }, influx: { url: influx.url, database: db, flushIntervalMs: 100, retryInitialMs: 100, retryMaxMs: 400 } };
    const first = await spawnAndWait(process.execPath, ['--import', 'tsx', WRITER, JSON.stringify({ ...opts, fromCycle: 0, toCycle: 10_000, intervalMs: 5 })], { readyLine: /^COMMITTED 60$/, timeoutMs: 30_000 });
    await first.stop('SIGKILL');
    const committed = Math.max(...first.lines.filter((l) => l.startsWith('COMMITTED ')).map((l) => Number(l.split(' ')[1])));
    expect(committed).toBeGreaterThanOrEqual(60);
    const last = committed + 30;
    const second = await spawnAndWait(process.execPath, ['--import', 'tsx', WRITER, JSON.stringify({ ...opts, fromCycle: committed + 1, toCycle: last, intervalMs: 0, drain: true })], { readyLine: /^DRAINED$/, timeoutMs: 60_000 });
    await second.exited;
    const times = await influxTimes(influx, db, 'environment');
    for (const p of POINTS) expect(times.get(p)).toEqual(expectedTimes(0, last));
    const count = await influx.query('SELECT count(value) FROM environment', db);
    expect(count.results[0]!.series![0]!.values![0]![1]).toBe((last + 1) * POINTS.length);
    await s.waitFor((m) => POINTS.every((p) => arrivals(m).get(p)?.length === last + 1), 20_000, 'every committed record over MQTT');
    for (const p of POINTS) expect(arrivals(s.messages).get(p)).toEqual(expectedTimes(0, last));
  });

  it('last will: when the publishing process is killed, status becomes offline (retained)', async () => {
    const id = ++n;
    const s = await sub(`will-${id}`);
    const proc = await spawnAndWait(process.execPath, ['--import', 'tsx', WRITER, JSON.stringify({ outboxPath: join(dir.path, `will-${id}.db`), points: POINTS, baseTs: BASE_TS, mqtt: { url: broker.url, clientId: `rg-will-${id}` }, fromCycle: 0, toCycle: 0, intervalMs: 0 })], { readyLine: /^COMMITTED 0$/, timeoutMs: 30_000 });
    cleanups.push(async () => {
      await proc.stop('SIGKILL');
    });
    await s.waitFor((m) => m.some((x) => isStatus(x, 'online')), 10_000, 'online');
    const mark = s.messages.length;
    await proc.stop('SIGKILL');
    await s.waitFor((m) => m.slice(mark).some((x) => isStatus(x, 'offline')), 10_000, 'offline will');
    // Retained: a newcomer sees offline too.
    const late = await subscriber(broker.url, `rg-late-${id}`);
    cleanups.push(() => {
      late.client.end(true);
    });
    await late.waitFor((m) => m.some((x) => isStatus(x, 'offline') && x.retain), 5000, 'retained offline');
  });

  it('zone_level: three transitions of one evaluation (same millisecond) are three points; a resend adds none', async () => {
    const { outbox, influxSink, db } = setup({ mqtt: false });
    await influxSink!.start();
    const ts = BASE_TS + 7000;
    const evidence = { sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 2, k: 2, etaCriticalS: 0 };
    const steps = [
      ['normal', 'warning'],
      ['warning', 'alarm'],
      ['alarm', 'critical'],
    ] as const;
    outbox.append([...cycle(7), ...steps.map(([from, level]): OutboxEntry => ({ type: 'event', event: { kind: 'zone_level', zone: 'z1', from, level, reason: `${from} to ${level}`, mono: 7000, ts, evidence } }))]);
    await until(() => influxSink!.stats().depth === 0, 15_000, 'influx drained');
    const levels = async () => (await influx.query('SELECT level, "from", level_rank FROM zone_level', db)).results[0]!.series![0]!.values!.map((v) => v.slice(1));
    expect(await levels()).toEqual([
      ['warning', 'normal', 1],
      ['alarm', 'warning', 2],
      ['critical', 'alarm', 3],
    ]);
    // What a Grafana panel asks: the level the zone ended at in that millisecond.
    const last = await influx.query('SELECT last(level_rank) FROM zone_level', db);
    expect(last.results[0]!.series![0]!.values![0]![1]).toBe(3);
    // A second sink on the same records (as a resend after a crash would) lands on the same points.
    const again = new InfluxSink(influxSchema.parse({ url: influx.url, database: db, flushIntervalMs: 100 }), { outbox, context: context(), logger, sinkName: 'influx-again', startAt: 'beginning' });
    cleanups.push(() => again.stop());
    await again.start();
    await until(() => again.stats().depth === 0 && again.stats().pointsWritten > 0, 15_000, 'resend drained');
    expect(await levels()).toHaveLength(3);
  });

  it('InfluxDB answers 404 (database dropped under the sink): the sink creates it again and writes on', async () => {
    const { outbox, influxSink, db } = setup({ mqtt: false });
    await influxSink!.start();
    for (let c = 0; c < 5; c++) outbox.append(cycle(c));
    await until(() => influxSink!.stats().depth === 0, 15_000, 'first batch');
    await influx.query(`DROP DATABASE ${db}`);
    for (let c = 5; c < 10; c++) outbox.append(cycle(c));
    await until(() => influxSink!.stats().depth === 0, 15_000, 'drained after the 404');
    expect(influxSink!.stats().lastError).toBeUndefined();
    // The records written before the drop went with the database; every one after it is there.
    expect((await influxTimes(influx, db, 'environment')).get('rack01.temperature')).toEqual(expectedTimes(5, 9));
  });

  it('MQTT broker SIGKILLed and restarted on the same port: the backlog arrives after it returns', async () => {
    const { outbox, mqttSink, id } = setup({ influx: false, mqtt: { reconnectInitialMs: 100, reconnectMaxMs: 1000 } });
    const subscribedAt = Date.now();
    const s = await sub(`kill9-${id}`);
    await mqttSink!.start();
    for (let c = 0; c < 10; c++) outbox.append(cycle(c));
    await s.waitFor((m) => arrivals(m).get('rack01.temperature')?.length === 10, 10_000, 'before the kill');
    // SIGKILL keeps only what mosquitto saved (autosave_interval 1): wait until the subscriber's session is on disk.
    const saved = join(broker.dir, 'data', 'mosquitto.db');
    await until(() => existsSync(saved) && statSync(saved).mtimeMs > subscribedAt + 1000, 10_000, 'mosquitto saved the sessions');
    await broker.process.stop('SIGKILL');
    for (let c = 10; c < 40; c++) outbox.append(cycle(c));
    await until(() => !mqttSink!.stats().connected, 5000, 'the sink notices');
    expect(outbox.depth('mqtt')).toBe(30 * POINTS.length);
    await broker.restart();
    await s.waitFor((m) => POINTS.every((p) => arrivals(m).get(p)?.length === 40), 30_000, 'the backlog at the subscriber');
    for (const p of POINTS) expect(arrivals(s.messages).get(p)).toEqual(expectedTimes(0, 39));
    await until(() => outbox.depth('mqtt') === 0, 5000, 'cursor caught up');
    // The status was republished on return, stamped after the kill.
    const stamps = s.messages.filter((x) => isStatus(x, 'online')).map((x) => (JSON.parse(x.payload) as { tsMs: number }).tsMs);
    expect(Math.max(...stamps)).toBeGreaterThan(subscribedAt + 1000);
    expect(mqttSink!.stats().reconnects).toBeGreaterThanOrEqual(1);
  });

  it('a point InfluxDB refuses (field type conflict) is quarantined with an event; the rest is written', async () => {
    const { outbox, influxSink, db } = setup({ mqtt: false, ctx: context(POINTS, 'chiller1.supply') });
    await influx.query(`CREATE DATABASE ${db}`);
    // `value` is a string in `chiller` from now on: every float value for it conflicts (HTTP 400).
    const w = await influx.writeLines(db, `chiller,site=s1,gateway=g1,point=other value="text" ${BASE_TS - 1000}`);
    expect(w.status).toBe(204);
    await influxSink!.start();
    for (let c = 0; c < 10; c++) outbox.append(cycle(c));
    await until(() => influxSink!.stats().depth === 0, 20_000, 'drained despite the bad point');
    const times = await influxTimes(influx, db, 'environment');
    for (const p of POINTS.filter((x) => x.startsWith('rack'))) expect(times.get(p)).toEqual(expectedTimes(0, 9));
    expect(influxSink!.stats().pointsQuarantined).toBe(10);
    const ev = await influx.query(`SELECT message FROM events WHERE code = 'influx_point_quarantined'`, db);
    const msgs = (ev.results[0]!.series?.[0]?.values ?? []).map((v) => v[1] as string);
    expect(msgs.length).toBe(1); // one report per point per interval, the rest counted
    expect(msgs[0]).toMatch(/chiller point chiller1\.supply.*field type conflict/);
  });

  describe('MQTT 5 refusals', () => {
    let strict: Mosquitto;
    beforeAll(async () => {
      strict = await startMosquitto({
        users: { rg: 'pub-secret', watcher: 'sub-secret' },
        acl: ['user rg', `topic write ${BASE}/sensors/#`, `topic write ${BASE}/events`, `topic write ${BASE}/status`, `topic write ${BASE}/devices/#`, 'user watcher', 'topic read #'].join('\n'),
        messageSizeLimit: 4096,
      });
    });
    afterAll(async () => {
      await strict?.cleanup();
    });

    it('an oversized payload and an ACL-denied topic each produce an event naming the topic, and block nothing', async () => {
      const { outbox, mqttSink, id } = setup({ influx: false, url: strict.url, mqtt: { protocolVersion: 5, usernameFile: undefined } });
      void id;
      process.env.RACKGUARD_MQTT_USERNAME = 'rg';
      process.env.RACKGUARD_MQTT_PASSWORD = 'pub-secret';
      cleanups.push(() => {
        delete process.env.RACKGUARD_MQTT_USERNAME;
        delete process.env.RACKGUARD_MQTT_PASSWORD;
      });
      const s = await sub(`strict-${n}`, { url: strict.url, username: 'watcher', password: 'sub-secret' });
      await mqttSink!.start();
      const big: OutboxEntry = { type: 'event', event: { kind: 'action', action: 'exec', status: 'failed', ts: BASE_TS + 2500, message: 'x'.repeat(10_000) } };
      for (let c = 0; c < 10; c++) outbox.append(c === 2 ? [...cycle(c), big] : c === 4 ? [...cycle(c), alarmEvent(c)] : cycle(c));
      const rejected = (m: Received[]) => m.filter((x) => x.topic === `${BASE}/events` && x.payload.includes('mqtt_publish_rejected')).map((x) => JSON.parse(x.payload) as { message: string; detail: { topic: string; reasonCode?: number } });
      await s.waitFor((m) => POINTS.every((p) => arrivals(m).get(p)?.length === 10) && rejected(m).length >= 2, 20_000, 'telemetry after the refusals and two rejection events');
      const r = rejected(s.messages);
      const size = r.find((x) => x.detail.topic === `${BASE}/events`)!;
      expect(size.message).toMatch(/MQTT publish to rackguard\/s1\/g1\/events skipped \(action event, 10\d\d\d bytes\)/);
      const acl = r.find((x) => x.detail.topic === `${BASE}/zones/z1/state`)!;
      expect(acl.detail.reasonCode).toBe(0x87);
      expect(acl.message).toMatch(/not authorized/);
      for (const p of POINTS) expect(arrivals(s.messages).get(p)).toEqual(expectedTimes(0, 9));
      await until(() => outbox.depth('mqtt') === 0, 5000, 'cursor past the refused records');
      expect(mqttSink!.stats().skipped).toBe(2);
    });
  });
});
