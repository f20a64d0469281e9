import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import type { ModbusPointDef } from '../../agent/config/model.js';
import { decodeRaw } from '../../agent/acquisition/decode.js';
import { readRequestPdu, readResponseValues, type Table } from '../../agent/modbus/pdu.js';
import { SimRack, type Transport } from '../../firmware-sim/rack.js';
import { parseScenario } from '../../firmware-sim/scenario.js';

const CONFIG_TEXT = `
version: 1
buses:
  - id: line
    type: serial
    path: /dev/null
    devices:
      - { id: rack01, profile: xy-md02, unitId: 1 }
      - { id: rack02, profile: xy-md02, unitId: 2 }
      - { id: rack09, profile: generic-th-holding, unitId: 9 }
      - id: pdu-a
        unitId: 10
        points:
          - { name: energy, table: holding, address: 0x0100, type: int32, wordOrder: CDAB, scale: 0.01, unit: kWh, faultValues: [0xFFFFFFFF] }
          - { name: current, table: holding, address: 0x0102, type: uint16, scale: 0.1, unit: A, validRange: { min: 0, max: 63 } }
          - { name: breaker_tripped, table: holding, address: 0x0103, type: bit, bit: 3, kind: alarm }
  - id: net
    type: tcp
    host: 127.0.0.1
    devices:
      - { id: chiller1, profile: generic-chiller, unitId: 1 }
zones:
  - { id: a, sensors: [rack01.temperature, rack02.temperature, rack09.temperature] }
chillers:
  - { id: ch1, running: chiller1.running, alarm: chiller1.alarm_code, supplyTemp: chiller1.supply_temp, returnTemp: chiller1.return_temp, zones: [a] }
`;
const config = parseConfig(CONFIG_TEXT, 'test.yaml');
const point = (id: string) => config.points.get(id) as ModbusPointDef;

function makeRack(scenarioText?: string, timeScale = 1) {
  const clock = new VirtualClock();
  const scenario = scenarioText ? parseScenario(scenarioText, 's.yaml', { config }) : undefined;
  const rack = new SimRack({ config, clock, timeScale, ...(scenario ? { scenario } : {}) });
  return { clock, rack };
}

function read(rack: SimRack, transport: Transport, unit: number, table: Table, address: number, quantity: number) {
  const r = rack.handle(transport, unit, readRequestPdu(table, address, quantity));
  return r;
}

function values(rack: SimRack, transport: Transport, unit: number, table: Table, address: number, quantity: number): number[] {
  const r = read(rack, transport, unit, table, address, quantity);
  expect(r.reply).not.toBeNull();
  expect(r.reply![0]! & 0x80).toBe(0);
  return readResponseValues(table, quantity, r.reply!);
}

/** Decodes a point from a read of its own registers, as the agent would. */
function decoded(rack: SimRack, transport: Transport, unit: number, id: string): number {
  const p = point(id);
  const n = p.type === 'int32' || p.type === 'uint32' || p.type === 'float32' ? 2 : 1;
  const regs = values(rack, transport, unit, p.table, p.address, n);
  return decodeRaw(p.type, p.wordOrder, regs, p.bit).value * p.scale + p.offset;
}

describe('SimRack register serving', () => {
  it('serves XY-MD02 input registers that decode to the model values, quantised to 0.1', () => {
    const { clock, rack } = makeRack();
    clock.advance(37_000);
    const regs = values(rack, 'rtu', 1, 'input', 1, 2);
    const t = decodeRaw('int16', 'ABCD', [regs[0]!]).value * 0.1;
    const h = decodeRaw('int16', 'ABCD', [regs[1]!]).value * 0.1;
    expect(t).toBeCloseTo(Math.round(rack.room.inletC('rack01.temperature') * 10) / 10, 9);
    expect(h).toBeCloseTo(Math.round(rack.room.humidity('rack01.temperature') * 10) / 10, 9);
    expect(Math.abs(t - 22)).toBeLessThan(2.2);
    expect(h).toBeGreaterThan(35);
    // rack02 has its own offset and noise.
    expect(decoded(rack, 'rtu', 2, 'rack02.temperature')).toBeCloseTo(Math.round(rack.room.inletC('rack02.temperature') * 10) / 10, 9);
  });

  it('serves registers no point covers as 0, within a served range', () => {
    const { rack } = makeRack();
    const regs = values(rack, 'rtu', 1, 'input', 0, 4);
    expect(regs[0]).toBe(0);
    expect(regs[3]).toBe(0);
    expect(regs[1]).not.toBe(0);
  });

  it('serves the chiller on TCP: running bit, alarm, float32 CDAB temperatures', () => {
    const { clock, rack } = makeRack();
    clock.advance(10_000);
    expect(values(rack, 'tcp', 1, 'discrete', 0, 1)).toEqual([1]);
    expect(decoded(rack, 'tcp', 1, 'chiller1.alarm_code')).toBe(0);
    expect(decoded(rack, 'tcp', 1, 'chiller1.supply_temp')).toBeCloseTo(7, 5);
    expect(decoded(rack, 'tcp', 1, 'chiller1.return_temp')).toBeCloseTo(12, 4);
    // Word order on the wire: low word first. 7.0f = 0x40E00000 → [0x0000, 0x40E0].
    expect(values(rack, 'tcp', 1, 'holding', 2, 2)).toEqual([0x0000, 0x40e0]);
    // The same unit id on RTU is a different device.
    expect(decoded(rack, 'rtu', 1, 'rack01.temperature')).toBeGreaterThan(15);
  });

  it('follows the scenario timeline on the clock, scaled', () => {
    const { clock, rack } = makeRack('name: t\nevents:\n  - { at: 60, chiller: trip }', 10);
    clock.advance(5_900); // 59 s simulated
    expect(values(rack, 'tcp', 1, 'discrete', 0, 1)).toEqual([1]);
    clock.advance(200); // 61 s
    expect(rack.simTimeS()).toBeCloseTo(61, 9);
    expect(values(rack, 'tcp', 1, 'discrete', 0, 1)).toEqual([0]);
    expect(decoded(rack, 'tcp', 1, 'chiller1.alarm_code')).toBe(17);
    clock.advance(18_000); // 241 s: 3 min after the trip, about 5 °C warmer
    rack.sync();
    expect(rack.room.roomC()).toBeGreaterThan(26);
    expect(decoded(rack, 'tcp', 1, 'chiller1.supply_temp')).toBeGreaterThan(8);
  });

  it('serves the generic holding sensor, its status bit and the inline PDU points', () => {
    const { clock, rack } = makeRack();
    clock.advance(3_600_000);
    const regs = values(rack, 'rtu', 9, 'holding', 0, 3);
    expect(decodeRaw('int16', 'ABCD', [regs[0]!]).value * 0.1).toBeCloseTo(Math.round(rack.room.inletC('rack09.temperature') * 10) / 10, 9);
    expect(regs[2]).toBe(1);
    expect(decoded(rack, 'rtu', 10, 'pdu-a.energy')).toBeCloseTo(10_000 + 100, 2); // 100 kW for 1 h
    expect(decoded(rack, 'rtu', 10, 'pdu-a.current')).toBeCloseTo(25.2, 9);
    expect(values(rack, 'rtu', 10, 'holding', 0x0103, 1)).toEqual([0]);
    rack.setValue('pdu-a.breaker_tripped', 1);
    expect(values(rack, 'rtu', 10, 'holding', 0x0103, 1)).toEqual([8]);
    rack.setValue('pdu-a.current', 12.3);
    expect(values(rack, 'rtu', 10, 'holding', 0x0102, 1)).toEqual([123]);
  });

  it('answers protocol errors with the right exceptions, and unknown units with silence', () => {
    const { rack } = makeRack();
    expect(rack.handle('rtu', 1, Buffer.from([0x08, 0, 0, 0, 0])).reply).toEqual(Buffer.from([0x88, 1]));
    expect(read(rack, 'rtu', 1, 'input', 100, 2).reply).toEqual(Buffer.from([0x84, 2]));
    expect(read(rack, 'rtu', 1, 'holding', 1, 2).reply).toEqual(Buffer.from([0x83, 2]));
    expect(read(rack, 'rtu', 1, 'input', 1, 0).reply).toEqual(Buffer.from([0x84, 3]));
    expect(read(rack, 'rtu', 1, 'input', 1, 126).reply).toEqual(Buffer.from([0x84, 3]));
    expect(read(rack, 'rtu', 1, 'input', 0xffff, 2).reply).toEqual(Buffer.from([0x84, 2]));
    expect(read(rack, 'rtu', 42, 'input', 1, 1)).toEqual({ reply: null });
    expect(read(rack, 'tcp', 2, 'holding', 0, 1)).toEqual({ reply: null });
    expect(rack.unknownUnitRequests()).toEqual({ rtu: 1, tcp: 1 });
  });

  it('stores FC6/FC16 writes to holding registers', () => {
    const { rack } = makeRack();
    expect(rack.handle('rtu', 1, Buffer.from([0x06, 0x01, 0x01, 0x00, 0x05])).reply).toEqual(Buffer.from([0x06, 0x01, 0x01, 0x00, 0x05]));
    expect(rack.handle('rtu', 1, Buffer.from([0x10, 0x01, 0x02, 0x00, 0x02, 0x04, 0x00, 0x02, 0xff, 0xfe])).reply).toEqual(
      Buffer.from([0x10, 0x01, 0x02, 0x00, 0x02]),
    );
    expect(values(rack, 'rtu', 1, 'holding', 0x0101, 3)).toEqual([5, 2, 0xfffe]);
    expect(rack.handle('rtu', 1, Buffer.from([0x10, 0x01, 0x02, 0x00, 0x02, 0x03, 0, 0, 0])).reply).toEqual(Buffer.from([0x90, 3]));
    expect(rack.counters().rack01!.writes).toBe(2);
  });
});

describe('SimRack faults', () => {
  it('device faults: silent, crc, exception, late, and none clears', () => {
    const { rack } = makeRack();
    rack.setFault('rack01', { type: 'silent' });
    expect(read(rack, 'rtu', 1, 'input', 1, 2)).toEqual({ reply: null });
    rack.setFault('rack01', { type: 'crc' });
    const crc = read(rack, 'rtu', 1, 'input', 1, 2);
    expect(crc.fault).toBe('crc');
    expect(crc.reply![0]).toBe(4);
    rack.setFault('rack01', { type: 'exception', code: 4 });
    expect(read(rack, 'rtu', 1, 'input', 1, 2).reply).toEqual(Buffer.from([0x84, 4]));
    rack.setFault('rack01', { type: 'late', delayMs: 700 });
    const late = read(rack, 'rtu', 1, 'input', 1, 2);
    expect(late).toMatchObject({ fault: 'late', delayMs: 700 });
    expect(late.reply![0]).toBe(4);
    rack.setFault('rack01', { type: 'none' });
    expect(read(rack, 'rtu', 1, 'input', 1, 2).fault).toBeUndefined();
    // Other devices are unaffected throughout.
    expect(rack.counters().rack01).toEqual({ requests: 5, replies: 4, exceptions: 1, silent: 1, crc: 1, late: 1, writes: 0 });
    expect(() => rack.setFault('nope', { type: 'silent' })).toThrow(/unknown device "nope"/);
  });

  it('device faults come from the scenario timeline', () => {
    const { clock, rack } = makeRack('name: t\nevents:\n  - { at: 10, device: chiller1, fault: exception, code: 6 }\n  - { at: 20, device: chiller1, fault: none }');
    expect(read(rack, 'tcp', 1, 'holding', 0, 1).reply![0]).toBe(3);
    clock.advance(10_000);
    expect(read(rack, 'tcp', 1, 'holding', 0, 1).reply).toEqual(Buffer.from([0x83, 6]));
    clock.advance(10_000);
    expect(read(rack, 'tcp', 1, 'holding', 0, 1).reply![0]).toBe(3);
  });

  it('freeze holds the last served value while the room heats', () => {
    const { clock, rack } = makeRack('name: t\nevents:\n  - { at: 30, sensor: rack01.temperature, fault: freeze }\n  - { at: 40, chiller: trip }');
    clock.advance(29_000);
    const before = values(rack, 'rtu', 1, 'input', 1, 1);
    clock.advance(300_000);
    expect(values(rack, 'rtu', 1, 'input', 1, 1)).toEqual(before);
    expect(decoded(rack, 'rtu', 2, 'rack02.temperature')).toBeGreaterThan(25); // rack02 still follows the room
    rack.setSensorFault('rack01.temperature', { type: 'none' });
    expect(decoded(rack, 'rtu', 1, 'rack01.temperature')).toBeGreaterThan(25);
  });

  it('dead serves the fault sentinel (the first faultValue, else 0x7FFF) and clears the status bit', () => {
    const { rack } = makeRack();
    rack.setSensorFault('rack01.temperature', { type: 'dead' });
    expect(values(rack, 'rtu', 1, 'input', 1, 2)[0]).toBe(0x7fff);
    expect(rack.pointValue('rack01.temperature')).toBeNull();
    rack.setSensorFault('pdu-a.energy', { type: 'dead' }); // faultValues: [0xFFFFFFFF]
    expect(values(rack, 'rtu', 10, 'holding', 0x100, 2)).toEqual([0xffff, 0xffff]);
    rack.setSensorFault('rack09.temperature', { type: 'dead' });
    expect(values(rack, 'rtu', 9, 'holding', 0, 3)).toEqual([0x7fff, expect.any(Number), 0]);
    rack.setSensorFault('pdu-a.current', { type: 'dead' }); // no faultValues
    expect(values(rack, 'rtu', 10, 'holding', 0x102, 1)).toEqual([0x7fff]);
  });

  it('glitch adds one spike to the next served reading only', () => {
    const { rack } = makeRack();
    rack.room.advanceTo(0);
    const normal = decoded(rack, 'rtu', 1, 'rack01.temperature');
    rack.setSensorFault('rack01.temperature', { type: 'glitch', deltaC: 10 });
    expect(decodeRaw('int16', 'ABCD', rack.peekRegisters('rack01.temperature')).value * 0.1).toBeCloseTo(normal + 10, 9); // peek does not consume it
    expect(decoded(rack, 'rtu', 1, 'rack01.temperature')).toBeCloseTo(normal + 10, 9);
    expect(decoded(rack, 'rtu', 1, 'rack01.temperature')).toBeCloseTo(normal, 9);
  });

  it('door events warm the listed devices only', () => {
    const { clock, rack } = makeRack('name: t\nevents:\n  - { at: 10, door: [rack01], deltaC: 3, durationS: 120 }');
    clock.advance(130_000);
    rack.sync();
    const d1 = rack.room.inletC('rack01.temperature') - rack.room.roomC() - rack.room.sensorOffsetC('rack01.temperature');
    const d2 = rack.room.inletC('rack02.temperature') - rack.room.roomC() - rack.room.sensorOffsetC('rack02.temperature');
    expect(d1).toBeGreaterThan(2);
    expect(Math.abs(d2)).toBeLessThan(0.8);
  });
});
