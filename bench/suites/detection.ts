/**
 * Detection quality (issue #3). Traces come from the simulator's thermal model through the agent's
 * own decoding (VirtualRackSampler), on the reference rack polled every 5 s with up to 1.5 s of
 * jitter: a week of normal operation (compressor cycling, door openings, glitches, a frozen and a
 * dead sensor), failures at 0.12, 0.6, 1, 2 and 5 °C/min, a single-sensor runaway and a
 * containment-door burst on three adjacent racks. rackguard's detector and three per-sensor
 * baselines run side by side on the same traces.
 */
import { join } from 'node:path';
import type { Config } from '../../agent/config/model.js';
import { loadConfigFile } from '../../agent/config/load.js';
import { RateEstimator } from '../../agent/detection/estimator.js';
import { replay } from '../../agent/detection/replay.js';
import { parseTrace, traceText, type TraceBatch } from '../../agent/detection/trace.js';
import { packageRoot } from '../../agent/paths.js';
import { VirtualRackSampler } from '../../firmware-sim/sampler.js';
import { parseScenario } from '../../firmware-sim/scenario.js';
import type { Figures } from '../results.js';

const POLL_MS = 5000;
const JITTER_MS = 1500;
const DAY_S = 86_400;
const NORMAL_DAYS = 7;
const ONSET_S = 3600;

interface Case {
  name: string;
  kind: 'failure' | 'benign';
  durationS: number;
  yaml: string;
}

function scenarioYaml(name: string, durationS: number, room: string, events: string[]): string {
  return `name: ${name}\ndescription: bench\ndurationS: ${durationS}\nseed: 7\nroom: ${room}\nevents:\n${events.map((e) => `  - ${e}`).join('\n') || '  []'}\n`.replace('events:\n  []', 'events: []');
}

/** A week of normal days: door openings on one or two racks, glitches, a frozen and a dead sensor. */
function normalWeek(): Case {
  const events: string[] = [];
  let seed = 12345;
  const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const racks = ['rack01', 'rack02', 'rack03', 'rack04', 'rack05', 'rack06', 'rack07', 'rack08', 'rack09'];
  for (let day = 0; day < NORMAL_DAYS; day++) {
    for (let i = 0; i < 12; i++) {
      const at = Math.round(day * DAY_S + rnd() * DAY_S);
      const r = Math.floor(rnd() * 8);
      const which = rnd() < 0.3 ? [racks[r]!, racks[r + 1]!] : [racks[r]!];
      events.push(`{ at: ${at}, door: [${which.join(', ')}], deltaC: ${(1 + rnd() * 0.5).toFixed(2)}, durationS: ${Math.round(60 + rnd() * 120)} }`);
    }
    for (let i = 0; i < 6; i++) {
      events.push(`{ at: ${Math.round(day * DAY_S + rnd() * DAY_S)}, sensor: ${racks[Math.floor(rnd() * 9)]}.temperature, fault: glitch, deltaC: ${rnd() < 0.5 ? 8 : -6} }`);
    }
  }
  events.push(`{ at: ${2 * DAY_S}, sensor: rack06.temperature, fault: freeze }`, `{ at: ${2 * DAY_S + 6 * 3600}, sensor: rack06.temperature, fault: none }`);
  events.push(`{ at: ${4 * DAY_S}, sensor: rack02.temperature, fault: dead }`, `{ at: ${4 * DAY_S + 3 * 3600}, sensor: rack02.temperature, fault: none }`);
  events.sort((a, b) => Number(/at: (\d+)/.exec(a)![1]) - Number(/at: (\d+)/.exec(b)![1]));
  return { name: 'normal_week', kind: 'benign', durationS: NORMAL_DAYS * DAY_S, yaml: scenarioYaml('normal-week', NORMAL_DAYS * DAY_S, '{ itLoadKw: 100, initialRiseCPerMin: 2 }', events) };
}

/**
 * A failure whose initial rise is `rate` °C/min: a trip loses all cooling (initialRiseCPerMin is the
 * trip's rate); a partial loss keeps `capacity` of a plant sized exactly to the IT load
 * (coolingMaxKw = itLoadKw), so the lost fraction sets the rate. The slow case heats a room whose
 * structure absorbs little (small leak), or it would settle before any threshold.
 */
function failure(rate: number, event: string, durationS: number, room = '{ itLoadKw: 100, initialRiseCPerMin: 2, coolingMaxKw: 100 }'): Case {
  const name = `failure_${String(rate).replace('.', '_')}c`;
  return { name, kind: 'failure', durationS, yaml: scenarioYaml(name, durationS, room, [`{ at: ${ONSET_S}, ${event} }`]) };
}

export const CASES: Case[] = [
  normalWeek(),
  failure(0.12, 'chiller: partial, capacity: 0.94, reportRunning: true', ONSET_S + 4 * 3600, '{ itLoadKw: 100, initialRiseCPerMin: 2, coolingMaxKw: 100, leakKwPerK: 0.4 }'),
  failure(0.6, 'chiller: partial, capacity: 0.7, reportRunning: true', ONSET_S + 2 * 3600),
  failure(1, 'chiller: partial, capacity: 0.5, reportRunning: true', ONSET_S + 2 * 3600),
  failure(2, 'chiller: trip', ONSET_S + 3600),
  failure(5, 'chiller: trip', ONSET_S + 3600, '{ itLoadKw: 100, initialRiseCPerMin: 5 }'),
  { name: 'single_sensor_runaway', kind: 'benign', durationS: ONSET_S + 3600, yaml: scenarioYaml('runaway', ONSET_S + 3600, '{ itLoadKw: 100 }', [`{ at: ${ONSET_S}, sensor: rack03.temperature, fault: drift, rateCPerMin: 4 }`]) },
  { name: 'door_burst_3_racks', kind: 'benign', durationS: ONSET_S + 3600, yaml: scenarioYaml('door-burst', ONSET_S + 3600, '{ itLoadKw: 100 }', [`{ at: ${ONSET_S}, door: [rack01, rack02, rack03], deltaC: 4, durationS: 300 }`]) },
];

// ---------------------------------------------------------------------------------------------
// Baselines: per sensor; the zone "fires" as soon as any one of its sensors does.

interface Fired {
  alarm: number[];
  critical: number[];
}

type Baseline = (series: Map<string, Array<[number, number]>>) => Fired;

/** Episodes: start times of runs where `cond` held for at least `forS` (a run ends when it stops holding). */
function episodes(points: Array<[number, boolean]>, forS: number): number[] {
  const out: number[] = [];
  let since: number | null = null;
  let fired = false;
  for (const [t, c] of points) {
    if (!c) {
      since = null;
      fired = false;
      continue;
    }
    since ??= t;
    if (!fired && t - since >= forS) {
      out.push(t);
      fired = true;
    }
  }
  return out;
}

function lsSlopePerMin(pts: Array<[number, number]>, from: number, to: number, i0: number, i1: number): number | null {
  let n = 0, st = 0, sv = 0, stt = 0, stv = 0;
  for (let i = i0; i <= i1; i++) {
    const [t, v] = pts[i]!;
    if (t < from || t > to) continue;
    const x = t - to;
    n++; st += x; sv += v; stt += x * x; stv += x * v;
  }
  const den = n * stt - st * st;
  if (n < 3 || den === 0) return null;
  return ((n * stv - st * sv) / den) * 60;
}

const fixed32: Baseline = (series) => ({
  alarm: [...series.values()].flatMap((pts) => episodes(pts.map(([t, v]) => [t, v >= 32]), 30)),
  critical: [],
});

const delta3in5: Baseline = (series) => ({
  alarm: [...series.values()].flatMap((pts) => {
    const cond: Array<[number, boolean]> = [];
    let j = 0;
    for (const [t, v] of pts) {
      while (j < pts.length && pts[j]![0] < t - 300) j++;
      cond.push([t, v - pts[j]![1] >= 3]);
    }
    return episodes(cond, 0);
  }),
  critical: [],
});

const prometheus: Baseline = (series) => {
  const alarm: number[] = [];
  const critical: number[] = [];
  for (const pts of series.values()) {
    const a: Array<[number, boolean]> = [];
    const c: Array<[number, boolean]> = [];
    let j2 = 0;
    let j10 = 0;
    for (let i = 0; i < pts.length; i++) {
      const t = pts[i]![0];
      while (pts[j2]![0] < t - 120) j2++;
      while (pts[j10]![0] < t - 600) j10++;
      const d2 = lsSlopePerMin(pts, t - 120, t, j2, i);
      const d10 = lsSlopePerMin(pts, t - 600, t, j10, i);
      a.push([t, d2 !== null && d2 > 1]);
      // predict_linear(x[10m], 600) = value of the 10 min fit 600 s ahead.
      let predicted = false;
      if (d10 !== null) {
        let sum = 0, n = 0;
        for (let k = j10; k <= i; k++) { sum += pts[k]![1] - (d10 / 60) * (pts[k]![0] - t); n++; }
        predicted = sum / n + (d10 / 60) * 600 > 35;
      }
      c.push([t, predicted]);
    }
    alarm.push(...episodes(a, 60));
    critical.push(...episodes(c, 60));
  }
  return { alarm: alarm.sort((x, y) => x - y), critical: critical.sort((x, y) => x - y) };
};

const BASELINES: Record<string, Baseline> = { fixed32_30s: fixed32, delta3_5min: delta3in5, prometheus: prometheus };

// ---------------------------------------------------------------------------------------------

function medianCrossing(config: Config, batches: TraceBatch[], threshold: number): number | null {
  const latest = new Map<string, number>();
  for (const b of batches) {
    for (const s of b.samples) if (s.value !== null && s.quality === 'good') latest.set(s.pointId, s.value); else latest.delete(s.pointId);
    for (const z of config.zones) {
      const temps = z.sensors.map((id) => latest.get(id)).filter((v): v is number => v !== undefined).sort((a, b) => a - b);
      if (temps.length === 0) continue;
      const m = temps.length % 2 ? temps[temps.length >> 1]! : (temps[temps.length / 2 - 1]! + temps[temps.length / 2]!) / 2;
      if (m >= threshold) return b.timeS;
    }
  }
  return null;
}

/**
 * One rate estimator alone: a million samples at 5 s on a 10 min window, a slope query every tenth.
 * Its O(1) amortised bound is proved by counting in test/unit/estimator.test.ts; this is the speed.
 */
function estimatorSamplesPerS(): number {
  const n = 1_000_000;
  const est = new RateEstimator(600_000, 0.5);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    est.add(i * 5000, 22 + Math.sin(i / 50));
    if (i % 10 === 0) est.slopePerMin();
  }
  return Math.round(n / ((performance.now() - t0) / 1000));
}

const r1 = (x: number | null): number | null => (x === null ? null : Math.round(x * 10) / 10);

export async function run(): Promise<Figures> {
  const config = loadConfigFile(join(packageRoot(), 'config', 'rackguard.example.yaml'));
  const sensorIds = new Set(config.zones.flatMap((z) => z.sensors));
  const out: Figures = {};
  let replayRows = 0;
  let replayMs = 0;
  for (const c of CASES) {
    const scenario = parseScenario(c.yaml, c.name, { config });
    const sampler = new VirtualRackSampler({ config, scenario, pollIntervalMs: POLL_MS, jitterMs: JITTER_MS });
    const text = traceText(sampler.run(c.durationS));
    // Replay exactly as `rackguard replay` does: parse the CSV, run the detector. Timed together.
    const t0 = performance.now();
    const batches = [...parseTrace(text, config, { source: c.name })];
    const result = replay(config, batches);
    replayMs += performance.now() - t0;
    replayRows += result.rows;

    const firstAt = (level: string): number | null => result.events.find((e) => e.event.kind === 'zone_level' && e.event.level === level)?.timeS ?? null;
    const count = (level: string): number => result.events.filter((e) => e.event.kind === 'zone_level' && e.event.level === level).length;
    const days = c.durationS / DAY_S;
    const series = new Map<string, Array<[number, number]>>();
    for (const b of batches) for (const s of b.samples) if (sensorIds.has(s.pointId) && s.value !== null && s.quality === 'good') {
      let arr = series.get(s.pointId);
      if (!arr) series.set(s.pointId, (arr = []));
      arr.push([b.timeS, s.value]);
    }
    const p = `${c.name}.`;
    if (c.kind === 'failure') {
      const alarmAt = firstAt('alarm');
      const criticalAt = firstAt('critical');
      const m32 = medianCrossing(config, batches, 32);
      const m35 = medianCrossing(config, batches, 35);
      out[`${p}alarm_after_s`] = r1(alarmAt === null ? null : alarmAt - ONSET_S);
      out[`${p}critical_after_s`] = r1(criticalAt === null ? null : criticalAt - ONSET_S);
      out[`${p}median_32c_after_s`] = r1(m32 === null ? null : m32 - ONSET_S);
      out[`${p}median_35c_after_s`] = r1(m35 === null ? null : m35 - ONSET_S);
      out[`${p}lead_before_32c_s`] = r1(alarmAt !== null && m32 !== null ? m32 - alarmAt : null);
      out[`${p}lead_before_35c_s`] = r1(criticalAt !== null && m35 !== null ? m35 - criticalAt : null);
      for (const [name, baseline] of Object.entries(BASELINES)) {
        const f = baseline(series);
        const a = f.alarm.find((t) => t >= ONSET_S) ?? null;
        const cr = f.critical.find((t) => t >= ONSET_S) ?? null;
        out[`${p}baseline_${name}_alarm_after_s`] = r1(a === null ? null : a - ONSET_S);
        if (name === 'prometheus') out[`${p}baseline_${name}_critical_after_s`] = r1(cr === null ? null : cr - ONSET_S);
      }
    } else {
      // Benign runs: for the week, episodes per day; for the short runs, episodes in the run.
      const per = c.name === 'normal_week' ? days : 1;
      const unit = c.name === 'normal_week' ? '_per_day' : '';
      out[`${p}warning_episodes${unit}`] = r1(count('warning') / per);
      out[`${p}alarm_episodes${unit}`] = r1(count('alarm') / per);
      out[`${p}critical_episodes${unit}`] = r1(count('critical') / per);
      for (const [name, baseline] of Object.entries(BASELINES)) {
        const f = baseline(series);
        out[`${p}baseline_${name}_alarm_episodes${unit}`] = r1(f.alarm.length / per);
        if (name === 'prometheus') out[`${p}baseline_${name}_critical_episodes${unit}`] = r1(f.critical.length / per);
      }
    }
  }
  out.replay_rows_per_s = Math.round(replayRows / (replayMs / 1000));
  out.estimator_samples_per_s = estimatorSamplesPerS();
  out.replay_rows = replayRows;
  out.targets = 'zero alarm/critical on normal_week and single_sensor_runaway; no critical on door_burst_3_racks; failure_2c alarm_after_s <= 60; lead_before_35c_s >= 300 at <= 2 C/min; critical before 35 C at 5 C/min';
  return out;
}
