/**
 * The detector: routes samples to sensor and chiller tracks and evaluates the zones they touch.
 *
 * Pure apart from its own state: no timers, no Date.now(), no performance.now(). Time comes only from
 * the samples (their monotonic `mono`; `ts` is copied into events for humans) and from `tick`, which the
 * caller invokes about once a second live, and at each new timestamp in a replay, so that dwell expiry,
 * staleness and clear delays are seen without new samples.
 *
 * Cost: O(1) amortised per sample (a map lookup and an estimator update), O(zone sensors) per zone
 * evaluation; evidence objects are built only when an event is emitted.
 */
import type { Sample } from '../acquisition/types.js';
import type { Config } from '../config/model.js';
import { DETECTION_DEFAULTS, type DetectionParams } from '../config/schema.js';
import { SensorTrack } from './sensor.js';
import type { DetectorEvent, ZoneStatus } from './types.js';
import { ChillerTrack } from './chiller.js';
import { ZoneMachine } from './zone.js';

/** Where one point's samples go. */
interface Route {
  sensors: SensorTrack[];
  /** Indices (in Detector.zones) of the zones to re-evaluate after a sample of this point. */
  zones: number[];
  chillerRunning: ChillerTrack[];
  chillerAlarm: ChillerTrack[];
  chillerSupply: ChillerTrack[];
}

/** Stable text of a part of the config, for "unchanged?" (Maps as entry lists). */
function keyOf(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (v instanceof Map ? [...v] : v));
}

/** The tracks and zones of one wiring, by what defines them, so a reload can keep those unchanged. */
interface Kept {
  sensors: Map<string, SensorTrack>;
  chillers: Map<string, ChillerTrack>;
  zones: Map<string, ZoneMachine>;
}

export class Detector {
  private zones: ZoneMachine[] = [];
  private zoneById = new Map<string, ZoneMachine>();
  private routes = new Map<string, Route>();
  private kept: Kept = { sensors: new Map(), chillers: new Map(), zones: new Map() };
  /** Zones touched by the current batch; a stamp per zone (by index) avoids a Set per batch. */
  private readonly dirty: number[] = [];
  private dirtyStamp = new Float64Array(0);
  private batch = 0;

  constructor(config: Config) {
    this.wire(config, this.kept);
  }

  /**
   * Adopts a new configuration (a reload) keeping the state of what did not change: a zone whose id,
   * sensors, parameters and chillers are the same keeps its machine (level, dwell and clear timers,
   * latch) and its tracks; a sensor track whose zone, point and parameters are the same keeps its rate
   * estimators and history even when its zone changed otherwise; an unchanged chiller keeps its
   * readings. Everything else starts fresh. Returns the ids of the zones kept and of those (re)built.
   */
  adopt(config: Config): { keptZones: string[]; newZones: string[] } {
    const previous = this.kept;
    this.zones = [];
    this.zoneById = new Map();
    this.routes = new Map();
    this.kept = { sensors: new Map(), chillers: new Map(), zones: new Map() };
    this.wire(config, previous);
    const keptZones = this.zones.filter((z) => [...previous.zones.values()].includes(z)).map((z) => z.id);
    return { keptZones, newZones: this.zones.map((z) => z.id).filter((id) => !keptZones.includes(id)) };
  }

  private wire(config: Config, reuse: Kept): void {
    // The previous wiring's part with the same defining key, else a new one; recorded for the next reload.
    const take = <K extends keyof Kept>(kind: K, key: string, make: () => Kept[K] extends Map<string, infer T> ? T : never): Kept[K] extends Map<string, infer T> ? T : never => {
      const v = (reuse[kind].get(key) as ReturnType<typeof make> | undefined) ?? make();
      (this.kept[kind] as Map<string, unknown>).set(key, v);
      return v;
    };
    const route = (pointId: string): Route => {
      let r = this.routes.get(pointId);
      if (!r) {
        r = { sensors: [], zones: [], chillerRunning: [], chillerAlarm: [], chillerSupply: [] };
        this.routes.set(pointId, r);
      }
      return r;
    };
    const addZone = (r: Route, z: ZoneMachine): void => {
      const i = this.zones.indexOf(z);
      if (!r.zones.includes(i)) r.zones.push(i);
    };

    const chillerKeys: string[] = [];
    const chillers = config.chillers.map((def) => {
      // A chiller may serve zones with different parameters; its supply track uses the first zone's.
      const firstZone = config.zones.find((z) => def.zones.includes(z.id));
      const params: DetectionParams = firstZone ? firstZone.detection : { ...DETECTION_DEFAULTS };
      const key = keyOf([def, params]);
      chillerKeys.push(key);
      return take('chillers', key, () => new ChillerTrack(def, params));
    });

    for (const zdef of config.zones) {
      // One track per (zone, sensor): zones may use different windows for the same sensor.
      const tracks = zdef.sensors.map((pointId) => take('sensors', keyOf([zdef.id, pointId, zdef.detection]), () => new SensorTrack(pointId, zdef.detection)));
      const servedKeys = chillerKeys.filter((_k, i) => chillers[i]!.zones.includes(zdef.id));
      const served = chillers.filter((c) => c.zones.includes(zdef.id));
      const zone = take('zones', keyOf([zdef, servedKeys]), () => new ZoneMachine(zdef.id, zdef.detection, tracks, served));
      this.zones.push(zone);
      this.zoneById.set(zone.id, zone);
      for (const t of tracks) {
        const r = route(t.pointId);
        r.sensors.push(t);
        addZone(r, zone);
      }
    }

    this.dirtyStamp = new Float64Array(this.zones.length);

    config.chillers.forEach((def, i) => {
      const ch = chillers[i]!;
      const zonesServed = this.zones.filter((z) => def.zones.includes(z.id));
      const wire = (pointId: string | undefined, list: (r: Route) => ChillerTrack[]): void => {
        if (pointId === undefined) return;
        const r = route(pointId);
        list(r).push(ch);
        for (const z of zonesServed) addZone(r, z);
      };
      wire(def.running, (r) => r.chillerRunning);
      wire(def.alarm, (r) => r.chillerAlarm);
      wire(def.supplyTemp, (r) => r.chillerSupply);
    });
  }

  /**
   * Feeds a batch of samples (in time order per point) and evaluates the zones they touch at the
   * batch's latest monotonic time. Samples of points the detector does not use are ignored.
   */
  ingest(samples: readonly Sample[]): DetectorEvent[] {
    const stamp = ++this.batch;
    let maxMono = -Infinity;
    let maxTs = 0;
    for (const s of samples) {
      const r = this.routes.get(s.pointId);
      if (!r) continue;
      if (s.mono >= maxMono) {
        maxMono = s.mono;
        maxTs = s.ts;
      }
      for (const t of r.sensors) t.ingest(s);
      for (const c of r.chillerRunning) c.ingestRunning(s);
      for (const c of r.chillerAlarm) c.ingestAlarm(s);
      for (const c of r.chillerSupply) c.ingestSupply(s);
      for (const zi of r.zones) {
        if (this.dirtyStamp[zi] !== stamp) {
          this.dirtyStamp[zi] = stamp;
          this.dirty.push(zi);
        }
      }
    }
    if (this.dirty.length === 0) return [];
    let events: DetectorEvent[] = [];
    for (const zi of this.dirty) {
      const e = this.zones[zi]!.evaluate(maxMono, maxTs);
      if (e.length > 0) events = events.length === 0 ? e : events.concat(e);
    }
    this.dirty.length = 0;
    return events;
  }

  /** Re-evaluates every zone at monotonic `mono` (wall `ts` for the events). */
  tick(mono: number, ts: number): DetectorEvent[] {
    let events: DetectorEvent[] = [];
    for (const z of this.zones) {
      const e = z.evaluate(mono, ts);
      if (e.length > 0) events = events.length === 0 ? e : events.concat(e);
    }
    return events;
  }

  /** Every zone's level, blindness and evidence as of its last evaluation. */
  status(): ZoneStatus[] {
    return this.zones.map((z) => z.status());
  }

  /**
   * An operator acknowledges a zone (releases a critical latched with criticalLatch `ack`); returns the
   * events of the evaluation at `mono`. An unknown zone id yields no events.
   */
  acknowledge(zoneId: string, mono: number, ts: number): DetectorEvent[] {
    const z = this.zoneById.get(zoneId);
    return z ? z.acknowledge(mono, ts) : [];
  }
}
