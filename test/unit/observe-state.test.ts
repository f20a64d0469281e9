/** The pure parts behind /api/state and /api/events: bounded histories, event numbering, the state JSON. */
import { describe, expect, it } from 'vitest';
import type { Sample } from '../../agent/acquisition/types.js';
import type { ZoneStatus } from '../../agent/detection/types.js';
import { buildState, EventLog, SensorHistory } from '../../agent/observe/state.js';

const sample = (pointId: string, value: number | null, ts: number, quality: Sample['quality'] = 'good'): Sample => ({ pointId, deviceId: pointId.split('.')[0]!, value, unit: '°C', quality, ts, mono: ts });

function zone(id: string, chillerRunning: boolean): ZoneStatus {
  return {
    zone: id,
    level: 'warning',
    blind: false,
    sinceMono: 1000,
    evidence: {
      sensors: [{ pointId: 'r1.temperature', tempC: 25, status: 'good', rateShortCPerMin: 0.5, rateLongCPerMin: null, etaCriticalS: 1200, flags: [] }],
      chillers: [{ chillerId: 'ch1', running: chillerRunning, alarmCode: 0, supplyTempC: 12, supplyRateCPerMin: 0, corroborates: false, reason: 'running' }],
      agreeingAlarm: 0,
      agreeingCritical: 0,
      k: 2,
      etaCriticalS: null,
    },
  };
}

describe('observe state', () => {
  it('SensorHistory keeps the last good values of its points only, bounded', () => {
    const h = new SensorHistory(['r1.temperature'], 3);
    h.add([sample('r1.temperature', 20, 1), sample('r2.temperature', 30, 1)]);
    h.add([sample('r1.temperature', null, 2, 'comm_error')]);
    for (let i = 3; i <= 6; i++) h.add([sample('r1.temperature', 20 + i, i)]);
    expect(h.of('r1.temperature')).toEqual([[4, 24], [5, 25], [6, 26]]);
    expect(h.of('r2.temperature')).toEqual([]);
  });

  it('EventLog numbers events from 1 across evictions and answers "after seq"', () => {
    const log = new EventLog(2);
    for (let i = 0; i < 3; i++) log.push({ kind: 'output', ts: '', tsMs: i, message: `m${i}` });
    expect(log.all().map((e) => e.seq)).toEqual([2, 3]);
    expect(log.after(2).map((e) => e.message)).toEqual(['m2']);
  });

  it('buildState: a chiller in two zones appears once; sinceS from the monotonic clock; outbox without its sinks', () => {
    const st = buildState({
      site: 's',
      gateway: 'g',
      version: '1',
      zones: [zone('a', true), zone('b', true)],
      health: [],
      outputs: { outbox: undefined, sinks: {} },
      ready: false,
      history: new SensorHistory([]),
      wallMs: Date.UTC(2030, 0, 1),
      monoMs: 6000,
    });
    expect(st.chillers).toHaveLength(1);
    expect(st.zones.map((z) => z.sinceS)).toEqual([5, 5]);
    expect(st.ts).toBe('2030-01-01T00:00:00.000Z');
    expect(st.outputs).toEqual({ outbox: null, sinks: {} });
    expect(st.zones[0]!.sensors[0]).toMatchObject({ point: 'r1.temperature', rateShortCPerMin: 0.5, history: [] });
  });
});
