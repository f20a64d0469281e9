/**
 * The InfluxDB sink against a real influxd that misbehaves: frozen with SIGSTOP (the kernel still
 * accepts the TCP connection, nothing ever answers), its database dropped while running, and a point
 * refused for a field type conflict inside a batch (a partial write, HTTP 400). The MQTT sink on the
 * same outbox goes on meanwhile, against a real mosquitto.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { influxSchema, mqttSchema } from '../../agent/config/outputs-schema.js';
import type { OutputContext } from '../../agent/outputs/context.js';
import { InfluxSink } from '../../agent/outputs/influx.js';
import { MqttSink } from '../../agent/outputs/mqtt.js';
import type { OutboxEntry } from '../../agent/outputs/outbox.js';
import { startInfluxd, type Influxd } from '../helpers/influxd.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startSubscriber } from '../helpers/mqtt.js';
import { BASE_TS, Cleanups, freeze, cycleEntries, cycleTimes, influxTimes, openOutbox, outputContext, testLogger as logger } from '../helpers/outputs-rig.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { until, withTimeout } from '../helpers/wait.js';

const BASE = 'rackguard/s1/g1';
const POINTS = ['rack01.temperature', 'rack02.temperature', 'chiller1.supply'];
const context = (): OutputContext => outputContext(POINTS, { chillerPoint: 'chiller1.supply' });
const cycle = (c: number): OutboxEntry[] => cycleEntries(c, POINTS);

describe('InfluxDB sink against a misbehaving influxd', () => {
  let influx: Influxd;
  let broker: Mosquitto;
  let dir: TempDir;
  let n = 0;
  const cleanups = new Cleanups();

  beforeAll(async () => {
    [influx, broker, dir] = await Promise.all([startInfluxd(), startMosquitto(), tempDir('rackguard-influx-faults-')]);
  });
  afterEach(() => cleanups.run());
  afterAll(async () => {
    await influx?.cleanup();
    await broker?.cleanup();
    await dir?.cleanup();
  });

  function setup(over: Record<string, unknown> = {}) {
    const id = ++n;
    const db = `rgf${id}`;
    const outbox = openOutbox(dir.path, `outbox-${id}.db`, { commitIntervalMs: 0 });
    const sink = new InfluxSink(influxSchema.parse({ url: influx.url, database: db, flushIntervalMs: 50, retryInitialMs: 100, retryMaxMs: 400, requestTimeoutMs: 500, ...over }), { outbox, context: context(), logger, drainMs: 1000 });
    cleanups.push(() => outbox.close());
    cleanups.push(() => sink.stop());
    return { outbox, sink, db, id };
  }

  it('influxd frozen (SIGSTOP): each write gives up after requestTimeoutMs with an error naming the server, backs off, stop() does not hang; MQTT goes on; after SIGCONT every point lands once', async () => {
    const { outbox, sink, db, id } = setup();
    const mqtt = new MqttSink(mqttSchema.parse({ url: broker.url, clientId: `rg-if-${id}`, reconnectInitialMs: 50, reconnectMaxMs: 400 }), { outbox, context: context(), logger });
    cleanups.push(() => mqtt.stop());
    const sub = await startSubscriber(broker.url, { clientId: `rg-if-sub-${id}`, topic: `${BASE}/sensors/#`, clean: true });
    cleanups.push(() => sub.stop());
    await sink.start();
    await mqtt.start();
    for (let c = 0; c < 5; c++) outbox.append(cycle(c));
    await until(() => sink.stats().depth === 0, 15_000, 'InfluxDB before the freeze');
    const thaw = freeze(influx.process.proc.pid!, cleanups);
    for (let c = 5; c < 20; c++) outbox.append(cycle(c));
    // MQTT is not held up by the frozen InfluxDB.
    await sub.waitFor((m) => new Set(m.filter((x) => x.topic.endsWith('/rack01.temperature')).map((x) => x.payload)).size === 15, 15_000, 'MQTT delivers while influxd is frozen');
    await until(() => sink.stats().state === 'backoff' && /timed out/i.test(sink.stats().lastError ?? ''), 15_000, 'a write that timed out');
    expect(sink.stats().lastError).toContain(`127.0.0.1:${influx.port}`);
    expect(sink.stats().depth).toBe(15 * POINTS.length);
    // A sink stopped while the server is frozen returns (its records stay for the next start).
    const second = new InfluxSink(influxSchema.parse({ url: influx.url, database: db, requestTimeoutMs: 60_000, flushIntervalMs: 50 }), { outbox, context: context(), logger, sinkName: 'influx-b', startAt: 'beginning', drainMs: 500 });
    await second.start();
    await until(() => second.stats().state === 'writing', 10_000, 'the second sink writing into the frozen server');
    await withTimeout(second.stop(), 10_000, 'stop() of a sink whose write hangs');
    expect(outbox.cursorOf('influx-b')).toBe(0);
    thaw();
    for (let c = 20; c < 25; c++) outbox.append(cycle(c));
    await until(() => sink.stats().depth === 0, 20_000, 'InfluxDB drained after SIGCONT');
    const t = await influxTimes(influx, db, 'environment');
    for (const p of POINTS.filter((x) => x.startsWith('rack'))) expect(t.get(p)).toEqual(cycleTimes(0, 24));
    const count = await influx.query('SELECT count(value) FROM environment', db);
    expect(count.results[0]!.series![0]!.values![0]![1]).toBe(25 * 2);
  });

  it('database dropped while running (404 database not found): recreated, writing goes on, nothing after the drop is lost', async () => {
    const { outbox, sink, db } = setup();
    await sink.start();
    for (let c = 0; c < 5; c++) outbox.append(cycle(c));
    await until(() => sink.stats().depth === 0, 15_000, 'first writes');
    for (let round = 0; round < 2; round++) {
      await influx.query(`DROP DATABASE ${db}`);
      for (let c = 5 + round * 5; c < 10 + round * 5; c++) outbox.append(cycle(c));
      await until(() => sink.stats().depth === 0, 15_000, `drained after drop ${round + 1}`);
      expect((await influxTimes(influx, db, 'environment')).get('rack01.temperature')).toEqual(cycleTimes(5 + round * 5, 9 + round * 5));
    }
    expect(sink.stats().pointsQuarantined).toBe(0);
  });

  it('a field type conflict inside a batch: only the bad points are quarantined (one event), the others written', async () => {
    const { outbox, sink, db } = setup({ batchSize: 1000, flushIntervalMs: 200 });
    await influx.query(`CREATE DATABASE ${db}`);
    // `value` is a string in `chiller` from now on: the chiller's float values conflict (HTTP 400 partial write).
    expect((await influx.writeLines(db, `chiller,site=s1,gateway=g1,point=other value="text" ${BASE_TS - 1000}`)).status).toBe(204);
    await sink.start();
    // One batch: the good and the bad points together.
    outbox.append(Array.from({ length: 10 }, (_, c) => cycle(c)).flat());
    await until(() => sink.stats().depth === 0, 20_000, 'drained despite the bad points');
    const t = await influxTimes(influx, db, 'environment');
    for (const p of POINTS.filter((x) => x.startsWith('rack'))) expect(t.get(p)).toEqual(cycleTimes(0, 9));
    expect(sink.stats().pointsQuarantined).toBe(10);
    expect(sink.stats().pointsWritten).toBe(20 + 1); // + the quarantine event
    const ev = await influx.query(`SELECT message FROM events WHERE code = 'influx_point_quarantined'`, db);
    const msgs = (ev.results[0]!.series?.[0]?.values ?? []).map((v) => v[1] as string);
    expect(msgs).toHaveLength(1);
    expect(msgs[0]).toMatch(/chiller point chiller1\.supply.*field type conflict/);
    // The chiller measurement holds only the foreign point: no bad value became something else.
    expect((await influxTimes(influx, db, 'chiller')).get('chiller1.supply')).toBeUndefined();
  });
});

describe('InfluxDB sink against an influxd with authentication', () => {
  let influx: Influxd;
  let dir: TempDir;
  let attempts = 0;
  const cleanups = new Cleanups();
  beforeAll(async () => {
    [influx, dir] = await Promise.all([startInfluxd({ auth: 'right-secret-1' }), tempDir('rackguard-influx-auth-')]);
  });
  afterEach(() => cleanups.run());
  afterAll(async () => {
    await influx?.cleanup();
    await dir?.cleanup();
  });

  it('a wrong password: one influx_auth_failed error event (not one per retry), points wait; the right one delivers them all, the secret in no event', async () => {
    // An outbox and database per attempt: a retry must not count the failed attempt's event.
    const id = ++attempts;
    const db = `rgauth${id}`;
    const outbox = openOutbox(dir.path, `outbox-${id}.db`, { commitIntervalMs: 0 });
    cleanups.push(() => outbox.close());
    writeFileSync(join(dir.path, 'user'), 'admin\n');
    writeFileSync(join(dir.path, 'wrong'), 'not-the-secret-9\n');
    writeFileSync(join(dir.path, 'right'), 'right-secret-1\n');
    const cfg = (password: string) => influxSchema.parse({ url: influx.url, database: db, flushIntervalMs: 50, retryInitialMs: 50, retryMaxMs: 100, requestTimeoutMs: 2000, usernameFile: join(dir.path, 'user'), passwordFile: join(dir.path, password) });
    // Counts the sink's retries from its own log lines.
    let retries = 0;
    const counting = pino({ level: 'warn' }, { write: (line: string) => void (line.includes('influx write failed; retrying') && retries++) });
    const wrong = new InfluxSink(cfg('wrong'), { outbox, context: context(), logger: counting, drainMs: 500 });
    cleanups.push(() => wrong.stop());
    await wrong.start();
    for (let c = 0; c < 5; c++) outbox.append(cycle(c));
    // Several refused writes (each retried), still one event.
    await until(() => retries >= 4, 15_000, 'four refused writes');
    await wrong.stop();
    expect(wrong.stats().lastError ?? '').toMatch(/401|authoriz/i);
    const events = () => outbox.read('probe', 1000, 0).flatMap((r) => (r.entry.type === 'event' && r.entry.event.kind === 'output' ? [r.entry.event] : []));
    const auth = events().filter((e) => e.code === 'influx_auth_failed');
    expect(auth).toHaveLength(1);
    expect(auth[0]!.severity).toBe('error');
    expect(auth[0]!.message).toContain(`127.0.0.1:${influx.port}`);
    expect(JSON.stringify(auth[0])).not.toContain('not-the-secret-9');
    const right = new InfluxSink(cfg('right'), { outbox, context: context(), logger, drainMs: 500 });
    cleanups.push(() => right.stop());
    await right.start();
    await until(() => right.stats().depth === 0, 15_000, 'drained with the right password');
    await right.stop();
    const t = await influxTimes(influx, db, 'environment');
    for (const p of POINTS.filter((x) => x.startsWith('rack'))) expect(t.get(p)).toEqual(cycleTimes(0, 4));
  });
});
