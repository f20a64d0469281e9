import { describe, expect, it } from 'vitest';
import type { Quality, Sample } from '../../agent/acquisition/types.js';
import { parseConfig } from '../../agent/config/load.js';
import { Detector } from '../../agent/detection/detector.js';
import type { DetectorEvent, Level } from '../../agent/detection/types.js';

/** A serial bus with four XY-MD02 sensors, a chiller on Modbus TCP, one zone `z` of the four. */
function config(detection = '', sensors = 4) {
  const devices = Array.from({ length: sensors }, (_, i) => `      - { id: r${i + 1}, profile: xy-md02, unitId: ${i + 1} }`).join('\n');
  const zoneSensors = Array.from({ length: sensors }, (_, i) => `r${i + 1}.temperature`).join(', ');
  return parseConfig(
    `version: 1
buses:
  - id: rs485
    type: serial
    path: /dev/ttyTEST0
    devices:
${devices}
  - id: plant
    type: tcp
    host: 127.0.0.1
    devices:
      - { id: chiller1, profile: generic-chiller, unitId: 1 }
detection: { ${detection} }
zones:
  - id: z
    sensors: [${zoneSensors}]
chillers:
  - id: ch1
    running: chiller1.running
    alarm: chiller1.alarm_code
    supplyTemp: chiller1.supply_temp
    zones: [z]
`,
    'test.yaml',
  );
}

/** A reading: a temperature, a non-good quality, or null for no sample at all. */
type Reading = number | Exclude<Quality, 'good'> | null;

interface World {
  /** Sensor i (0-based) at time t, seconds. */
  temp(i: number, t: number): Reading;
  chiller?(t: number): { running?: number; alarm?: number; supply?: number };
}

interface Ev {
  t: number;
  e: DetectorEvent;
}

const M0 = 10_000_000; // monotonic ms at t = 0: not zero, as on a real gateway
const W0 = Date.UTC(2026, 2, 1);

/**
 * Drives a Detector on virtual time: every 5 s a batch of samples (sensors, then the chiller points),
 * every other second a tick, as the agent does live.
 */
class Rig {
  readonly det: Detector;
  readonly sensors: number;
  t = -1;
  readonly events: Ev[] = [];

  constructor(detection = '', sensors = 4) {
    this.det = new Detector(config(detection, sensors));
    this.sensors = sensors;
  }

  /** Runs up to and including second `toS`; returns the events of this run. */
  run(toS: number, world: World): Ev[] {
    const out: Ev[] = [];
    for (let t = this.t + 1; t <= toS; t++) {
      const mono = M0 + t * 1000;
      const ts = W0 + t * 1000;
      let evs: DetectorEvent[];
      if (t % 5 === 0) {
        const batch: Sample[] = [];
        for (let i = 0; i < this.sensors; i++) {
          const r = world.temp(i, t);
          if (r === null) continue;
          const id = `r${i + 1}`;
          const good = typeof r === 'number';
          batch.push({ pointId: `${id}.temperature`, deviceId: id, value: good ? Math.round(r * 10) / 10 : null, unit: '°C', quality: good ? 'good' : r, ts, mono });
        }
        const c = { running: 1, alarm: 0, supply: 7, ...world.chiller?.(t) };
        batch.push({ pointId: 'chiller1.running', deviceId: 'chiller1', value: c.running, unit: '', quality: 'good', ts, mono });
        batch.push({ pointId: 'chiller1.alarm_code', deviceId: 'chiller1', value: c.alarm, unit: '', quality: 'good', ts, mono });
        batch.push({ pointId: 'chiller1.supply_temp', deviceId: 'chiller1', value: c.supply, unit: '°C', quality: 'good', ts, mono });
        evs = this.det.ingest(batch);
      } else {
        evs = this.det.tick(mono, ts);
      }
      for (const e of evs) out.push({ t, e });
    }
    this.t = toS;
    this.events.push(...out);
    return out;
  }

  ack(t: number): Ev[] {
    const evs = this.det.acknowledge('z', M0 + t * 1000, W0 + t * 1000).map((e) => ({ t, e }));
    this.events.push(...evs);
    return evs;
  }

  level(): Level {
    return this.det.status()[0]!.level;
  }
}

/** `630 warning→alarm`, `700 blind`, `1500 unblind`. */
function summary(evs: readonly Ev[]): string[] {
  return evs.map(({ t, e }) => (e.kind === 'zone_level' ? `${t} ${e.from}→${e.level}` : `${t} ${e.blind ? 'blind' : 'unblind'}`));
}

function reasons(evs: readonly Ev[]): string[] {
  return evs.map(({ e }) => e.reason);
}

/** Flat world: every sensor at `base` (a number or one per sensor), overridden by `f` where it returns a value. */
function world(base: number | number[], f: (i: number, t: number) => Reading | undefined = () => undefined, chiller?: World['chiller']): World {
  return {
    temp: (i, t) => {
      const v = f(i, t);
      return v !== undefined ? v : typeof base === 'number' ? base : base[i]!;
    },
    ...(chiller ? { chiller } : {}),
  };
}

/** Sensors 0 and 1 step from 31.8 to 32.2 °C at 600 s: the alarm temperature, with no rate to speak of. */
const twoAtAlarmTemp = (i: number, t: number): Reading | undefined => (i < 2 && t >= 600 ? 32.2 : undefined);

describe('zone: normal → warning', () => {
  it('on one sensor at warnTempC', () => {
    const rig = new Rig();
    const evs = rig.run(1000, world(25, (i, t) => (i === 0 && t >= 600 ? 27.2 : undefined)));
    expect(summary(evs)).toEqual(['600 normal→warning']);
    expect(reasons(evs)).toEqual(['1 sensor anomalous: r1 at 27.2 °C ≥ 27 °C']);
  });

  it('on one sensor rising at warnRateCPerMin over the long window', () => {
    const rig = new Rig();
    // 0.4 °C/min from t = 0: the long window is covered (300 s of 600) at t = 300, rate exactly 0.4.
    const evs = rig.run(400, world(22, (i, t) => (i === 0 ? 22 + (0.4 * t) / 60 : undefined)));
    expect(summary(evs)).toEqual(['300 normal→warning']);
    expect(reasons(evs)).toEqual(['1 sensor anomalous: r1 rising 0.40 °C/min ≥ 0.33 °C/min over 600 s']);
  });

  it('on a stale sensor (no good sample for staleAfterS)', () => {
    const rig = new Rig();
    const evs = rig.run(600, world(22, (i, t) => (i === 1 && t >= 200 ? null : undefined)));
    // Last good sample at 195 s: stale at 255 s.
    expect(summary(evs)).toEqual(['255 normal→warning']);
    expect(reasons(evs)).toEqual(['1 sensor anomalous: r2 stale (no good sample for 60 s)']);
    expect(evs[0]!.e.evidence.sensors[1]).toMatchObject({ pointId: 'r2.temperature', status: 'stale', tempC: null, flags: ['stale'] });
  });

  it('on a comm_error only once it has lasted staleAfterS', () => {
    const rig = new Rig();
    const evs = rig.run(600, world(22, (i, t) => (i === 1 && t >= 200 ? 'comm_error' : undefined)));
    expect(summary(evs)).toEqual(['255 normal→warning']);
  });

  it('on a sensor fault, a frozen reading or an out-of-range value, at once', () => {
    for (const [q, text] of [['sensor_fault', 'sensor_fault'], ['stale', 'frozen'], ['out_of_range', 'out_of_range']] as const) {
      const rig = new Rig();
      const evs = rig.run(600, world(22, (i, t) => (i === 2 && t >= 300 ? q : undefined)));
      expect(summary(evs)).toEqual(['300 normal→warning']);
      expect(reasons(evs)).toEqual([`1 sensor anomalous: r3 ${text}`]);
      expect(evs[0]!.e.evidence.sensors[2]!.flags).toEqual(['fault']);
    }
  });

  it('a sensor that never reports is not anomalous during the start-up grace', () => {
    const rig = new Rig();
    const evs = rig.run(120, world(22, (i) => (i === 3 ? null : undefined)));
    // Grace starts at the first evaluation (t = 0): stale at 60 s.
    expect(summary(evs)).toEqual(['60 normal→warning']);
    expect(reasons(evs)).toEqual(['1 sensor anomalous: r4 stale (no good sample for 60 s)']);
  });
});

describe('zone: warning → alarm', () => {
  it('after the dwell, not before', () => {
    const rig = new Rig();
    expect(summary(rig.run(599, world(31.8, twoAtAlarmTemp)))).toEqual(['0 normal→warning']);
    expect(rig.run(629, world(31.8, twoAtAlarmTemp))).toEqual([]);
    expect(rig.level()).toBe('warning');
    const evs = rig.run(700, world(31.8, twoAtAlarmTemp));
    expect(summary(evs)).toEqual(['630 warning→alarm']);
    expect(reasons(evs)).toEqual(['2 of 4 sensors at ≥ 32 °C for 30 s: r1 32.2, r2 32.2 °C']);
    expect(evs[0]!.e.mono).toBe(M0 + 630_000);
    expect(evs[0]!.e.ts).toBe(W0 + 630_000);
  });

  it('the dwell restarts when the condition lapses', () => {
    const rig = new Rig();
    // The agreement holds 600–620, lapses at 625, holds again from 630.
    const evs = rig.run(700, world(31.8, (i, t) => (i < 2 && t >= 600 && t !== 625 ? 32.2 : undefined)));
    expect(summary(evs)).toEqual(['0 normal→warning', '660 warning→alarm']);
  });

  it('one sensor alone never lifts the zone above warning (k = 2)', () => {
    const rig = new Rig();
    const evs = rig.run(1200, world(31.8, (i, t) => (i === 0 && t >= 600 ? 32.2 : undefined)));
    expect(summary(evs)).toEqual(['0 normal→warning']);
  });

  it('on the short-window rate of k sensors', () => {
    const rig = new Rig();
    // r1 and r2 ramp at 3 °C/min from t = 600 (from 22 °C): the short slope passes 1 °C/min at 635 s,
    // the rise above the long-window mean passes alarmMinRiseC (2.3 °C) at 650 s; dwell 30 s.
    const ramp = (i: number, t: number): Reading | undefined => (i < 2 && t > 600 ? 22 + (3 * (t - 600)) / 60 : undefined);
    const evs = rig.run(700, world(22, ramp));
    expect(summary(evs)).toEqual(['680 normal→warning', '680 warning→alarm']);
    expect(reasons(evs)[1]).toMatch(/^2 of 4 sensors rising ≥ 1 °C\/min for 30 s: r1 \d\.\d\d, r2 \d\.\d\d °C\/min$/);
  });
});

describe('zone: a door opening is not a failure', () => {
  it('two racks rising 2 °C at > 1 °C/min for a minute stay below alarm (rise guard)', () => {
    // Without the guard the same door is an alarm: the test would catch its removal.
    const unguarded = new Rig('alarmMinRiseC: 0');
    const doorShape = (i: number, t: number): Reading | undefined => {
      if (i >= 2 || t < 600) return undefined;
      const up = 2 * (1 - Math.exp(-(Math.min(t, 720) - 600) / 20));
      return 22 + (t <= 720 ? up : up * Math.exp(-(t - 720) / 20));
    };
    expect(summary(unguarded.run(1200, world(22, doorShape))).map((x) => x.split(' ')[1])).toContain('warning→alarm');
    const rig = new Rig();
    // A door opens at 600 s: r1 and r2 rise by 2 °C with a 20 s time constant, then it closes at 720 s.
    const evs = rig.run(1200, world(22, doorShape));
    expect(evs).toEqual([]);
    // The same shape 4 °C high is a real alarm (the containment-door burst): the guard is about size.
    const big = new Rig();
    const burst = (i: number, t: number): Reading | undefined => (i < 2 && t >= 600 ? 22 + 4 * (1 - Math.exp(-(t - 600) / 30)) : undefined);
    expect(summary(big.run(900, world(22, burst))).map((x) => x.split(' ')[1])).toContain('warning→alarm');
  });
});

/** A real cooling failure at 900 s: every sensor ramps at 1.5 °C/min from 22 °C (offsets 0–0.9 °C). */
const failure = (i: number, t: number): number => 22 + 0.3 * i + (t > 900 ? (1.5 * (t - 900)) / 60 : 0);

describe('zone: alarm → critical', () => {
  it('on a predicted ETA that the long window confirms', () => {
    const rig = new Rig();
    const evs = rig.run(1500, { temp: failure });
    // 35 °C is reached at about 2000 s: critical comes 13 minutes ahead.
    expect(summary(evs)).toEqual(['1035 normal→warning', '1035 warning→alarm', '1220 alarm→critical']);
    expect(reasons(evs)[0]).toBe('warning on the way to alarm');
    const crit = evs[2]!.e;
    expect(crit.reason).toMatch(/^4 of 4 sensors reaching 35 °C within 600 s for 30 s: r1 in \d+ s \(long-window ETA \d+ s\), r2 .*; zone ETA \d+ s$/);
    // Every sensor predicted and rising on the long window; zone ETA = 2nd smallest ETA.
    const etas = crit.evidence.sensors.map((s) => s.etaCriticalS!);
    expect(crit.evidence.etaCriticalS).toBe([...etas].sort((a, b) => a - b)[1]);
    for (const s of crit.evidence.sensors) {
      expect(s.flags).toContain('critical_eta');
      expect(s.flags).toContain('alarm_long_rate');
      expect(s.rateLongCPerMin!).toBeGreaterThanOrEqual(0.33);
      expect(s.etaCriticalS!).toBeLessThanOrEqual(600);
    }
  });

  it('on k readings at criticalTempC', () => {
    const rig = new Rig();
    const f = (i: number, t: number): Reading | undefined => (i < 2 && t >= 900 ? 35.1 : twoAtAlarmTemp(i, t));
    const evs = rig.run(1000, world(31.8, f));
    expect(summary(evs)).toEqual(['0 normal→warning', '630 warning→alarm', '930 alarm→critical']);
    expect(reasons(evs)[2]).toBe('2 of 4 sensors at ≥ 35 °C for 30 s: r1 35.1, r2 35.1 °C; zone ETA 0 s');
  });

  it('not for a containment-door burst: steep, saturating rise on 3 sensors', () => {
    // The simulator's door: up to +deltaC with a 30 s time constant while open, then back.
    for (const [deltaC, openS] of [
      [3, 120],
      [4, 300],
      [3, 600],
    ] as const) {
      const door = (i: number, t: number): Reading | undefined => {
        if (i >= 3 || t <= 900) return undefined;
        const dt = t - 900;
        const peak = deltaC * (1 - Math.exp(-Math.min(dt, openS) / 30));
        return 22 + 0.3 * i + (dt <= openS ? peak : peak * Math.exp(-(dt - openS) / 30));
      };
      const rig = new Rig();
      const evs = rig.run(3000, world([22, 22.3, 22.6, 22.9], door));
      // Steep enough for an alarm on the short rate (that is what the alarm level is for), never critical.
      expect(summary(evs).map((s) => s.split(' ')[1])).toEqual(['normal→warning', 'warning→alarm', 'alarm→normal']);
      expect(evs.every(({ e }) => e.kind !== 'zone_level' || e.level !== 'critical')).toBe(true);
    }
  });
});

describe('zone: chiller corroboration', () => {
  const cases: [string, (t: number) => { running?: number; alarm?: number; supply?: number }, string][] = [
    ['a trip', (t) => ({ running: t >= 300 ? 0 : 1 }), 'chiller ch1 tripped'],
    ['an alarm code', (t) => ({ alarm: t >= 300 ? 17 : 0 }), 'chiller ch1 alarm code 17'],
    ['supply water rising', (t) => ({ supply: 7 + (0.5 * t) / 60 }), 'chiller ch1 supply water rising 0.50 °C/min'],
  ];
  for (const [name, chiller, why] of cases) {
    it(`shortens the dwell to corroboratedDwellS on ${name}`, () => {
      const rig = new Rig();
      const evs = rig.run(700, world(31.8, twoAtAlarmTemp, chiller));
      expect(summary(evs)).toEqual(['0 normal→warning', '600 warning→alarm']);
      expect(reasons(evs)[1]).toBe(`2 of 4 sensors at ≥ 32 °C: r1 32.2, r2 32.2 °C; ${why}`);
    });
  }

  it('uses corroboratedDwellS, not zero', () => {
    const rig = new Rig('corroboratedDwellS: 10');
    const evs = rig.run(700, world(31.8, twoAtAlarmTemp, (t) => ({ running: t >= 300 ? 0 : 1 })));
    expect(summary(evs)).toEqual(['0 normal→warning', '610 warning→alarm']);
    expect(reasons(evs)[1]).toBe('2 of 4 sensors at ≥ 32 °C for 10 s: r1 32.2, r2 32.2 °C; chiller ch1 tripped');
  });

  it('a chiller whose status is stale does not corroborate', () => {
    const rig = new Rig();
    // The chiller reports a trip once at 300 s and then nothing readable.
    const det = rig.det;
    const evs = rig.run(700, world(31.8, twoAtAlarmTemp, (t) => ({ running: t === 300 ? 0 : 1 })));
    expect(summary(evs)).toEqual(['0 normal→warning', '630 warning→alarm']);
    expect(det.status()[0]!.evidence.chillers[0]).toMatchObject({ chillerId: 'ch1', running: true, corroborates: false });
  });

  it('lowers k to 1 only with corroborationLowersK', () => {
    const oneHot = (i: number, t: number): Reading | undefined => (i === 0 && t >= 600 ? 32.2 : undefined);
    const trip = (t: number) => ({ running: t >= 300 ? 0 : 1 });
    const without = new Rig();
    expect(summary(without.run(1200, world(31.8, oneHot, trip)))).toEqual(['0 normal→warning']);
    const withK = new Rig('corroborationLowersK: true');
    const evs = withK.run(1200, world(31.8, oneHot, trip));
    expect(summary(evs)).toEqual(['0 normal→warning', '600 warning→alarm']);
    expect(reasons(evs)[1]).toBe('1 of 4 sensors at ≥ 32 °C: r1 32.2 °C; chiller ch1 tripped (k lowered to 1)');
    expect(evs[1]!.e.evidence.k).toBe(1);
  });

  it('a real failure with a chiller trip: no dwell, the lower short rate, and no long-window wait for critical', () => {
    // The same failure without a trip is alarmed at 1035 s and critical at 1220 s (see above).
    const rig = new Rig();
    const evs = rig.run(1500, { temp: failure, chiller: (t) => ({ running: t > 900 ? 0 : 1, alarm: t > 900 ? 17 : 0 }) });
    expect(summary(evs)).toEqual(['946 normal→warning', '946 warning→alarm', '976 alarm→critical']);
    expect(reasons(evs)[1]).toMatch(/^4 of 4 sensors rising ≥ 0\.5 °C\/min: .*; chiller ch1 tripped, alarm code 17$/);
    // Critical on the short-window ETA while the 600 s window has not caught up yet.
    const crit = evs[2]!.e;
    expect(crit.evidence.sensors.every((x) => x.rateLongCPerMin === null || x.rateLongCPerMin < 0.33)).toBe(true);
  });

  it('corroboratedShortRateCPerMin can be raised back to the uncorroborated rate', () => {
    const rig = new Rig('corroboratedShortRateCPerMin: 1');
    const evs = rig.run(1500, { temp: failure, chiller: (t) => ({ running: t > 900 ? 0 : 1 }) });
    expect(summary(evs).slice(0, 2)).toEqual(['975 normal→warning', '975 warning→alarm']);
  });
});

describe('zone: clearing', () => {
  it('waits clearDelayS after the condition is gone, then steps to the supported level', () => {
    const rig = new Rig();
    rig.run(899, world(30.5, twoAtAlarmTemp));
    expect(rig.level()).toBe('alarm');
    // r3 and r4 sit at 30.5 °C. 30.9 °C: alarm condition gone and below alarmTempC − hysteresisC (31);
    // still ≥ warnTempC.
    const drop = (i: number, t: number): Reading | undefined => (i < 2 ? (t >= 900 ? 30.9 : 32.2) : undefined);
    expect(rig.run(1199, world(30.5, drop))).toEqual([]);
    const evs = rig.run(1300, world(30.5, drop));
    expect(summary(evs)).toEqual(['1200 alarm→warning']);
    expect(reasons(evs)[0]).toBe(
      'alarm cleared: alarm condition gone and fewer than 2 sensors at ≥ 31 °C for 300 s; still warning: 4 sensors anomalous: r1 at 30.9 °C ≥ 27 °C; r2 at 30.9 °C ≥ 27 °C; r3 at 30.5 °C ≥ 27 °C; r4 at 30.5 °C ≥ 27 °C',
    );
  });

  it('hysteresis: an alarm stays while k sensors hover within hysteresisC below alarmTempC', () => {
    const rig = new Rig();
    rig.run(899, world(30.5, twoAtAlarmTemp));
    // 31.5 °C: below alarmTempC, but not below 31: no clear, however long.
    const hover = (i: number, t: number): Reading | undefined => (i < 2 ? (t >= 1500 ? 30.9 : t >= 900 ? 31.5 : 32.2) : undefined);
    expect(rig.run(1499, world(30.5, hover))).toEqual([]);
    expect(summary(rig.run(2000, world(30.5, hover)))).toEqual(['1800 alarm→warning']);
  });

  it('hysteresis: a reading hovering at warnTempC does not flap', () => {
    const rig = new Rig();
    // r1 alternates 26.9 / 27.1 for an hour, then sits at 26.5 (still within 1 °C), then 25.9.
    const hover = (i: number, t: number): Reading | undefined =>
      i === 0 ? (t < 600 ? 24.5 : t < 4200 ? (t % 10 === 0 ? 27.1 : 26.9) : t < 6000 ? 26.5 : 25.9) : undefined;
    const evs = rig.run(7000, world(24, hover));
    expect(summary(evs)).toEqual(['600 normal→warning', '6300 warning→normal']);
    expect(reasons(evs)[1]).toBe('warning cleared: no sensor anomalous and all sensors below 26 °C for 300 s');
  });

  it('critical latch auto: clears by the rules', () => {
    const rig = new Rig();
    const f = (i: number, t: number): Reading | undefined => (i < 2 ? (t >= 1200 ? 33.5 : t >= 900 ? 35.1 : t >= 600 ? 32.2 : undefined) : undefined);
    const evs = rig.run(2000, world(31.8, f));
    expect(summary(evs)).toEqual(['0 normal→warning', '630 warning→alarm', '930 alarm→critical', '1500 critical→alarm']);
    expect(reasons(evs)[3]).toBe(
      'critical cleared: critical condition gone and fewer than 2 sensors at ≥ 34 °C for 300 s; still alarm: 2 of 4 sensors at ≥ 32 °C for 30 s: r1 33.5, r2 33.5 °C',
    );
  });

  it('critical latch ack: stays until acknowledged, then follows the rules', () => {
    const f = (i: number, t: number): Reading | undefined => (i < 2 ? (t >= 1200 ? 33.5 : t >= 900 ? 35.1 : t >= 600 ? 32.2 : undefined) : undefined);
    const late = new Rig('criticalLatch: ack');
    late.run(2000, world(31.8, f));
    expect(late.level()).toBe('critical');
    // Acknowledged after the clear conditions have held for clearDelayS: it clears at once.
    const evs = late.ack(2000);
    expect(summary(evs)).toEqual(['2000 critical→alarm']);
    expect(reasons(evs)[0]).toMatch(/^critical cleared: critical condition gone and fewer than 2 sensors at ≥ 34 °C for 300 s \(acknowledged\); still alarm: /);

    const early = new Rig('criticalLatch: ack');
    early.run(1000, world(31.8, f));
    expect(early.ack(1000)).toEqual([]);
    expect(summary(early.run(2000, world(31.8, f)))).toEqual(['1500 critical→alarm']);
  });

  it('acknowledging an unknown zone, or a zone that is not critical, changes nothing', () => {
    const rig = new Rig('criticalLatch: ack');
    rig.run(100, world(22));
    expect(rig.det.acknowledge('nope', M0 + 100_000, W0)).toEqual([]);
    expect(rig.ack(100)).toEqual([]);
    expect(rig.level()).toBe('normal');
  });
});

describe('zone: quorum', () => {
  it('loses quorum and recovers: blind events, the level held while blind', () => {
    const rig = new Rig();
    rig.run(699, world(30.5, twoAtAlarmTemp));
    expect(rig.level()).toBe('alarm');
    // r1–r3 stop answering at 700; they return at 1500, below the alarm band.
    const f = (i: number, t: number): Reading | undefined => (i < 3 && t >= 700 && t < 1500 ? 'comm_error' : t >= 1500 && i < 2 ? 30.9 : twoAtAlarmTemp(i, t));
    const evs = rig.run(2000, world(30.5, f));
    expect(summary(evs)).toEqual(['700 blind', '1500 unblind', '1800 alarm→warning']);
    expect(reasons(evs).slice(0, 2)).toEqual([
      'quorum lost: 1 of 4 sensors good, 2 needed (r1 comm_error, r2 comm_error, r3 comm_error); holding alarm',
      'quorum back: 4 of 4 sensors good, 2 needed',
    ]);
    const blind = evs[0]!.e;
    expect(blind).toMatchObject({ kind: 'zone_blind', zone: 'z', blind: true, level: 'warning' });
    expect(rig.det.status()[0]!.blind).toBe(false);
  });

  it('a blind zone cannot escalate above warning', () => {
    const rig = new Rig();
    // Only r4 is readable; it goes to 40 °C rising fast.
    const f = (i: number, t: number): Reading | undefined => (i < 3 ? 'comm_error' : 22 + Math.max(0, t - 300) / 10);
    const evs = rig.run(600, world(22, f));
    expect(summary(evs)).toEqual(['0 blind', '60 normal→warning']);
  });

  it('…unless a corroborating chiller lowers k to 1', () => {
    const rig = new Rig('corroborationLowersK: true');
    const f = (i: number, t: number): Reading | undefined => (i < 3 ? 'comm_error' : t >= 300 ? 32.2 : 31.8);
    const evs = rig.run(600, world(22, f, () => ({ running: 0 })));
    expect(summary(evs)).toEqual(['0 blind', '0 normal→warning', '300 warning→alarm']);
  });
});

describe('zone: events', () => {
  it('one sensor at 60 °C rising 10 °C/min: warning only', () => {
    const rig = new Rig();
    const wild = (i: number, t: number): Reading | undefined => (i === 0 && t > 300 ? 22 + (10 * (t - 300)) / 60 : undefined);
    const evs = rig.run(900, world(22, wild));
    expect(summary(evs)).toEqual(['330 normal→warning']);
    const s = rig.det.status()[0]!;
    expect(s.level).toBe('warning');
    const r1 = s.evidence.sensors[0]!;
    expect(r1.tempC!).toBeGreaterThan(60);
    expect(r1.rateShortCPerMin!).toBeCloseTo(10, 1);
    expect(r1.flags).toEqual(['warn_rate', 'warn_temp', 'alarm_short_rate', 'alarm_long_rate', 'alarm_temp', 'critical_eta', 'critical_temp']);
    expect(s.evidence).toMatchObject({ agreeingAlarm: 1, agreeingCritical: 1, k: 2, etaCriticalS: null });
  });

  it('several levels crossed at one evaluation: one event per step, in order, at the same time', () => {
    const rig = new Rig('dwellS: 0');
    const evs = rig.run(10, world(35.5));
    expect(summary(evs)).toEqual(['0 normal→warning', '0 warning→alarm', '0 alarm→critical']);
    expect(reasons(evs)).toEqual([
      '4 sensors anomalous: r1 at 35.5 °C ≥ 27 °C; r2 at 35.5 °C ≥ 27 °C; r3 at 35.5 °C ≥ 27 °C; r4 at 35.5 °C ≥ 27 °C',
      '4 of 4 sensors at ≥ 32 °C: r1 35.5, r2 35.5, r3 35.5, r4 35.5 °C',
      '4 of 4 sensors at ≥ 35 °C: r1 35.5, r2 35.5, r3 35.5, r4 35.5 °C',
    ]);
    expect(new Set(evs.map(({ e }) => e.mono))).toEqual(new Set([M0]));
  });

  it('evidence: every sensor, the chillers, agreeing counts and the zone ETA', () => {
    const rig = new Rig();
    const evs = rig.run(700, world(31.8, twoAtAlarmTemp, (t) => ({ running: t >= 300 ? 0 : 1, alarm: t >= 300 ? 17 : 0, supply: 7 })));
    const alarm = evs.find(({ e }) => e.kind === 'zone_level' && e.level === 'alarm')!.e;
    expect(alarm).toMatchObject({ kind: 'zone_level', zone: 'z', from: 'warning', level: 'alarm', mono: M0 + 600_000, ts: W0 + 600_000 });
    const ev = alarm.evidence;
    expect(ev.sensors.map((s) => [s.pointId, s.tempC, s.status, s.flags])).toEqual([
      ['r1.temperature', 32.2, 'good', ['warn_temp', 'alarm_temp']],
      ['r2.temperature', 32.2, 'good', ['warn_temp', 'alarm_temp']],
      ['r3.temperature', 31.8, 'good', ['warn_temp']],
      ['r4.temperature', 31.8, 'good', ['warn_temp']],
    ]);
    for (const s of ev.sensors) {
      expect(s.rateShortCPerMin).not.toBeNull();
      expect(s.rateLongCPerMin).not.toBeNull();
    }
    expect(ev.chillers).toEqual([
      { chillerId: 'ch1', running: false, alarmCode: 17, supplyTempC: 7, supplyRateCPerMin: 0, corroborates: true, reason: 'chiller ch1 tripped, alarm code 17' },
    ]);
    expect(ev).toMatchObject({ agreeingAlarm: 2, agreeingCritical: 0, k: 2 });
    // r1 and r2 rose 0.4 °C: a positive short slope gives them an ETA, the flat r3 and r4 have none.
    expect(ev.sensors[2]!.etaCriticalS).toBeNull();
    expect(ev.etaCriticalS).toBe(Math.max(ev.sensors[0]!.etaCriticalS!, ev.sensors[1]!.etaCriticalS!));
  });

  it('a wall-clock step changes nothing but the events’ ts', () => {
    const a = new Rig();
    const b = new Rig();
    const run = (rig: Rig, step: boolean): DetectorEvent[] => {
      const out: DetectorEvent[] = [];
      for (let t = 0; t <= 1500; t++) {
        const mono = M0 + t * 1000;
        const ts = W0 + t * 1000 - (step && t >= 950 ? 3_600_000 : 0);
        if (t % 5 === 0) {
          out.push(...rig.det.ingest([0, 1, 2, 3].map((i) => ({ pointId: `r${i + 1}.temperature`, deviceId: `r${i + 1}`, value: failure(i, t), unit: '°C', quality: 'good' as const, ts, mono }))));
        } else out.push(...rig.det.tick(mono, ts));
      }
      return out;
    };
    const plain = run(a, false);
    const stepped = run(b, true);
    expect(plain.length).toBe(3);
    expect(stepped.map((e) => ({ ...e, ts: 0 }))).toEqual(plain.map((e) => ({ ...e, ts: 0 })));
  });
});

describe('detector: a healthy week', () => {
  it('replays 7 days of a healthy room without a single event', () => {
    const rig = new Rig('', 10);
    const det = rig.det;
    let seed = 12345;
    const rand = (): number => {
      seed = (seed * 1664525 + 1013904223) >>> 0;
      return seed / 4294967296;
    };
    const offsets = Array.from({ length: 10 }, () => (rand() * 2 - 1) * 1.5);
    const events: DetectorEvent[] = [];
    const batch: Sample[] = Array.from({ length: 13 }, () => ({ pointId: '', deviceId: '', value: 0, unit: '', quality: 'good' as const, ts: 0, mono: 0 }));
    const ids = [...Array.from({ length: 10 }, (_, i) => `r${i + 1}.temperature`), 'chiller1.running', 'chiller1.alarm_code', 'chiller1.supply_temp'];
    let samples = 0;
    for (let t = 0; t <= 7 * 86_400; t += 5) {
      const mono = M0 + t * 1000;
      // Compressor cycling ±0.5 °C over 10 min, 0.05 °C noise, 0.1 °C quantisation, a rare spike.
      const cyc = 0.5 * Math.sin((2 * Math.PI * t) / 600);
      for (let i = 0; i < 13; i++) {
        const s = batch[i]!;
        s.pointId = ids[i]!;
        s.mono = mono;
        s.ts = W0 + t * 1000;
        if (i < 10) {
          const spike = rand() < 0.0005 ? 40 : 0;
          s.value = Math.round((22 + offsets[i]! + cyc + 0.05 * (rand() + rand() + rand() - 1.5) + spike) * 10) / 10;
        } else s.value = i === 10 ? 1 : i === 11 ? 0 : 7 + 0.2 * cyc;
      }
      samples += 13;
      events.push(...det.ingest(batch));
      for (let k = 1; k < 5; k++) events.push(...det.tick(mono + k * 1000, W0));
    }
    expect(samples).toBeGreaterThan(1_500_000);
    expect(events).toEqual([]);
    // Its speed is a benchmark figure (`npm run bench -- detection`: replay throughput), not asserted here.
  });
});
