/**
 * MQTT over TLS (outputs.mqtt: mqtts:// with ca, cert and key), against a real mosquitto with a TLS
 * listener that requires a client certificate. The PKI is made per run by
 * test/fixtures/make_test_certs.py (python3-cryptography).
 *
 * - With the right CA and a client certificate, records go through (a TLS subscriber reads them).
 * - A wrong CA, or no client certificate, never connects: the error names the broker and the
 *   reason, and the records wait in the outbox.
 * - A broker certificate that is not valid yet (what a gateway whose clock is a month behind sees of
 *   a fresh certificate): the error says which clock judged it.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mqttSchema } from '../../agent/config/outputs-schema.js';
import { MqttSink } from '../../agent/outputs/mqtt.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { Cleanups, cycleEntries, openOutbox, outputContext } from '../helpers/outputs-rig.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const MAKE_CERTS = join(import.meta.dirname, '..', 'fixtures', 'make_test_certs.py');
const POINTS = ['rack1.temperature', 'rack2.temperature'];
const BASE = 'rackguard/s1/g1';

let dir: TempDir;
let broker: Mosquitto;
let future: Mosquitto;
let n = 0;
const cleanups = new Cleanups();
const pem = (name: string): string => join(dir.path, name);

beforeAll(async () => {
  dir = await tempDir('rackguard-mqtt-tls-');
  execFileSync('/usr/bin/python3', [MAKE_CERTS, dir.path]);
  const tls = (cert: string) => ({ cafile: pem('ca.pem'), certfile: pem(`${cert}.pem`), keyfile: pem(`${cert}.key`), requireCertificate: true });
  [broker, future] = await Promise.all([startMosquitto({ tls: tls('server') }), startMosquitto({ tls: tls('future') })]);
}, 30_000);

afterEach(() => cleanups.run());

afterAll(async () => {
  await broker?.cleanup();
  await future?.cleanup();
  await dir?.cleanup();
});

/** A sink on `url` with the given TLS files, its outbox holding `cycles` cycles, and its log lines. */
async function startSink(url: string, files: { ca?: string; cert?: string; key?: string }, cycles: number) {
  const id = ++n;
  const logs: Array<{ level: number; msg: string; err?: unknown }> = [];
  const logger = pino({ level: 'debug' }, { write: (l: string) => void logs.push(JSON.parse(l) as { level: number; msg: string }) });
  const outbox = openOutbox(dir.path, `outbox-${id}.db`, { commitIntervalMs: 0 });
  const sink = new MqttSink(mqttSchema.parse({ url, clientId: `rg-tls-${id}`, reconnectInitialMs: 100, reconnectMaxMs: 300, publishTimeoutMs: 3000, ...files }), { outbox, context: outputContext(POINTS), logger, startAt: 'beginning' });
  cleanups.push(() => outbox.close());
  cleanups.push(() => sink.stop());
  for (let c = 0; c < cycles; c++) outbox.append(cycleEntries(c, POINTS));
  await sink.start();
  return { sink, outbox, logs };
}

describe('MQTT over TLS', () => {
  it('with the CA and a client certificate: every record reaches a TLS subscriber', async () => {
    const received: string[] = [];
    const sub = mqtt.connect(broker.url, { clientId: `rg-tls-sub-${++n}`, ca: readFileSync(pem('ca.pem')), cert: readFileSync(pem('client.pem')), key: readFileSync(pem('client.key')), reconnectPeriod: 200 });
    cleanups.push(() => sub.endAsync(true));
    await new Promise<void>((resolve, reject) => {
      sub.once('connect', () => resolve());
      sub.once('error', reject);
    });
    sub.on('message', (topic, payload) => received.push(`${topic} ${(JSON.parse(payload.toString()) as { tsMs: number }).tsMs}`));
    await sub.subscribeAsync(`${BASE}/sensors/#`, { qos: 1 });
    const { outbox } = await startSink(broker.url, { ca: pem('ca.pem'), cert: pem('client.pem'), key: pem('client.key') }, 5);
    // Distinct readings (a QoS 1 redelivery may repeat one): five cycles of two points.
    await until(() => new Set(received).size === 10 && outbox.depth('mqtt') === 0, 15_000, 'ten readings over TLS');
    expect(new Set(received.filter((k) => k.startsWith(`${BASE}/sensors/rack1.temperature `))).size).toBe(5);
  });

  it.each([
    ['a CA that did not sign the broker\'s certificate', { ca: 'other-ca.pem', cert: 'client.pem', key: 'client.key' }, /TLS: the broker's certificate is not trusted: .*outputs\.mqtt\.ca/],
    ['no client certificate where the broker requires one', { ca: 'ca.pem' }, /TLS: the broker refused this gateway's client certificate \(none was sent\): outputs\.mqtt\.cert and key/],
  ])('%s: never connects, says why naming the broker, and the records wait', async (_name, files, reason) => {
    const paths = Object.fromEntries(Object.entries(files).map(([k, f]) => [k, pem(f)]));
    const { sink, outbox, logs } = await startSink(broker.url, paths, 3);
    const failure = (): { msg: string } | undefined => logs.find((l) => l.level === 50 && l.msg.startsWith('mqtt: cannot connect to'));
    await until(() => failure() !== undefined, 15_000, 'the connection error');
    expect(failure()!.msg).toContain(`cannot connect to ${broker.url}: TLS: `);
    expect(failure()!.msg).toMatch(reason);
    expect(sink.stats().connected).toBe(false);
    expect(outbox.depth('mqtt')).toBe(6);
  });

  it('a broker certificate not valid yet (the gateway\'s clock a month behind): the error names the clock that judged it', async () => {
    const { outbox, logs } = await startSink(future.url, { ca: pem('ca.pem'), cert: pem('client.pem'), key: pem('client.key') }, 2);
    const failure = (): { msg: string } | undefined => logs.find((l) => l.level === 50 && l.msg.startsWith('mqtt: cannot connect to'));
    await until(() => failure() !== undefined, 15_000, 'the connection error');
    expect(failure()!.msg).toMatch(/TLS: certificate is not yet valid, judged by this gateway's clock, which reads \d{4}-\d\d-\d\dT.*fix the clock, not the certificate/);
    expect(failure()!.msg).toContain(`cannot connect to ${future.url}: TLS: `);
    expect(outbox.depth('mqtt')).toBe(4);
  });
});
