/**
 * Interop with a Modbus implementation we did not write: the agent reads Debian's pymodbus RTU
 * server over a real socat pty pair and must decode every type and word order to the values below,
 * which were computed by hand from the register contents.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import { parseConfig } from '../../agent/config/load.js';
import { SampleLog, batchOf, silentLogger } from '../helpers/agent.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { startPymodbusServer, type PymodbusServer } from '../helpers/pymodbus.js';

let pty: PtyPair;
let server: PymodbusServer;
let agent: Agent;
let log: SampleLog;

beforeAll(async () => {
  pty = await startPtyPair();
  server = await startPymodbusServer({
    port: pty.b,
    units: {
      // XY-MD02: input 1 = 23.5 °C, input 2 = 45.1 %RH.
      1: { input: { 1: 235, 2: 451 } },
      // Holding-register T/H: -5.5 °C is -55 = 0xFFC9; 60.2 %RH; status bit 0 set.
      2: { holding: { 0: 0xffc9, 1: 602, 2: 0b101 } },
      // Every 32-bit order: 7.0 = 0x40E00000, -12.5 = 0xC1480000, 0x12345678 = 305419896, -100 = 0xFFFFFF9C.
      3: {
        holding: {
          10: 0x40e0, 11: 0x0000, // float32 ABCD 7.0
          12: 0x0000, 13: 0xc148, // float32 CDAB -12.5
          14: 0x3412, 15: 0x7856, // uint32 BADC 305419896
          16: 0x9cff, 17: 0xffff, // int32 DCBA -100 (bytes D C B A = 9C FF FF FF)
          40: 0x7fff, // a fault sentinel
        },
        coil: { 3: 1 },
        discrete: { 0: 0, 1: 1 },
      },
    },
  });
  const config = parseConfig(
    `
version: 1
buses:
  - id: line
    type: serial
    path: ${pty.a}
    devices:
      - { id: th1, unitId: 1, profile: xy-md02, pollIntervalMs: 200 }
      - { id: th2, unitId: 2, profile: generic-th-holding, pollIntervalMs: 200 }
      - id: mix
        unitId: 3
        pollIntervalMs: 200
        points:
          - { name: f_abcd, table: holding, address: 10, type: float32, wordOrder: ABCD }
          - { name: f_cdab, table: holding, address: 12, type: float32, wordOrder: CDAB }
          - { name: u_badc, table: holding, address: 14, type: uint32, wordOrder: BADC }
          - { name: i_dcba, table: holding, address: 16, type: int32, wordOrder: DCBA }
          - { name: dead, table: holding, address: 40, type: int16, scale: 0.1, faultValues: [0x7FFF] }
          - { name: coil3, table: coil, address: 3, type: bool }
          - { name: di0, table: discrete, address: 0, type: bool }
          - { name: di1, table: discrete, address: 1, type: bool }
`,
    'interop.yaml',
  );
  agent = createAgent(config, { logger: silentLogger });
  log = new SampleLog(agent);
  agent.start();
});

afterAll(async () => {
  await agent?.stop();
  await server?.stop();
  await pty?.stop();
});

const values = (batch: { pointId: string; value: number | null }[]) => Object.fromEntries(batch.map((s) => [s.pointId, s.value]));

describe('agent against pymodbus RTU server', () => {
  it('reads the XY-MD02 profile (FC04, signed, ×0.1)', async () => {
    const batch = await log.next(batchOf('th1', 'good'), 15_000, 'th1 good samples');
    expect(values(batch)).toEqual({ 'th1.temperature': 23.5, 'th1.humidity': 45.1 });
  });

  it('reads the holding-register profile, negative temperature and a status bit', async () => {
    const batch = await log.next(batchOf('th2', 'good'), 15_000, 'th2 good samples');
    expect(values(batch)).toEqual({ 'th2.temperature': -5.5, 'th2.humidity': 60.2, 'th2.sensor_ok': 1 });
  });

  it('decodes every word order, bools from coils and discrete inputs, and flags a sentinel', async () => {
    const batch = await log.next(batchOf('mix'), 15_000, 'mix samples');
    expect(values(batch)).toEqual({
      'mix.f_abcd': 7,
      'mix.f_cdab': -12.5,
      'mix.u_badc': 305419896,
      'mix.i_dcba': -100,
      'mix.dead': null,
      'mix.coil3': 1,
      'mix.di0': 0,
      'mix.di1': 1,
    });
    const dead = batch.find((s) => s.pointId === 'mix.dead')!;
    expect(dead.quality).toBe('sensor_fault');
    expect(batch.filter((s) => s.quality !== 'good').map((s) => s.pointId)).toEqual(['mix.dead']);
    // One read per table: discrete, coil, holding (10..17 and 40 are 23 apart, beyond the gap fill of 8).
    const health = agent.health().find((h) => h.deviceId === 'mix')!;
    expect(health.counters.timeouts + health.counters.crcErrors + health.counters.exceptions).toBe(0);
    expect(health.state).toBe('online');
  });
});
