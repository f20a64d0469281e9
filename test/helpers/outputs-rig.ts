/**
 * Builds what the sink integration tests feed the outputs: an OutputContext for site s1 / gateway g1 /
 * zone z1, outbox records of samples at known times, an opened outbox, a cleanup stack, and a reader
 * of the times InfluxDB holds.
 */
import { join } from 'node:path';
import { pino } from 'pino';
import type { Sample } from '../../agent/acquisition/types.js';
import { outboxSchema } from '../../agent/config/outputs-schema.js';
import type { OutputContext, PointInfo } from '../../agent/outputs/context.js';
import { Outbox, type OutboxEntry } from '../../agent/outputs/outbox.js';
import type { Influxd } from './influxd.js';

/** Silent unless RACKGUARD_TEST_LOG names a level. */
export const testLogger = pino({ level: process.env.RACKGUARD_TEST_LOG ?? 'silent' });

/** Cycle 0's wall time: an hour ago, on a whole second (InfluxDB's default retention keeps it; shards are per week). */
export const BASE_TS = Math.floor(Date.now() / 1000) * 1000 - 3_600_000;

/**
 * The context of `points` (device = the id's first part, °C temperatures) at site s1, gateway g1:
 * the rack points are in zone z1 (every point with `allInZone`), `chillerPoint` is chiller1's supply.
 */
export function outputContext(points: readonly string[], opts: { chillerPoint?: string | undefined; allInZone?: boolean } = {}): OutputContext {
  const map = new Map<string, PointInfo>();
  for (const id of points) {
    const zones = opts.allInZone || id.startsWith('rack') ? ['z1'] : [];
    map.set(id, { id, deviceId: id.split('.')[0]!, unit: '°C', kind: 'temperature', zones, ...(id === opts.chillerPoint ? { chiller: { id: 'chiller1', role: 'supplyTemp' } } : {}) });
  }
  return { site: 's1', gateway: 'g1', points: map, zones: ['z1'] };
}

/** A good °C sample record of `pointId` at cycle `c` (wall BASE_TS + c s, monotonic c s), reading `value` (default c). */
export function sampleEntry(pointId: string, c: number, value = c): OutboxEntry {
  return { type: 'sample', sample: { pointId, deviceId: pointId.split('.')[0]!, value, unit: '°C', quality: 'good', ts: BASE_TS + c * 1000, mono: c * 1000 } satisfies Sample };
}

/** One sample of each of `points` at cycle `c`, the i-th reading c + i/100. */
export function cycleEntries(c: number, points: readonly string[]): OutboxEntry[] {
  return points.map((pointId, i) => sampleEntry(pointId, c, c + i / 100));
}

/** The wall times of cycles `from` to `to`, both included. */
export function cycleTimes(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => BASE_TS + (from + i) * 1000);
}

/** Per point, the times InfluxDB holds in `measurement` of `db`. */
export async function influxTimes(influx: Influxd, db: string, measurement: string): Promise<Map<string, number[]>> {
  const r = await influx.query(`SELECT value FROM ${measurement} GROUP BY point`, db);
  const out = new Map<string, number[]>();
  for (const s of r.results[0]?.series ?? []) out.set(s.tags!.point!, (s.values ?? []).map((v) => v[0] as number));
  return out;
}

/** An opened outbox at `dir`/`file`, with `over` on top of the schema's defaults. */
export function openOutbox(dir: string, file: string, over: Record<string, unknown> = {}): Outbox {
  const outbox = new Outbox(outboxSchema.parse({ path: join(dir, file), ...over }));
  outbox.open();
  return outbox;
}

/** Cleanups a test registers as it goes; `run()` (an afterEach) runs them newest first, each best effort. */
export class Cleanups {
  private fns: Array<() => Promise<void> | void> = [];

  push(fn: () => Promise<void> | void): void {
    this.fns.push(fn);
  }

  async run(): Promise<void> {
    for (const c of this.fns.splice(0).reverse()) {
      try {
        await c();
      } catch {
        // best effort
      }
    }
  }
}

/** SIGSTOPs `pid` (its listening socket still accepts, nothing answers); the returned thaw SIGCONTs it once, and runs as a cleanup too. */
export function freeze(pid: number, cleanups: Cleanups): () => void {
  process.kill(pid, 'SIGSTOP');
  let frozen = true;
  const thaw = (): void => {
    if (frozen) process.kill(pid, 'SIGCONT');
    frozen = false;
  };
  cleanups.push(thaw);
  return thaw;
}
