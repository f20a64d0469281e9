import { describe, expect, it } from 'vitest';
import type { ModbusPointDef } from '../../agent/config/model.js';
import { PointTracker } from '../../agent/acquisition/samples.js';

const temp: ModbusPointDef = {
  id: 'rack01.temperature', deviceId: 'rack01', name: 'temperature', table: 'input', address: 1, type: 'int16', wordOrder: 'ABCD',
  scale: 0.1, offset: 0, unit: '°C', kind: 'temperature', faultValues: [0x7fff, 0x8000], validRange: { min: -40, max: 125 }, frozenAfterS: 60,
};
const at = (mono: number) => ({ ts: 1_700_000_000_000 + mono, mono });

describe('sample quality', () => {
  it('good values are scaled and rounded to the point precision', () => {
    const s = new PointTracker(temp).decoded(234, 234, at(0));
    expect(s).toMatchObject({ pointId: 'rack01.temperature', deviceId: 'rack01', value: 23.4, unit: '°C', quality: 'good', mono: 0, ts: 1_700_000_000_000 });
  });

  it('a fault sentinel is sensor_fault with no value', () => {
    const s = new PointTracker(temp).decoded(32767, 0x7fff, at(0));
    expect(s.quality).toBe('sensor_fault');
    expect(s.value).toBeNull();
    expect(s.reason).toBe('fault value 0x7FFF');
  });

  it('outside validRange is out_of_range with no value, the number kept as raw', () => {
    const s = new PointTracker(temp).decoded(1500, 1500, at(0));
    expect(s).toMatchObject({ quality: 'out_of_range', value: null, raw: 150 });
  });

  it('a failed read is comm_error and never a number', () => {
    const s = new PointTracker(temp).failed('E_MODBUS_TIMEOUT: no reply', at(0));
    expect(s).toMatchObject({ quality: 'comm_error', value: null, reason: 'E_MODBUS_TIMEOUT: no reply' });
  });

  it('NaN from a float register is sensor_fault', () => {
    const s = new PointTracker({ ...temp, type: 'float32', scale: 1, faultValues: [] }).decoded(Number.NaN, 0x7fc00000, at(0));
    expect(s).toMatchObject({ quality: 'sensor_fault', value: null });
  });

  it('a value unchanged for frozenAfterS becomes stale, and good again once it moves', () => {
    const t = new PointTracker(temp);
    expect(t.decoded(230, 230, at(0)).quality).toBe('good');
    expect(t.decoded(230, 230, at(59_999)).quality).toBe('good');
    const stale = t.decoded(230, 230, at(60_000));
    expect(stale).toMatchObject({ quality: 'stale', value: 23, reason: 'unchanged for 60 s' });
    expect(t.decoded(231, 231, at(61_000)).quality).toBe('good');
    expect(t.decoded(231, 231, at(121_000)).quality).toBe("stale");
  });

  it('without frozenAfterS a constant value stays good', () => {
    const t = new PointTracker({ ...temp, frozenAfterS: undefined });
    t.decoded(230, 230, at(0));
    expect(t.decoded(230, 230, at(10_000_000)).quality).toBe('good');
  });
});
