/**
 * Clock sanity end to end (issue 9, item 4 "Clock"): the agent in-process polls the simulator over
 * real Modbus TCP while the test drives a rising trace (a chiller trip: +6 °C/min), with the real
 * outbox and a real influxd. The wall clock the agent sees is the machine's plus an offset the test
 * changes (the machine's own clock is never touched); timesyncd's flag file points at a temp path that
 * does not exist, so the clock starts unsynchronised.
 *
 * - Wall clock two weeks behind, stepped forward mid-ramp (NTP after a boot without an RTC), and
 *   separately a +1 hour step: the zone's rates and the alarm's delay after the ramp's start match a
 *   run without any step, a clock_step event is recorded, and no point in InfluxDB is older than the
 *   run's start on the real wall clock (the points stamped before the step were held and re-dated).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import { systemClock, type Clock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import type { DetectorEvent } from '../../agent/detection/types.js';
import { ModbusTcpServer, SimRack } from '../../firmware-sim/index.js';
import { silentLogger } from '../helpers/agent.js';
import { startInfluxd, type Influxd } from '../helpers/influxd.js';
import { freePort } from '../helpers/ports.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const DAY = 86_400_000;
const RATE_C_PER_S = 0.1; // 6 °C/min: a room after a chiller trip
const SENSORS = ['s1.temperature', 's2.temperature'];

/** The machine's clocks, with a wall-clock offset the test can step (as NTP would). */
class OffsetClock implements Clock {
  offsetMs = 0;
  monoMs = (): number => systemClock.monoMs();
  wallMs = (): number => Date.now() + this.offsetMs;
  setTimeout = systemClock.setTimeout;
  clearTimeout = systemClock.clearTimeout;
  afterPendingIo = systemClock.afterPendingIo;
}

let tmp: TempDir;
let runs = 0;
let influx: Influxd;
let rack: SimRack;
let tcp: ModbusTcpServer;
let port: number;

function configText(db: string, run: string): string {
  return `version: 1
site: lab
gateway: gw1
logging: { samples: false, healthIntervalS: 3600 }
clock: { syncedFile: ${join(tmp.path, 'timesync', 'synchronized')} }
buses:
  - id: plant
    type: tcp
    host: 127.0.0.1
    port: ${port}
    devices:
      - { id: s1, unitId: 1, profile: xy-md02, pollIntervalMs: 250 }
      - { id: s2, unitId: 2, profile: xy-md02, pollIntervalMs: 250 }
detection:
  shortWindowS: 10
  longWindowS: 20
  warnRateCPerMin: 2
  alarmShortRateCPerMin: 3
  alarmLongRateCPerMin: 1
  alarmMinRiseC: 1.5
  dwellS: 2
  staleAfterS: 10
zones:
  - { id: z, sensors: [${SENSORS.join(', ')}] }
outputs:
  outbox: { path: ${join(tmp.path, run, 'outbox.db')}, commitIntervalMs: 100 }
  influx: { url: '${influx.url}', database: ${db}, flushIntervalMs: 200 }
`;
}

interface RunResult {
  /** Monotonic ms from the ramp's start to the zone's alarm. */
  alarmAfterMs: number;
  /** Short-window rates of the sensors in the alarm's evidence, °C/min. */
  rates: number[];
  events: DetectorEvent[];
  realStartMs: number;
  stepRealMs: number | undefined;
}

/**
 * One run: flat for 3 s, then the ramp; `step` (if given) is applied `stepAfterS` into the ramp. Ends
 * at the zone's alarm; stops the agent after InfluxDB caught up.
 */
async function run(name: string, initialOffsetMs: number, step?: { deltaMs: number; afterS: number }): Promise<RunResult & { agent: Agent; db: string }> {
  // A fresh database and outbox per attempt: a retried test must not find the last attempt's points.
  const dir = `${name}_${++runs}`;
  const db = `rg_${dir}`;
  mkdirSync(join(tmp.path, dir), { recursive: true });
  const clock = new OffsetClock();
  clock.offsetMs = initialOffsetMs;
  const agent = createAgent(parseConfig(configText(db, dir), `${name}.yaml`), { logger: silentLogger, clock });
  const events: DetectorEvent[] = [];
  agent.on('detection', (e) => events.push(e));
  for (const p of SENSORS) rack.setValue(p, 22);
  const realStartMs = Date.now();
  await agent.start();
  let rampStartMono = 0;
  let stepRealMs: number | undefined;
  const alarm = new Promise<DetectorEvent>((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`${name}: no alarm within 60 s; events: ${events.map((e) => e.kind === 'zone_level' ? e.level : e.kind).join(', ')}`)), 60_000);
    agent.on('detection', (e) => {
      if (e.kind === 'zone_level' && e.level === 'alarm') {
        clearTimeout(deadline);
        resolve(e);
      }
    });
  });
  // The trace: the test sets the simulator's registers from monotonic time (a real room would too).
  const flatUntil = systemClock.monoMs() + 3000;
  const driver = setInterval(() => {
    const now = systemClock.monoMs();
    if (now < flatUntil) return;
    if (rampStartMono === 0) rampStartMono = now;
    const t = (now - rampStartMono) / 1000;
    for (const p of SENSORS) rack.setValue(p, Math.round((22 + RATE_C_PER_S * t) * 10) / 10);
    if (step && stepRealMs === undefined && t >= step.afterS) {
      clock.offsetMs += step.deltaMs;
      stepRealMs = Date.now();
    }
  }, 50);
  try {
    const e = await alarm;
    if (e.kind !== 'zone_level') throw new Error('unreachable');
    const rates = e.evidence.sensors.map((s) => s.rateShortCPerMin ?? NaN);
    return { agent, db, alarmAfterMs: e.mono - rampStartMono, rates, events, realStartMs, stepRealMs };
  } catch (err) {
    // No alarm: stop this agent here, or it would poll on in this process through the retry.
    await agent.stop();
    throw err;
  } finally {
    clearInterval(driver);
  }
}

/** Every timestamp (epoch ms) InfluxDB holds in `measurement`. */
async function times(db: string, measurement: string): Promise<number[]> {
  const r = await influx.query(`SELECT * FROM ${measurement}`, db);
  return (r.results[0]?.series?.[0]?.values ?? []).map((v) => Number(v[0]));
}

async function settle(agent: Agent): Promise<void> {
  // Everything appended so far (the ramp, the step, the alarm) reached InfluxDB. Acquisition goes on
  // meanwhile, so waiting for a depth of 0 would race the next poll (under load it never wins).
  const target = agent.outputsStats().outbox!.lastSeq;
  await expect.poll(() => agent.outputsStats().outbox?.sinks.influx?.cursor ?? 0, { timeout: 20_000, interval: 100 }).toBeGreaterThanOrEqual(target);
  await agent.stop();
}

let baseline: RunResult;

beforeAll(async () => {
  tmp = await tempDir('rackguard-clock-step-');
  mkdirSync(join(tmp.path, 'timesync')); // timesyncd is "present": its flag file is not (yet)
  influx = await startInfluxd();
  port = await freePort();
  rack = new SimRack({ config: parseConfig(configText('x', 'x').replace(/clock: .*\n/, ''), 'sim.yaml') });
  tcp = new ModbusTcpServer({ rack, port });
  await tcp.start();
}, 60_000);

afterAll(async () => {
  await tcp?.stop();
  await influx?.cleanup();
  await tmp?.cleanup();
});

/** Same rates and alarm timing as without a step; the step is one event; InfluxDB holds nothing older than the run. */
async function checkRun(r: RunResult & { agent: Agent; db: string }, stepMs: number, finalOffsetMs: number): Promise<void> {
  expect(r.stepRealMs).toBeDefined();
  // Rates: the ramp's 6 °C/min, as in the run without a step.
  for (const rate of r.rates) expect(rate).toBeGreaterThan(4.5);
  for (const rate of r.rates) expect(rate).toBeLessThan(7.5);
  for (const [i, rate] of r.rates.entries()) expect(Math.abs(rate - baseline.rates[i]!)).toBeLessThan(1.5);
  // The alarm comes as long after the ramp's start as without the step (poll-cycle jitter aside).
  expect(Math.abs(r.alarmAfterMs - baseline.alarmAfterMs)).toBeLessThan(2500);
  // The zone went normal → … → alarm once, as in the baseline: no extra transitions from the step.
  const levels = (evs: DetectorEvent[]): string[] => evs.filter((e) => e.kind === 'zone_level').map((e) => (e.kind === 'zone_level' ? e.level : ''));
  expect(levels(r.events)).toEqual(levels(baseline.events));
  await settle(r.agent);

  // InfluxDB: no point is older than the run's start on the clock's final time base (the real wall
  // clock at the start plus the offset the agent's clock ended with), and the samples stamped before
  // the step did arrive (held, then re-dated onto that base).
  const floor = r.realStartMs + finalOffsetMs - 1000;
  const env = await times(r.db, 'environment');
  expect(env.length).toBeGreaterThan(20);
  expect(Math.min(...env)).toBeGreaterThanOrEqual(floor);
  const beforeStep = env.filter((t) => t < r.stepRealMs! + finalOffsetMs - 500);
  expect(beforeStep.length).toBeGreaterThan(10);
  const evTimes = await times(r.db, 'events');
  expect(Math.min(...evTimes)).toBeGreaterThanOrEqual(floor);
  // One clock_step event, of the right size.
  const q = await influx.query(`SELECT json FROM events WHERE kind = 'clock_step'`, r.db);
  const steps = (q.results[0]?.series?.[0]?.values ?? []).map((v) => JSON.parse(String(v[1])) as { stepMs: number; redated: number });
  expect(steps).toHaveLength(1);
  expect(Math.abs(steps[0]!.stepMs - stepMs)).toBeLessThan(1000);
  expect(steps[0]!.redated).toBeGreaterThan(0);
}

describe('wall-clock steps during a rising trace', () => {
  it('without a step (the reference): the alarm comes; samples on the unsynchronised clock are held from InfluxDB', async () => {
    const b = await run('baseline', 0);
    try {
      for (const rate of b.rates) expect(rate).toBeGreaterThan(4.5);
      baseline = b;
      // Never synchronised (within unsyncedHoldS): InfluxDB holds nothing at a possibly wrong time.
      expect(b.agent.outputsStats().sinks.influx).toMatchObject({ state: 'held' });
      expect(b.agent.outputsStats().sinks.influx!.depth).toBeGreaterThan(20);
      expect(await times(b.db, 'environment')).toEqual([]);
    } finally {
      await b.agent.stop();
    }
  }, 120_000);

  it('the wall clock starts two weeks behind and NTP steps it forward mid-ramp', async () => {
    const r = await run('behind', -14 * DAY, { deltaMs: 14 * DAY, afterS: 4 });
    // Stopped on a failure too: a retry must not share this process with this attempt's agent.
    await checkRun(r, 14 * DAY, 0).finally(() => r.agent.stop());
  }, 120_000);

  it('an unsynchronised clock stepped +1 hour mid-ramp', async () => {
    const r = await run('hour', 0, { deltaMs: 3_600_000, afterS: 4 });
    await checkRun(r, 3_600_000, 3_600_000).finally(() => r.agent.stop());
  }, 120_000);
});
