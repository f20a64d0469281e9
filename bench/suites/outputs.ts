/**
 * Outputs layer: the durable outbox and the two sinks against a real mosquitto and a real influxd
 * (started here on free loopback ports in temp dirs).
 *   outbox_append_points_per_s  durable appends (WAL, synchronous=FULL), one commit per poll cycle of 60 samples
 *   outbox_append_group_commit_points_per_s  the same, committed every 20 cycles (group commit)
 *   influx_drain_points_per_s   a 1-hour outage backlog of the reference rack (62 points × 3600 s) drained into influxd
 *   mqtt_e2e_p50_ms / _p99_ms   from append to arrival at a QoS 1 subscriber, 62 points every 50 ms
 *   outbox_append_peak_rss_mb   peak RSS of this process after the append run (it runs first, in a fresh process)
 * Outage memory is measured in a separate `rackguard run` process: see suites/outage.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import type { Sample } from '../../agent/acquisition/types.js';
import { influxSchema, mqttSchema, outboxSchema } from '../../agent/config/outputs-schema.js';
import type { OutputContext, PointInfo } from '../../agent/outputs/context.js';
import { InfluxSink } from '../../agent/outputs/influx.js';
import { MqttSink } from '../../agent/outputs/mqtt.js';
import { Outbox, type OutboxEntry } from '../../agent/outputs/outbox.js';
import { tempDir } from '../../scripts/lib/tmp.js';
import { startInfluxd } from '../../scripts/lib/influxd.js';
import { startMosquitto } from '../../scripts/lib/mosquitto.js';
import type { Figures } from '../results.js';

const REFERENCE_POINTS = 62;
const OUTAGE_S = 3600;
const logger = pino({ level: 'silent' });
const POINT_IDS = Array.from({ length: REFERENCE_POINTS }, (_, i) => `rack${String(Math.floor(i / 2) + 1).padStart(2, '0')}.${i % 2 === 0 ? 'temperature' : 'humidity'}`);

function context(): OutputContext {
  const points = new Map<string, PointInfo>(POINT_IDS.map((id) => [id, { id, deviceId: id.split('.')[0]!, unit: id.endsWith('temperature') ? '°C' : '%', kind: id.endsWith('temperature') ? 'temperature' : 'humidity', zones: ['z1'] }]));
  return { site: 'bench', gateway: 'gw', points, zones: ['z1'] };
}

function cycle(ts: number, n = REFERENCE_POINTS): OutboxEntry[] {
  return POINT_IDS.slice(0, n).map((pointId, i) => ({ type: 'sample', sample: { pointId, deviceId: pointId.split('.')[0]!, value: 22 + i / 10 + (ts % 7) / 100, unit: '°C', quality: 'good', ts, mono: ts } satisfies Sample }));
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function until(fn: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!fn()) {
    if (performance.now() > deadline) throw new Error(`bench outputs: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Durable appends, synchronous=FULL. Two figures: one commit (one fsync) per poll cycle of 60 samples,
 * the worst case a burst of events can force; and group commit as the agent runs it (appends buffered,
 * committed when the slice ends; here every 20 cycles, about what one 1 s slice holds at the
 * reference rack's busiest).
 */
async function appendRate(dir: string, commitEvery: number): Promise<number> {
  const outbox = new Outbox(outboxSchema.parse({ path: join(dir, `append-${commitEvery}.db`), synchronous: 'FULL', commitIntervalMs: 10_000 }));
  outbox.open();
  outbox.registerSink('none');
  const cycles = 500;
  const t0 = performance.now();
  for (let c = 0; c < cycles; c++) {
    outbox.append(cycle(1_700_000_000_000 + c * 1000, 60));
    if ((c + 1) % commitEvery === 0) outbox.commit();
  }
  outbox.commit();
  const s = (performance.now() - t0) / 1000;
  outbox.close();
  return Math.round((cycles * 60) / s);
}

async function influxDrain(dir: string): Promise<number> {
  const influx = await startInfluxd();
  try {
    // The backlog is prepared without fsyncs (not what is measured).
    const outbox = new Outbox(outboxSchema.parse({ path: join(dir, 'drain.db'), synchronous: 'NORMAL' }));
    outbox.open();
    outbox.registerSink('influx', 'beginning');
    const t0 = Date.now() - OUTAGE_S * 1000;
    for (let s = 0; s < OUTAGE_S; s++) outbox.append(cycle(t0 + s * 1000));
    const sink = new InfluxSink(influxSchema.parse({ url: influx.url, database: 'bench' }), { outbox, context: context(), logger });
    const start = performance.now();
    await sink.start();
    await until(() => outbox.depth('influx') === 0, 600_000, 'influx drain');
    const s = (performance.now() - start) / 1000;
    await sink.stop();
    outbox.close();
    const r = await influx.query('SELECT count(value) FROM environment', 'bench');
    const count = r.results[0]?.series?.[0]?.values?.[0]?.[1];
    if (count !== REFERENCE_POINTS * OUTAGE_S) throw new Error(`influx holds ${String(count)} points, expected ${REFERENCE_POINTS * OUTAGE_S}`);
    return Math.round((REFERENCE_POINTS * OUTAGE_S) / s);
  } finally {
    await influx.cleanup();
  }
}

async function mqttLatency(dir: string): Promise<{ p50: number; p99: number }> {
  const broker = await startMosquitto();
  const outbox = new Outbox(outboxSchema.parse({ path: join(dir, 'mqtt.db') }));
  outbox.open();
  const sink = new MqttSink(mqttSchema.parse({ url: broker.url, clientId: 'bench-pub' }), { outbox, context: context(), logger });
  const sub = mqtt.connect(broker.url, { clientId: 'bench-sub', clean: false });
  try {
    await new Promise<void>((resolve, reject) => {
      sub.once('connect', () => resolve());
      sub.once('error', reject);
    });
    await sub.subscribeAsync('rackguard/bench/gw/sensors/#', { qos: 1 });
    const sentAt = new Map<string, number>();
    const latencies: number[] = [];
    sub.on('message', (topic, payload) => {
      const key = `${topic.slice(topic.lastIndexOf('/') + 1)}@${(JSON.parse(payload.toString()) as { tsMs: number }).tsMs}`;
      const t = sentAt.get(key);
      if (t !== undefined) {
        latencies.push(performance.now() - t);
        sentAt.delete(key);
      }
    });
    await sink.start();
    await until(() => sink.stats().connected, 10_000, 'mqtt connect');
    const cycles = 200;
    const base = Date.now();
    for (let c = 0; c < cycles; c++) {
      const entries = cycle(base + c * 1000);
      const now = performance.now();
      for (const e of entries) if (e.type === 'sample') sentAt.set(`${e.sample.pointId}@${e.sample.ts}`, now);
      outbox.append(entries);
      await new Promise((r) => setTimeout(r, 50));
    }
    await until(() => latencies.length >= cycles * REFERENCE_POINTS, 30_000, 'mqtt arrivals');
    latencies.sort((a, b) => a - b);
    return { p50: Number(percentile(latencies, 50).toFixed(2)), p99: Number(percentile(latencies, 99).toFixed(2)) };
  } finally {
    sub.end(true);
    await sink.stop();
    outbox.close();
    await broker.cleanup();
  }
}

/** Peak resident set of this process so far (VmHWM), MB. */
function peakRssMb(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Math.round((Number(m[1]) / 1024) * 10) / 10 : Number.NaN;
}

export async function run(): Promise<Figures> {
  const tmp = await tempDir('rackguard-bench-outputs-');
  try {
    // First, in this fresh process (bench/run.ts gives every suite its own): the peak RSS after it
    // is the append run's own.
    const outboxAppend = await appendRate(tmp.path, 1);
    const outboxAppendGroup = await appendRate(tmp.path, 20);
    const appendPeakMb = peakRssMb();
    const drain = await influxDrain(tmp.path);
    const e2e = await mqttLatency(tmp.path);
    return {
      outbox_append_points_per_s: outboxAppend,
      outbox_append_group_commit_points_per_s: outboxAppendGroup,
      influx_drain_points_per_s: drain,
      mqtt_e2e_p50_ms: e2e.p50,
      mqtt_e2e_p99_ms: e2e.p99,
      outbox_append_peak_rss_mb: appendPeakMb,
      reference_points: REFERENCE_POINTS,
      outage_s: OUTAGE_S,
    };
  } finally {
    await tmp.cleanup();
  }
}
