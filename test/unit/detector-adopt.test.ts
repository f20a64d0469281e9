/**
 * Detector.adopt (a SIGHUP reload): unchanged zones keep their machine (level) and sensors keep their
 * estimators; changed zones start over, but a sensor whose zone, point and parameters are unchanged
 * keeps its history even then.
 */
import { describe, expect, it } from 'vitest';
import type { Sample } from '../../agent/acquisition/types.js';
import { parseConfig } from '../../agent/config/load.js';
import { Detector } from '../../agent/detection/detector.js';

/** Zone a on `zoneA` (r1 by default), zone b on r2 with `zoneB` as its detection overrides. */
function config(zoneB: string, zoneA = 'r1.temperature') {
  return parseConfig(
    `version: 1
buses:
  - id: rs485
    type: serial
    path: /dev/ttyTEST0
    devices:
      - { id: r1, profile: xy-md02, unitId: 1 }
      - { id: r2, profile: xy-md02, unitId: 2 }
      - { id: r3, profile: xy-md02, unitId: 3 }
detection: { shortWindowS: 20, longWindowS: 40, k: 1 }
zones:
  - { id: a, sensors: [${zoneA}] }
  - { id: b, sensors: [r2.temperature], detection: { ${zoneB} } }
`,
    'test.yaml',
  );
}

const M0 = 5_000_000;
const sample = (point: string, value: number, t: number): Sample => ({ pointId: point, deviceId: point.split('.')[0]!, value, unit: '°C', quality: 'good', ts: 1_700_000_000_000 + t * 1000, mono: M0 + t * 1000 });

function feed(d: Detector, from: number, to: number, temp: (t: number) => number): void {
  for (let t = from; t <= to; t += 2) d.ingest([sample('r1.temperature', temp(t), t), sample('r2.temperature', temp(t), t)]);
}

describe('Detector.adopt', () => {
  it('keeps the level and rates of an unchanged zone, rebuilds a changed one, and the new wiring is live', () => {
    const d = new Detector(config('warnTempC: 27'));
    feed(d, 0, 40, (t) => 28 + t / 60); // above 27 and rising 1 °C/min: both zones in warning
    const before = d.status();
    expect(before.map((z) => z.level)).toEqual(['warning', 'warning']);

    const result = d.adopt(config('warnTempC: 30'));
    expect(result).toEqual({ keptZones: ['a'], newZones: ['b'] });
    const after = d.status();
    expect(after[0]!.level).toBe('warning');
    expect(after[0]!.evidence.sensors[0]!.rateShortCPerMin).toBeCloseTo(before[0]!.evidence.sensors[0]!.rateShortCPerMin!, 6);
    expect(after[0]!.evidence.sensors[0]!.rateShortCPerMin).toBeCloseTo(1, 1);
    // Zone b's parameters changed: a fresh machine and fresh tracks (no history under the new windows).
    expect(after[1]!.level).toBe('normal');
    expect(after[1]!.evidence.sensors[0]!.rateShortCPerMin).toBeNull();

    // The adopted wiring is live: zone a still follows its sensor, and b judges on its new threshold.
    const events = d.ingest([sample('r1.temperature', 29, 42), sample('r2.temperature', 29, 42)]);
    expect(events.filter((e) => e.zone === 'a')).toEqual([]);
    expect(d.status()[1]!.level).toBe('normal');
  });

  it('keeps a sensor track whose zone changed only elsewhere (a sensor added)', () => {
    const base = config('');
    const d = new Detector(base);
    feed(d, 0, 40, (t) => 22 + t / 60);
    const withR3 = config('', 'r1.temperature, r3.temperature');
    expect(d.adopt(withR3)).toEqual({ keptZones: ['b'], newZones: ['a'] });
    d.tick(M0 + 41_000, 0); // the new zone machine's first evaluation (the agent ticks every second)
    const a = d.status()[0]!;
    expect(a.evidence.sensors.find((s) => s.pointId === 'r1.temperature')!.rateShortCPerMin).toBeCloseTo(1, 1);
    expect(a.evidence.sensors.find((s) => s.pointId === 'r3.temperature')!.rateShortCPerMin).toBeNull();
  });
});
