import { describe, expect, it } from 'vitest';
import { RoomModel, resolveRoomParams } from '../../firmware-sim/thermal.js';

const SENSORS = ['rack01.temperature', 'rack02.temperature', 'rack03.temperature'];

/** Room-node heating rate over [fromS, fromS + spanS], °C/min. */
function rateCPerMin(m: RoomModel, fromS: number, spanS = 60): number {
  m.advanceTo(fromS);
  const t0 = m.roomC();
  m.advanceTo(fromS + spanS);
  return ((m.roomC() - t0) / spanS) * 60;
}

describe('resolveRoomParams', () => {
  it('derives the thermal mass from a 2 °C/min initial rise by default', () => {
    const p = resolveRoomParams();
    expect(p.thermalMassKjPerK).toBeCloseTo(3000, 9);
    expect(p.coolingMaxKw).toBeCloseTo(130, 9);
    expect(resolveRoomParams({ itLoadKw: 50, initialRiseCPerMin: 5 }).thermalMassKjPerK).toBeCloseTo(600, 9);
    expect(resolveRoomParams({ thermalMassKjPerK: 1234 }).thermalMassKjPerK).toBe(1234);
  });
});

describe('RoomModel', () => {
  it('holds the setpoint in normal operation, inlets within offset ± cycling ± noise', () => {
    const m = new RoomModel({}, SENSORS, 7);
    const p = m.params;
    let maxDev = 0;
    let minCyc = 0;
    let maxCyc = 0;
    for (let t = 0; t <= 3600; t += 5) {
      m.advanceTo(t);
      expect(Math.abs(m.roomC() - p.setpointC)).toBeLessThan(1e-9);
      for (const s of SENSORS) {
        const dev = m.inletC(s) - p.setpointC - m.sensorOffsetC(s);
        maxDev = Math.max(maxDev, Math.abs(dev));
        minCyc = Math.min(minCyc, dev);
        maxCyc = Math.max(maxCyc, dev);
      }
    }
    expect(maxDev).toBeLessThan(p.cyclingAmplitudeC + 5 * p.noiseC);
    // The cycling is really there (a naive rate alarm would see it).
    expect(maxCyc - minCyc).toBeGreaterThan(1.6 * p.cyclingAmplitudeC);
    expect(m.coolingKw()).toBeCloseTo(p.itLoadKw, 6);
    expect(m.chiller()).toMatchObject({ running: true, alarmCode: 0, supplyC: 7, capacityFraction: 1 });
    expect(m.chiller().returnC).toBeCloseTo(12, 6);
  });

  it('after a trip heats at the configured initial rate, then slower', () => {
    for (const rise of [2, 4]) {
      const m = new RoomModel({ initialRiseCPerMin: rise }, SENSORS, 1);
      m.advanceTo(600);
      m.applyEvent({ type: 'chiller-trip' });
      const initial = rateCPerMin(m, 600);
      expect(Math.abs(initial - rise) / rise).toBeLessThan(0.1);
      const later = rateCPerMin(m, 600 + 1200);
      expect(later).toBeLessThan(0.5 * initial);
      expect(later).toBeGreaterThan(0);
    }
  });

  it('reports the trip on the chiller: stopped, alarm 17, supply drifting up at about 0.5 °C/min toward 18 °C', () => {
    const m = new RoomModel({}, SENSORS, 1);
    m.advanceTo(100);
    m.applyEvent({ type: 'chiller-trip' });
    m.advanceTo(160);
    const c = m.chiller();
    expect(c).toMatchObject({ running: false, alarmCode: 17, capacityFraction: 0 });
    expect(c.supplyC - 7).toBeGreaterThan(0.45);
    expect(c.supplyC - 7).toBeLessThan(0.55);
    expect(c.returnC).toBeCloseTo(c.supplyC, 9); // no heat removed
    m.advanceTo(100 + 4 * 3600);
    expect(m.chiller().supplyC).toBeGreaterThan(17.5);
    expect(m.chiller().supplyC).toBeLessThanOrEqual(18);
  });

  it('a silent partial loss heats much slower, keeps reporting running, and lets the supply creep up', () => {
    const trip = new RoomModel({}, SENSORS, 1);
    trip.applyEvent({ type: 'chiller-trip' });
    const partial = new RoomModel({}, SENSORS, 1);
    partial.applyEvent({ type: 'chiller-partial', capacity: 0.7, reportRunning: true });
    const tripRate = rateCPerMin(trip, 0, 300);
    const partialRate = rateCPerMin(partial, 0, 300);
    expect(partialRate).toBeGreaterThan(0);
    expect(partialRate).toBeLessThan(0.2 * tripRate);
    partial.advanceTo(3 * 3600);
    const c = partial.chiller();
    expect(c).toMatchObject({ running: true, alarmCode: 0, capacityFraction: 0.7 });
    expect(c.supplyC).toBeGreaterThan(9);
    expect(c.supplyC).toBeLessThan(11);
  });

  it('recovers toward the setpoint after a restore', () => {
    const m = new RoomModel({}, SENSORS, 1);
    m.applyEvent({ type: 'chiller-trip' });
    m.advanceTo(600);
    const hot = m.roomC();
    expect(hot).toBeGreaterThan(27);
    m.applyEvent({ type: 'chiller-restore' });
    m.advanceTo(660);
    expect(m.roomC()).toBeLessThan(hot);
    m.advanceTo(3600);
    expect(Math.abs(m.roomC() - 22)).toBeLessThan(0.01);
    expect(m.chiller()).toMatchObject({ running: true, alarmCode: 0 });
  });

  it('is deterministic for a seed, and the seed matters', () => {
    const read = (seed: number) => {
      const m = new RoomModel({}, SENSORS, seed);
      const out: number[] = [];
      m.applyEvent({ type: 'door', sensors: ['rack02.temperature'], deltaC: 2, durationS: 60 });
      for (let t = 0; t < 900; t += 7) {
        m.advanceTo(t);
        if (t === 301) m.applyEvent({ type: 'chiller-trip' });
        for (const s of SENSORS) out.push(m.inletC(s), m.humidity(s));
      }
      return out;
    };
    expect(read(42)).toEqual(read(42));
    expect(read(42)).not.toEqual(read(43));
  });

  it('reads do not disturb the model: a reading depends only on time and sensor', () => {
    const a = new RoomModel({}, SENSORS, 3);
    const b = new RoomModel({}, SENSORS, 3);
    for (let t = 0; t < 100; t++) {
      a.advanceTo(t + 0.5);
      a.inletC('rack01.temperature');
      a.inletC('rack01.temperature');
    }
    b.advanceTo(100);
    a.advanceTo(100);
    expect(a.inletC('rack03.temperature')).toBe(b.inletC('rack03.temperature'));
  });

  it('draws per-sensor offsets within ±1.5 °C, and takes explicit ones', () => {
    const ids = Array.from({ length: 50 }, (_, i) => `s${i}.temperature`);
    const m = new RoomModel({}, ids, 9);
    const offsets = ids.map((id) => m.sensorOffsetC(id));
    for (const o of offsets) expect(Math.abs(o)).toBeLessThanOrEqual(1.5);
    expect(new Set(offsets).size).toBe(ids.length);
    const fixed = new RoomModel({ sensorOffsetsC: { 's1.temperature': 0.3 } }, ids, 9);
    expect(fixed.sensorOffsetC('s1.temperature')).toBe(0.3);
    expect(fixed.sensorOffsetC('s2.temperature')).toBe(m.sensorOffsetC('s2.temperature'));
  });

  it('gives a door bump to the listed sensors only, rising and decaying with a ~30 s time constant', () => {
    const quiet = { noiseC: 0, cyclingAmplitudeC: 0, sensorOffsetMaxC: 0 };
    const m = new RoomModel(quiet, SENSORS, 1);
    m.advanceTo(100);
    m.applyEvent({ type: 'door', sensors: ['rack01.temperature'], deltaC: 3, durationS: 120 });
    m.advanceTo(130);
    expect(m.inletC('rack01.temperature') - 22).toBeGreaterThan(3 * 0.55);
    expect(m.inletC('rack01.temperature') - 22).toBeLessThan(3 * 0.7);
    expect(m.inletC('rack02.temperature')).toBe(22);
    m.advanceTo(220);
    expect(m.inletC('rack01.temperature') - 22).toBeGreaterThan(2.9);
    m.advanceTo(250);
    expect(m.inletC('rack01.temperature') - 22).toBeLessThan(1.5);
    m.advanceTo(600);
    expect(m.inletC('rack01.temperature') - 22).toBeLessThan(0.01);
  });

  it('keeps absolute humidity: 45 %RH at the setpoint, lower when hotter', () => {
    const m = new RoomModel({ noiseC: 0, cyclingAmplitudeC: 0, sensorOffsetMaxC: 0 }, SENSORS, 1);
    expect(m.humidity('rack01.temperature')).toBeCloseTo(45, 9);
    m.applyEvent({ type: 'chiller-trip' });
    m.advanceTo(120);
    // Magnus: es(T) = 6.112·exp(17.62·T / (243.12 + T)) hPa; RH = 45 % × es(22) / es(T).
    const es = (t: number) => 6.112 * Math.exp((17.62 * t) / (243.12 + t));
    const t = m.inletC('rack01.temperature');
    expect(t).toBeGreaterThan(25.5);
    expect(m.humidity('rack01.temperature')).toBeCloseTo((45 * es(22)) / es(t), 9);
    expect(m.humidity('rack01.temperature')).toBeLessThan(38);
  });

  it('rejects unknown sensors', () => {
    const m = new RoomModel({}, SENSORS, 1);
    expect(() => m.inletC('nope')).toThrow(/unknown sensor "nope"/);
  });
});
