/**
 * Drills: a firmware-sim scenario run through the simulator's thermal model, the agent's own
 * decoding and the production detector, on virtual time. The result feeds the HTML report and the
 * headline numbers: time from failure to alarm and to critical, and the lead before the zone median
 * reaches 32 °C (from the first alarm) and 35 °C (from the first critical).
 */
import { planActions, type PlannedAction } from '../agent/actions/plan.js';
import type { Config } from '../agent/config/model.js';
import { replay, type TimedEvent } from '../agent/detection/replay.js';
import type { TraceBatch } from '../agent/detection/trace.js';
import { VirtualRackSampler } from '../firmware-sim/sampler.js';
import type { Scenario } from '../firmware-sim/scenario.js';

export interface ZoneHeadline {
  zone: string;
  alarmAtS: number | null;
  criticalAtS: number | null;
  median32AtS: number | null;
  median35AtS: number | null;
}

export interface Headline {
  /** First chiller failure event of the scenario (trip or partial), s. Null for a scenario without one. */
  onsetS: number | null;
  alarmAfterS: number | null;
  criticalAfterS: number | null;
  /** Seconds from the first alarm to the zone median reaching 32 °C; null if either never happens. */
  lead32S: number | null;
  /** Seconds from the first critical to the zone median reaching 35 °C. */
  lead35S: number | null;
  zones: ZoneHeadline[];
}

export interface Series {
  pointId: string;
  /** Seconds and °C (null for a sample without a value). */
  t: number[];
  v: Array<number | null>;
}

export interface DrillResult {
  scenario: { name: string; description: string; durationS: number };
  zones: Array<{ id: string; sensors: string[]; warnTempC: number; alarmTempC: number; criticalTempC: number }>;
  series: Series[];
  events: TimedEvent[];
  headline: Headline;
  rows: number;
  /** The actions that would fire, in order, with their planned times; absent without an `actions:` section. */
  actions?: PlannedAction[];
}

export interface DrillOptions {
  config: Config;
  scenario: Scenario;
  /** Default: the scenario's durationS, else 3600. */
  durationS?: number;
  pollIntervalMs?: number;
  jitterMs?: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Merges the sampler's per-device batches that share a time into one, as a trace file groups them,
 * so a drill and a replay of its trace evaluate the zones at the same moments and agree exactly.
 */
function* byTime(batches: Iterable<TraceBatch>): Generator<TraceBatch> {
  let cur: TraceBatch | undefined;
  for (const b of batches) {
    if (cur && b.timeS === cur.timeS) {
      cur.samples.push(...b.samples);
      continue;
    }
    if (cur) yield cur;
    cur = { timeS: b.timeS, samples: [...b.samples] };
  }
  if (cur) yield cur;
}

export function runDrill(opts: DrillOptions): DrillResult {
  const { config, scenario } = opts;
  const durationS = opts.durationS ?? scenario.durationS ?? 3600;
  const sampler = new VirtualRackSampler({
    config,
    scenario,
    ...(opts.pollIntervalMs !== undefined ? { pollIntervalMs: opts.pollIntervalMs } : {}),
    ...(opts.jitterMs !== undefined ? { jitterMs: opts.jitterMs } : {}),
  });
  const zoneSensors = new Set(config.zones.flatMap((z) => z.sensors));
  const series = new Map<string, Series>();
  for (const id of zoneSensors) series.set(id, { pointId: id, t: [], v: [] });
  const latest = new Map<string, number>();
  const heads = new Map<string, ZoneHeadline>(config.zones.map((z) => [z.id, { zone: z.id, alarmAtS: null, criticalAtS: null, median32AtS: null, median35AtS: null }]));

  const result = replay(config, byTime(sampler.run(durationS)), (b) => {
    let touched = false;
    for (const s of b.samples) {
      const ser = series.get(s.pointId);
      if (!ser) continue;
      touched = true;
      ser.t.push(b.timeS);
      ser.v.push(s.value);
      if (s.value !== null && s.quality === 'good') latest.set(s.pointId, s.value);
      else latest.delete(s.pointId);
    }
    if (!touched) return;
    for (const z of config.zones) {
      const temps = z.sensors.map((id) => latest.get(id)).filter((v): v is number => v !== undefined);
      if (temps.length === 0) continue;
      const m = median(temps);
      const h = heads.get(z.id)!;
      if (h.median32AtS === null && m >= 32) h.median32AtS = b.timeS;
      if (h.median35AtS === null && m >= 35) h.median35AtS = b.timeS;
    }
  });

  for (const { timeS, event } of result.events) {
    if (event.kind !== 'zone_level') continue;
    const h = heads.get(event.zone)!;
    if (event.level === 'alarm' && h.alarmAtS === null) h.alarmAtS = timeS;
    if (event.level === 'critical' && h.criticalAtS === null) h.criticalAtS = timeS;
  }
  const zones = [...heads.values()];
  const first = (f: (z: ZoneHeadline) => number | null): number | null => {
    const xs = zones.map(f).filter((x): x is number => x !== null);
    return xs.length ? Math.min(...xs) : null;
  };
  const onset = scenario.events.find((e) => e.kind === 'chiller' && e.action !== 'restore')?.at ?? null;
  const alarmAt = first((z) => z.alarmAtS);
  const criticalAt = first((z) => z.criticalAtS);
  const m32 = first((z) => z.median32AtS);
  const m35 = first((z) => z.median35AtS);
  const after = (t: number | null): number | null => (t === null || onset === null ? null : t - onset);
  return {
    scenario: { name: scenario.name, description: scenario.description, durationS },
    zones: config.zones.map((z) => ({ id: z.id, sensors: z.sensors, warnTempC: z.detection.warnTempC, alarmTempC: z.detection.alarmTempC, criticalTempC: z.detection.criticalTempC })),
    series: [...series.values()],
    events: result.events,
    headline: {
      onsetS: onset,
      alarmAfterS: after(alarmAt),
      criticalAfterS: after(criticalAt),
      lead32S: alarmAt !== null && m32 !== null ? m32 - alarmAt : null,
      lead35S: criticalAt !== null && m35 !== null ? m35 - criticalAt : null,
      zones,
    },
    rows: result.rows,
    ...(config.actions ? { actions: planActions(config.actions, config.zones, result.events) } : {}),
  };
}
