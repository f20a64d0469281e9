/**
 * Interop with Modbus implementations we did not write (issue 11, item 5):
 * - the agent's TcpLine reads the same register map from modbus-serial's ServerTCP and from Debian's
 *   pymodbus TCP server (one contract suite, run against both peers);
 * - modbus-serial's client, as an RTU master over a socat pty, reads our simulator.
 * Every expected value was computed by hand from the register contents below, not by our decoder.
 */
import ModbusRTUModule from 'modbus-serial';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import type { DeviceHealth } from '../../agent/acquisition/types.js';
import { parseConfig } from '../../agent/config/load.js';
import { RtuSlave, SimRack } from '../../firmware-sim/index.js';
import { SampleLog, batchOf, silentLogger } from '../helpers/agent.js';
import { freePort } from '../helpers/ports.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { startPymodbusTcpServer, type PymodbusTcpServer, type TcpUnitTables } from '../helpers/pymodbus.js';

// `module.exports = ModbusRTU` with ServerTCP attached: under NodeNext, TypeScript types the default
// import as the whole module (see infra.test.ts).
const modbusSerial = ((ModbusRTUModule as unknown as { default?: unknown }).default ?? ModbusRTUModule) as typeof ModbusRTUModule;
const ModbusRTU = modbusSerial.default;
type ModbusRTU = InstanceType<typeof ModbusRTU>;
const { ServerTCP } = modbusSerial;

/**
 * The peers' register map. Unit 1 and unit 2 hold different values at the same addresses (so a reply
 * from the wrong unit shows); unit 3 has only 10 registers (reads beyond: exception 2); unit 4 is
 * absent (modbus-serial's server answers exception 11, as a gateway whose target is silent; pymodbus
 * 3.0 does not answer at all).
 */
const UNITS: Record<number, TcpUnitTables> = {
  1: {
    holding: {
      0: 0xffc9, // int16 ×0.1: -55 → -5.5
      2: 0x0000, 3: 0x40e8, // float32 CDAB: 7.25 = 0x40E80000
      4: 0xc148, 5: 0x0000, // float32 ABCD: -12.5 = 0xC1480000
    },
    input: { 1: 451 }, // ×0.1 → 45.1
    coil: { 3: 1 },
    discrete: { 1: 1 },
  },
  2: {
    holding: {
      0: 0x0064, // 100 → 10.0
      2: 0x0000, 3: 0x41ac, // float32 CDAB: 21.5 = 0x41AC0000
      4: 0x3f80, 5: 0x0000, // float32 ABCD: 1.0
    },
    input: { 1: 0x7fff }, // the largest int16, 32767 → 3276.7 (not negative)
    coil: { 3: 0 },
    discrete: { 1: 0 },
  },
  3: { size: 10 },
};

const POINTS = `
        points:
          - { name: t_signed, table: holding, address: 0, type: int16, scale: 0.1 }
          - { name: f_cdab, table: holding, address: 2, type: float32, wordOrder: CDAB }
          - { name: f_abcd, table: holding, address: 4, type: float32, wordOrder: ABCD }
          - { name: input1, table: input, address: 1, type: int16, scale: 0.1 }
          - { name: coil3, table: coil, address: 3, type: bool }
          - { name: di1, table: discrete, address: 1, type: bool }`;

function agentConfig(port: number) {
  // u1–u3 answer: a deadline of 3 s, so that a stall of this process (modbus-serial's server runs in it)
  // on a loaded machine does not turn a reply into a timeout. u4's silence is judged at 1 s.
  const device = (id: string, unit: number, points = POINTS, timeoutMs = 3000) =>
    `      - id: ${id}\n        unitId: ${unit}\n        pollIntervalMs: 200\n        timeoutMs: ${timeoutMs}\n        backoffInitialMs: 200\n        backoffMaxMs: 400${points}`;
  return parseConfig(
    `
version: 1
buses:
  - id: peer
    type: tcp
    host: 127.0.0.1
    port: ${port}
    reopenInitialMs: 100
    reopenMaxMs: 400
    devices:
${device('u1', 1)}
${device('u2', 2)}
${device('u3', 3, `\n        points:\n          - { name: beyond, table: holding, address: 100, type: float32 }`)}
${device('u4', 4, `\n        points:\n          - { name: absent, table: holding, address: 0, type: uint16 }`, 1000)}
`,
    'interop-tcp.yaml',
  );
}

const values = (batch: { pointId: string; value: number | null }[]) => Object.fromEntries(batch.map((s) => [s.pointId, s.value]));

/** modbus-serial's ServerTCP serving UNITS: a thrown { modbusErrorCode } becomes an exception reply. */
async function startModbusSerialServer(port: number): Promise<{ stop(): Promise<void> }> {
  const lookup = (table: 'holding' | 'input' | 'coil' | 'discrete', addr: number, unit: number): number => {
    const u = UNITS[unit];
    if (!u) throw { modbusErrorCode: 11, msg: 'gateway target device failed to respond' };
    if (addr >= (u.size ?? 0x10000)) throw { modbusErrorCode: 2, msg: 'illegal data address' };
    return Number(u[table]?.[addr] ?? 0) & 0xffff;
  };
  const server = new ServerTCP(
    {
      getHoldingRegister: (addr: number, unit: number) => lookup('holding', addr, unit),
      getInputRegister: (addr: number, unit: number) => lookup('input', addr, unit),
      getCoil: (addr: number, unit: number) => lookup('coil', addr, unit) === 1,
      getDiscreteInput: (addr: number, unit: number) => lookup('discrete', addr, unit) === 1,
    },
    { host: '127.0.0.1', port, unitID: 255 },
  );
  await new Promise<void>((resolve, reject) => {
    server.on('initialized', () => resolve());
    server.on('serverError', (err: unknown) => reject(err));
  });
  return { stop: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** The contract every Modbus TCP peer must meet with the agent's TcpLine. */
function tcpPeerContract(
  name: string,
  startPeer: () => Promise<{ port: number; stop(): Promise<void> }>,
  absentUnit: { says: string; lastError: RegExp },
): void {
  describe(`TcpLine against ${name}`, () => {
    let peer: { port: number; stop(): Promise<void> };
    let agent: Agent;
    let log: SampleLog;
    const states = new Map<string, DeviceHealth[]>();

    beforeAll(async () => {
      peer = await startPeer();
      agent = createAgent(agentConfig(peer.port), { logger: silentLogger });
      log = new SampleLog(agent);
      agent.on('deviceState', (h) => states.set(h.deviceId, [...(states.get(h.deviceId) ?? []), h]));
      await agent.start();
    });

    afterAll(async () => {
      await agent?.stop();
      await peer?.stop();
    });

    it('reads signed int16, float32 in two word orders, an input register, a coil and a discrete input, exactly', async () => {
      const batch = await log.next(batchOf('u1', 'good'), 15_000, 'u1 good samples');
      expect(values(batch)).toEqual({ 'u1.t_signed': -5.5, 'u1.f_cdab': 7.25, 'u1.f_abcd': -12.5, 'u1.input1': 45.1, 'u1.coil3': 1, 'u1.di1': 1 });
    });

    it('keeps unit ids apart: unit 2 has other values at the same addresses', async () => {
      const batch = await log.next(batchOf('u2', 'good'), 15_000, 'u2 good samples');
      expect(values(batch)).toEqual({ 'u2.t_signed': 10, 'u2.f_cdab': 21.5, 'u2.f_abcd': 1, 'u2.input1': 3276.7, 'u2.coil3': 0, 'u2.di1': 0 });
    });

    it('an illegal address is exception 2: the device is "exceptions", named by register, never a value', async () => {
      const batch = await log.next(batchOf('u3', 'comm_error'), 15_000, 'u3 exception samples');
      expect(batch[0]!).toMatchObject({ value: null, reason: expect.stringMatching(/^E_MODBUS_EXCEPTION: .*exception 2 \(illegal data address\)/) });
      await log.next(batchOf('u3', 'comm_error'), 15_000, 'another u3 poll');
      const h = agent.health().find((x) => x.deviceId === 'u3')!;
      expect(h.state).toBe('exceptions');
      expect(h.lastError).toBe('holding register 100 (×2): exception 2 (illegal data address)');
      expect(states.get('u3')!.map((x) => x.state)).toEqual(['exceptions']);
      expect(h.counters).toMatchObject({ timeouts: 0, badFrames: 0, crcErrors: 0 });
    });

    it(`an absent unit (${absentUnit.says}) is a failure: failing, then offline`, async () => {
      const waitOffline = async (): Promise<void> => {
        while (agent.health().find((x) => x.deviceId === 'u4')!.state !== 'offline') await log.next(batchOf('u4'), 15_000, 'u4 offline');
      };
      await waitOffline();
      expect(states.get('u4')!.map((x) => x.state)).toEqual(['failing', 'offline']);
      expect(agent.health().find((x) => x.deviceId === 'u4')!.lastError).toMatch(absentUnit.lastError);
      // The others were never disturbed by it.
      expect(agent.health().find((x) => x.deviceId === 'u1')!.state).toBe('online');
      expect(agent.health().find((x) => x.deviceId === 'u1')!.counters).toMatchObject({ timeouts: 0, badFrames: 0, exceptions: 0 });
    });
  });
}

tcpPeerContract('modbus-serial ServerTCP', async () => {
  const port = await freePort();
  const server = await startModbusSerialServer(port);
  return { port, stop: () => server.stop() };
}, { says: 'gateway exception 11', lastError: /^E_MODBUS_EXCEPTION: .*exception 11 \(gateway target device failed to respond\)$/ });

tcpPeerContract('pymodbus TCP server', async (): Promise<PymodbusTcpServer> => startPymodbusTcpServer({ units: UNITS }), {
  says: 'no answer',
  lastError: /^E_MODBUS_TIMEOUT: .*unit 4: no reply within 1000 ms$/,
});

describe('modbus-serial client as RTU master against the simulator', () => {
  let pty: PtyPair;
  let rack: SimRack;
  let slave: RtuSlave;
  let client: ModbusRTU;

  beforeAll(async () => {
    const config = parseConfig(
      `
version: 1
buses:
  - id: line
    type: serial
    path: /dev/null
    devices:
      - { id: rack01, profile: xy-md02, unitId: 1 }
      - { id: rack02, profile: xy-md02, unitId: 2 }
      - { id: chiller1, profile: generic-chiller, unitId: 5 }
`,
      'sim.yaml',
    );
    pty = await startPtyPair();
    rack = new SimRack({ config });
    rack.setValue('rack01.temperature', -5.5);
    rack.setValue('rack01.humidity', 45.1);
    rack.setValue('rack02.temperature', 23.4);
    rack.setValue('chiller1.supply_temp', 7.25);
    rack.setValue('chiller1.return_temp', -12.5);
    slave = new RtuSlave({ path: pty.a, rack });
    await slave.start();
    client = new ModbusRTU();
    await client.connectRTUBuffered(pty.b, { baudRate: 9600 });
    // modbus-serial has no timeout unless set, and no queue: one awaited request at a time below. The
    // slave runs in this process: 2 s, so that a stall of a loaded machine does not time a reply out.
    client.setTimeout(2000);
  });

  afterAll(async () => {
    if (client?.isOpen) await new Promise<void>((resolve) => client.close(() => resolve()));
    await slave?.stop();
    await pty?.stop();
  });

  it('reads a signed int16 from unit 1 and another value at the same address from unit 2', async () => {
    client.setID(1);
    const r1 = await client.readInputRegisters(1, 2);
    expect(r1.data).toEqual([0xffc9, 451]); // -55 as two's complement, 45.1 %RH ×10
    expect(r1.buffer.readInt16BE(0)).toBe(-55);
    client.setID(2);
    const r2 = await client.readInputRegisters(1, 1);
    expect(r2.data).toEqual([234]);
  });

  it('reads a float32 CDAB pair from the chiller at unit 5', async () => {
    client.setID(5);
    const r = await client.readHoldingRegisters(2, 4);
    expect(r.data).toEqual([0x0000, 0x40e8, 0x0000, 0xc148]);
    // CDAB: the second register holds the high word.
    const f = (lo: number, hi: number) => Buffer.from([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]).readFloatBE(0);
    expect(f(r.data[0]!, r.data[1]!)).toBe(7.25);
    expect(f(r.data[2]!, r.data[3]!)).toBe(-12.5);
    const running = await client.readDiscreteInputs(0, 1);
    expect(running.data[0]).toBe(true);
  });

  it('gets exceptions with their codes: an unserved address, and a device fault', async () => {
    client.setID(1);
    rack.setFault('rack01', { type: 'none' }); // as beforeAll left it, for a retry after a failure below
    await expect(client.readHoldingRegisters(1, 1)).rejects.toMatchObject({ modbusCode: 2 });
    rack.setFault('rack01', { type: 'exception', code: 4 });
    await expect(client.readInputRegisters(1, 1)).rejects.toMatchObject({ modbusCode: 4 });
    rack.setFault('rack01', { type: 'none' });
    expect((await client.readInputRegisters(1, 1)).data).toEqual([0xffc9]);
  });

  it('gets no answer from a unit nobody serves (its own timeout)', async () => {
    client.setID(9);
    client.setTimeout(300);
    try {
      await expect(client.readInputRegisters(1, 1)).rejects.toMatchObject({ name: 'TransactionTimedOutError' });
    } finally {
      client.setTimeout(2000);
    }
    client.setID(2);
    expect((await client.readInputRegisters(1, 1)).data).toEqual([234]);
  });
});
