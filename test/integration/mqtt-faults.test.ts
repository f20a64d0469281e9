/**
 * The MQTT sink against a real mosquitto that misbehaves: it refuses our credentials (CONNACK not
 * authorized) while InfluxDB works, and it is SIGKILLed and restarted on the same port, without
 * persistence (it comes back with no retained state) and with persistence but between two saves (it
 * comes back with an older retained zone state than the one it acknowledged).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { influxSchema, mqttSchema } from '../../agent/config/outputs-schema.js';
import type { OutputContext } from '../../agent/outputs/context.js';
import { InfluxSink } from '../../agent/outputs/influx.js';
import { MqttSink } from '../../agent/outputs/mqtt.js';
import type { Outbox, OutboxEntry } from '../../agent/outputs/outbox.js';
import { startInfluxd, type Influxd } from '../helpers/influxd.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startSubscriber, type Subscriber } from '../helpers/mqtt.js';
import { BASE_TS, Cleanups, freeze, openOutbox, outputContext, sampleEntry } from '../helpers/outputs-rig.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const BASE = 'rackguard/s1/g1';
const POINTS = ['rack01.temperature', 'rack02.temperature'];
const PASSWORD = 'right-s3cret-pw';
const WRONG = 'wr0ng-s3cret-pw';

const context = (): OutputContext => outputContext(POINTS);
const cycle = (c: number): OutboxEntry[] => POINTS.map((p) => sampleEntry(p, c));

function zone(c: number, from: string, level: string): OutboxEntry {
  return { type: 'event', event: { kind: 'zone_level', zone: 'z1', from, level, reason: `${from} to ${level}`, mono: c * 1000, ts: BASE_TS + c * 1000 + 1, evidence: { sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 2, k: 2, etaCriticalS: 0 } } } as OutboxEntry;
}

/** A pino logger whose JSON lines are kept for the test. */
function capturedLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

/** The retained zone level a newcomer sees (a fresh subscriber, as a dashboard opened now). */
async function retainedZoneLevel(url: string, id: string): Promise<string> {
  const s = await startSubscriber(url, { clientId: `rg-late-${id}`, topic: `${BASE}/zones/z1/state`, clean: true });
  try {
    const m = await s.waitMsg((x) => x.retain, 10_000, 'a retained zone state');
    return (JSON.parse(m.payload) as { level: string }).level;
  } finally {
    await s.stop();
  }
}

describe('MQTT sink against a misbehaving mosquitto', () => {
  let dir: TempDir;
  let n = 0;
  const cleanups = new Cleanups();

  beforeAll(async () => {
    dir = await tempDir('rackguard-mqtt-faults-');
  });
  afterEach(() => cleanups.run());
  afterAll(async () => {
    await dir?.cleanup();
  });

  function sinkOn(outbox: Outbox, url: string, logger: pino.Logger, over: Record<string, unknown> = {}): MqttSink {
    const sink = new MqttSink(mqttSchema.parse({ url, clientId: `rg-faults-${n}`, reconnectInitialMs: 50, reconnectMaxMs: 400, publishTimeoutMs: 2000, ...over }), { outbox, context: context(), logger });
    cleanups.push(() => sink.stop());
    return sink;
  }

  function newOutbox(): Outbox {
    const outbox = openOutbox(dir.path, `outbox-${++n}.db`, { commitIntervalMs: 0 });
    cleanups.push(() => outbox.close());
    return outbox;
  }

  /** A sink on `broker` that has delivered cycle 0 and zone z1 going warning → alarm. */
  async function alarmDelivered(broker: Mosquitto): Promise<{ outbox: Outbox; sink: MqttSink }> {
    const { logger } = capturedLogger();
    const outbox = newOutbox();
    const sink = sinkOn(outbox, broker.url, logger);
    await sink.start();
    outbox.append([...cycle(0), zone(0, 'warning', 'alarm')]);
    await until(() => outbox.depth('mqtt') === 0, 10_000, 'the alarm delivered');
    return { outbox, sink };
  }

  describe('credentials refused (CONNACK not authorized)', () => {
    let broker: Mosquitto;
    let influx: Influxd;
    beforeAll(async () => {
      [broker, influx] = await Promise.all([startMosquitto({ users: { rg: PASSWORD } }), startInfluxd()]);
    });
    afterAll(async () => {
      await broker?.cleanup();
      await influx?.cleanup();
    });

    for (const protocolVersion of [4, 5] as const) {
      it(`MQTT ${protocolVersion === 4 ? '3.1.1' : '5'}: an error naming the broker URL, retried with backoff and logged once, InfluxDB unaffected, no secret in any log line`, async () => {
        const { logger, lines } = capturedLogger();
        const outbox = newOutbox();
        const userFile = join(dir.path, `user-${n}`);
        const passFile = join(dir.path, `pass-${n}`);
        writeFileSync(userFile, 'rg\n');
        writeFileSync(passFile, `${WRONG}\n`);
        const sink = sinkOn(outbox, broker.url, logger, { protocolVersion, usernameFile: userFile, passwordFile: passFile });
        const influxSink = new InfluxSink(influxSchema.parse({ url: influx.url, database: `rgauth${n}`, flushIntervalMs: 100, retryInitialMs: 100, retryMaxMs: 400 }), { outbox, context: context(), logger });
        cleanups.push(() => influxSink.stop());
        await sink.start();
        await influxSink.start();
        for (let c = 0; c < 10; c++) outbox.append(cycle(c));
        await until(() => influxSink.stats().depth === 0 && influxSink.stats().pointsWritten === 20, 15_000, 'InfluxDB drained while MQTT is refused');
        await until(() => sink.stats().reconnects >= 4, 15_000, 'several connection attempts');
        expect(sink.stats().connected).toBe(false);
        expect(outbox.depth('mqtt')).toBe(20);
        const port = String(broker.port);
        const errors = lines.map((l) => JSON.parse(l) as { level: number; msg: string; url?: string }).filter((l) => l.level >= 50 && l.msg.includes('cannot connect'));
        // Logged the first time; the same refusal again only once every 12 attempts (a loaded machine
        // may take long enough over InfluxDB for the attempts to pass 12), never at each attempt.
        const attempts = sink.stats().reconnects + 1;
        expect(errors.length).toBeGreaterThanOrEqual(1);
        expect(errors.length).toBeLessThanOrEqual(1 + Math.floor(attempts / 12));
        expect(errors[0]!.msg).toContain(`127.0.0.1:${port}`);
        expect(errors[0]!.msg).toMatch(/refused the connection: not authorized.*credentials/i);
        expect(sink.stats().lastError).toMatch(new RegExp(`127\\.0\\.0\\.1:${port}.*not authorized`, 'i'));
        for (const l of lines) {
          expect(l).not.toContain(WRONG);
          expect(l).not.toContain(PASSWORD);
        }
      });
    }
  });

  it('broker frozen (SIGSTOP: accepts TCP, never answers): the publish deadline drops the link, reconnects time out and back off; after SIGCONT every record arrives', async () => {
    const broker = await startMosquitto();
    cleanups.push(() => broker.cleanup());
    const { logger, lines } = capturedLogger();
    const outbox = newOutbox();
    const sink = sinkOn(outbox, broker.url, logger, { publishTimeoutMs: 500 });
    const s: Subscriber = await startSubscriber(broker.url, { clientId: `rg-stop-sub-${n}`, topic: `${BASE}/sensors/#` });
    cleanups.push(() => s.stop());
    await sink.start();
    for (let c = 0; c < 3; c++) outbox.append(cycle(c));
    await until(() => outbox.depth('mqtt') === 0, 10_000, 'before the freeze');
    const thaw = freeze(broker.process.proc.pid!, cleanups);
    for (let c = 3; c < 10; c++) outbox.append(cycle(c));
    await until(() => !sink.stats().connected && sink.stats().reconnects >= 2, 20_000, 'the link dropped and reconnects tried');
    expect(outbox.depth('mqtt')).toBeGreaterThan(0);
    expect(lines.some((l) => l.includes('cannot connect') && l.includes(String(broker.port)))).toBe(true);
    thaw();
    const times = (m: { topic: string; payload: string }[], p: string) => new Set(m.filter((x) => x.topic === `${BASE}/sensors/${p}`).map((x) => (JSON.parse(x.payload) as { tsMs: number }).tsMs));
    await s.waitFor((m) => POINTS.every((p) => times(m, p).size === 10), 20_000, 'every record after SIGCONT');
    await until(() => outbox.depth('mqtt') === 0, 10_000, 'cursor caught up');
  });

  it('a retained state the broker refuses after a restart (ACL changed) is not restored again and again: telemetry goes on', async () => {
    const broker = await startMosquitto({ users: { rg: PASSWORD, watcher: PASSWORD }, acl: ['user rg', 'topic write rackguard/#', 'user watcher', 'topic read #'].join('\n') });
    cleanups.push(() => broker.cleanup());
    const { logger } = capturedLogger();
    const outbox = newOutbox();
    const userFile = join(dir.path, `ruser-${n}`);
    const passFile = join(dir.path, `rpass-${n}`);
    writeFileSync(userFile, 'rg\n');
    writeFileSync(passFile, `${PASSWORD}\n`);
    const sink = sinkOn(outbox, broker.url, logger, { usernameFile: userFile, passwordFile: passFile });
    await sink.start();
    outbox.append([...cycle(0), zone(0, 'warning', 'alarm')]);
    await until(() => outbox.depth('mqtt') === 0, 10_000, 'the alarm delivered');
    // The zone topics are denied from now on.
    writeFileSync(join(broker.dir, 'acl'), ['user rg', `topic write ${BASE}/sensors/#`, `topic write ${BASE}/status`, `topic write ${BASE}/events`, 'user watcher', 'topic read #', ''].join('\n'));
    await broker.restart();
    const s: Subscriber = await startSubscriber(broker.url, { clientId: `rg-racl-sub-${n}`, topic: `${BASE}/sensors/#`, clean: true, username: 'watcher', password: PASSWORD });
    cleanups.push(() => s.stop());
    for (let c = 1; c < 6; c++) outbox.append(cycle(c));
    const seen = (m: { topic: string; payload: string }[]) => new Set(m.filter((x) => x.topic === `${BASE}/sensors/rack01.temperature`).map((x) => (JSON.parse(x.payload) as { tsMs: number }).tsMs));
    await s.waitFor((m) => seen(m).size === 5, 20_000, 'telemetry after the restart');
    await until(() => outbox.depth('mqtt') === 0, 10_000, 'cursor caught up');
  });

  it('broker restarted cleanly (it kept the retained states): the zone state is not published again on reconnect', async () => {
    const broker = await startMosquitto();
    cleanups.push(() => broker.cleanup());
    const { logger } = capturedLogger();
    const outbox = newOutbox();
    const sink = sinkOn(outbox, broker.url, logger);
    const s: Subscriber = await startSubscriber(broker.url, { clientId: `rg-dup-sub-${n}`, topic: `${BASE}/#` });
    cleanups.push(() => s.stop());
    await sink.start();
    outbox.append([...cycle(0), zone(0, 'warning', 'alarm')]);
    await until(() => outbox.depth('mqtt') === 0, 10_000, 'the alarm delivered');
    await broker.restart();
    await until(() => sink.stats().connected && sink.stats().reconnects >= 1, 15_000, 'reconnected');
    outbox.append(cycle(1));
    await s.waitFor((m) => m.some((x) => x.topic === `${BASE}/sensors/rack01.temperature` && (JSON.parse(x.payload) as { tsMs: number }).tsMs === BASE_TS + 1000), 15_000, 'telemetry after the restart');
    // What the sink sent to the restarted broker, as it logged it (a subscriber would also see the
    // broker's own DUP redeliveries): no zone state, the broker still held it.
    const sent = broker.process.lines.filter((l) => /Received PUBLISH from rg-faults-\d+ .*'rackguard\/s1\/g1\/zones\/z1\/state'/.test(l));
    expect(sent).toHaveLength(0);
    expect(await retainedZoneLevel(broker.url, `e${n}`)).toBe('alarm');
  });

  it('broker SIGKILLed and restarted without persistence: the retained zone state is restored, the backlog arrives', async () => {
    const broker = await startMosquitto({ extra: ['persistence false'] });
    cleanups.push(() => broker.cleanup());
    const { outbox, sink } = await alarmDelivered(broker);
    expect(await retainedZoneLevel(broker.url, `a${n}`)).toBe('alarm');
    await broker.process.stop('SIGKILL');
    await until(() => !sink.stats().connected, 10_000, 'the sink notices');
    for (let c = 1; c < 5; c++) outbox.append(cycle(c));
    await broker.restart();
    const s: Subscriber = await startSubscriber(broker.url, { clientId: `rg-sub-${n}`, topic: `${BASE}/sensors/#`, clean: true });
    cleanups.push(() => s.stop());
    await until(() => outbox.depth('mqtt') === 0 && sink.stats().connected, 15_000, 'the backlog delivered after the restart');
    expect(await retainedZoneLevel(broker.url, `b${n}`)).toBe('alarm');
  });

  it('broker SIGKILLed between two saves comes back with an older retained zone state: the newest one is restored', async () => {
    // Persistence, saved only on a clean stop: what the broker acknowledged after the last save is lost by SIGKILL.
    const broker = await startMosquitto({ extra: ['autosave_interval 0', 'autosave_on_changes false'] });
    cleanups.push(() => broker.cleanup());
    const { outbox, sink } = await alarmDelivered(broker);
    await broker.restart(); // SIGTERM: `alarm` saved
    await until(() => sink.stats().connected && outbox.depth('mqtt') === 0, 15_000, 'reconnected');
    outbox.append([...cycle(1), zone(1, 'alarm', 'critical')]);
    await until(() => outbox.depth('mqtt') === 0, 10_000, 'critical delivered');
    expect(await retainedZoneLevel(broker.url, `c${n}`)).toBe('critical');
    await broker.process.stop('SIGKILL'); // `critical` was never saved
    await until(() => !sink.stats().connected, 10_000, 'the sink notices');
    await broker.restart();
    await until(() => sink.stats().connected && sink.stats().inFlight === 0, 15_000, 'reconnected after the kill');
    await until(async () => (await retainedZoneLevel(broker.url, `d${n}-${Date.now()}`)) === 'critical', 10_000, 'the retained zone state back at critical');
  });
});
