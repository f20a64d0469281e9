/**
 * Interop of firmware-sim with a Modbus master we did not write: Debian's mbpoll (libmodbus) reads
 * the simulated rack over a socat pty pair (RTU) and over TCP. The room is set to exact values (no
 * noise, no cycling, explicit sensor offsets, a frozen virtual clock), so every register below is
 * computed by hand, independently of the simulator's encoding code.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { SerialPort } from 'serialport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VirtualClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import { crcOk, withCrc } from '../../agent/modbus/crc.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { parseScenario } from '../../firmware-sim/scenario.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { waitFor, withTimeout } from '../helpers/wait.js';

const run = promisify(execFile);

const CONFIG = `
version: 1
buses:
  - id: line
    type: serial
    path: /dev/null
    devices:
      - { id: rack01, profile: xy-md02, unitId: 1 }
      - { id: rack02, profile: xy-md02, unitId: 2 }
      - { id: rack03, profile: xy-md02, unitId: 3 }
      - { id: rack09, profile: generic-th-holding, unitId: 9 }
      - id: pdu-a
        unitId: 10
        points:
          - { name: energy, table: holding, address: 0x0100, type: int32, wordOrder: CDAB, scale: 0.01, unit: kWh }
  - id: net
    type: tcp
    host: 127.0.0.1
    devices:
      - { id: chiller1, profile: generic-chiller, unitId: 1 }
chillers:
  - { id: ch1, running: chiller1.running, alarm: chiller1.alarm_code, supplyTemp: chiller1.supply_temp, returnTemp: chiller1.return_temp }
`;

// Setpoint 22 °C; inlet = 22 + offset exactly while the (virtual) clock stands still.
const SCENARIO = `
name: exact
room:
  noiseC: 0
  cyclingAmplitudeC: 0
  sensorOffsetsC: { rack01.temperature: 0.3, rack02.temperature: -1.2, rack03.temperature: 0.8, rack09.temperature: 0.6 }
`;

/** %RH at `tC` for air holding 45 %RH at 22 °C (Magnus formula), as a ×0.1 register. */
function humidityRegister(tC: number): number {
  const es = (t: number) => 6.112 * Math.exp((17.62 * t) / (243.12 + t));
  return Math.round((450 * es(22)) / es(tC));
}

interface PollResult {
  ok: boolean;
  values: Map<number, string>;
  stderr: string;
}

/** Runs mbpoll once (-1, PDU addressing -0) and parses its `[ref]: value` lines. */
async function mbpoll(args: string[]): Promise<PollResult> {
  let stdout: string;
  let stderr: string;
  let ok = true;
  try {
    ({ stdout, stderr } = await run('mbpoll', [...args, '-0', '-1'], { timeout: 15_000 }));
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: unknown };
    if (typeof e.code !== 'number') throw err;
    ({ stdout = '', stderr = '' } = e);
    ok = false;
  }
  const values = new Map<number, string>();
  for (const m of stdout.matchAll(/^\[(\d+)\]:\s+(\S+)\s*$/gm)) values.set(Number(m[1]), m[2]!);
  return { ok, values, stderr };
}

let pty: PtyPair;
let sim: Simulator;
const rtu = (unit: number, table: string, ref: number, count: number, extra: string[] = []) =>
  mbpoll(['-m', 'rtu', '-b', '9600', '-P', 'none', '-a', String(unit), '-t', table, '-r', String(ref), '-c', String(count), ...extra, pty.b]);
const tcp = (unit: number, table: string, ref: number, count: number) =>
  mbpoll(['-m', 'tcp', '-p', String(sim.tcpPort), '-a', String(unit), '-t', table, '-r', String(ref), '-c', String(count), '127.0.0.1']);

describe('firmware-sim read by mbpoll', () => {
  beforeAll(async () => {
    const config = parseConfig(CONFIG, 'test.yaml');
    pty = await startPtyPair();
    sim = await startSimulator({
      config,
      scenario: parseScenario(SCENARIO, 'exact.yaml', { config }),
      serialPath: pty.a,
      tcpPort: 0,
      clock: new VirtualClock(),
    });
  });

  afterAll(async () => {
    await sim?.stop();
    await pty?.stop();
  });

  it('serves XY-MD02 input registers (-t 3) over RTU', async () => {
    const r1 = await rtu(1, '3', 1, 2);
    expect(r1.stderr).toBe('');
    expect(r1.values).toEqual(new Map([[1, '223'], [2, String(humidityRegister(22.3))]]));
    const r2 = await rtu(2, '3', 1, 2);
    expect(r2.values).toEqual(new Map([[1, '208'], [2, String(humidityRegister(20.8))]]));
    expect(humidityRegister(20.8)).toBeGreaterThan(450); // wetter where cooler
  });

  it('serves holding registers (-t 4) of the generic sensor, and an int32 CDAB (-t 4:int)', async () => {
    const r = await rtu(9, '4', 0, 3);
    expect(r.values).toEqual(new Map([[0, '226'], [1, String(humidityRegister(22.6))], [2, '1']]));
    sim.rack.setValue('pdu-a.energy', 12345.67);
    // mbpoll's default 32-bit word order is little-endian (low word first) = CDAB; -B would be ABCD.
    expect((await rtu(10, '4:int', 0x100, 1)).values).toEqual(new Map([[0x100, '1234567']]));
    expect((await rtu(10, '4:hex', 0x100, 2)).values).toEqual(new Map([[0x100, '0xD687'], [0x101, '0x0012']]));
  });

  it('serves the chiller over TCP: float32 CDAB temperatures (-t 4:float), alarm and running', async () => {
    // The simulator is shared (beforeAll): a retry must not start with the chiller the failed attempt tripped.
    sim.rack.applyEvent({ kind: 'chiller', action: 'restore' });
    expect((await tcp(1, '4:float', 2, 2)).values).toEqual(new Map([[2, '7'], [4, '12']]));
    expect((await tcp(1, '4', 0, 1)).values).toEqual(new Map([[0, '0']]));
    expect((await tcp(1, '1', 0, 1)).values).toEqual(new Map([[0, '1']]));
    sim.rack.applyEvent({ kind: 'chiller', action: 'trip' });
    expect((await tcp(1, '4', 0, 1)).values).toEqual(new Map([[0, '17']]));
    expect((await tcp(1, '1', 0, 1)).values).toEqual(new Map([[0, '0']]));
    // The clock stands still: no heat removed, so return = supply.
    expect((await tcp(1, '4:float', 2, 2)).values).toEqual(new Map([[2, '7'], [4, '7']]));
    sim.rack.applyEvent({ kind: 'chiller', action: 'restore' });
  });

  it('shows device faults as mbpoll sees them, and keeps serving the others', async () => {
    // Shared simulator: a retry starts from no fault and counts only its own exceptions and CRC errors.
    sim.rack.setFault('rack03', { type: 'none' });
    sim.rack.setSensorFault('rack03.temperature', { type: 'none' });
    const before = { ...sim.rack.counters().rack03! };
    sim.rack.setFault('rack03', { type: 'exception', code: 4 });
    expect(await rtu(3, '3', 1, 1)).toMatchObject({ ok: false, stderr: expect.stringMatching(/Slave device or server failure/) });
    sim.rack.setFault('rack03', { type: 'crc' });
    expect(await rtu(3, '3', 1, 1)).toMatchObject({ ok: false, stderr: expect.stringMatching(/Invalid CRC/) });
    sim.rack.setFault('rack03', { type: 'silent' });
    expect(await rtu(3, '3', 1, 1, ['-o', '0.2'])).toMatchObject({ ok: false, stderr: expect.stringMatching(/timed out/) });
    expect(await rtu(4, '3', 1, 1, ['-o', '0.2'])).toMatchObject({ ok: false, stderr: expect.stringMatching(/timed out/) }); // nobody at 4
    sim.rack.setFault('rack03', { type: 'none' });
    sim.rack.setSensorFault('rack03.temperature', { type: 'dead' });
    expect((await rtu(3, '3', 1, 2)).values).toEqual(new Map([[1, '32767'], [2, String(humidityRegister(22.8))]]));
    sim.rack.setSensorFault('rack03.temperature', { type: 'none' });
    expect((await rtu(3, '3', 1, 1)).values).toEqual(new Map([[1, '228']]));
    const after = sim.rack.counters().rack03!;
    expect({ exceptions: after.exceptions - before.exceptions, crc: after.crc - before.crc }).toEqual({ exceptions: 1, crc: 1 });
  });

  it('answers illegal function and illegal address with exceptions', async () => {
    expect(await rtu(1, '4', 1, 1)).toMatchObject({ ok: false, stderr: expect.stringMatching(/Illegal data address/) });
    expect(await rtu(1, '0', 0, 1)).toMatchObject({ ok: false, stderr: expect.stringMatching(/Illegal data address/) });
  });
});

describe('startSimulator', () => {
  it('applies scenario events when they fall due, without any request', async () => {
    const config = parseConfig(CONFIG.replace(/  - id: line[\s\S]*?(?=  - id: net)/, ''), 'tcp-only.yaml');
    const clock = new VirtualClock();
    const s = await startSimulator({
      config,
      scenario: parseScenario('name: t\nevents:\n  - { at: 60, chiller: trip }', 't.yaml', { config }),
      tcpPort: 0,
      timeScale: 2,
      clock,
    });
    try {
      expect(s.serialPath).toBeUndefined();
      clock.advance(29_000);
      expect(s.rack.room.chiller().running).toBe(true);
      clock.advance(2_000); // 62 s simulated
      expect(s.rack.room.chiller()).toMatchObject({ running: false, alarmCode: 17 });
      expect(clock.pendingTimers()).toBe(0);
    } finally {
      await s.stop();
    }
  });
});

describe('RTU slave on its own line', () => {
  it('emulates the bus cycle of a 9600 8N1 line within a few percent', async () => {
    const config = parseConfig(CONFIG, 'test.yaml');
    const pair = await startPtyPair();
    const s = await startSimulator({ config, serialPath: pair.a, emulateBaud: true, turnaroundMs: 2, clock: new VirtualClock() });
    const master = new SerialPort({ path: pair.b, baudRate: 9600, autoOpen: false });
    try {
      await new Promise<void>((res, rej) => master.open((err) => (err ? rej(err) : res())));
      let rx = Buffer.alloc(0);
      let waiting: (() => void) | undefined;
      master.on('data', (d: Buffer) => {
        rx = Buffer.concat([rx, d]);
        if (rx.length >= 9) waiting?.();
      });
      const request = withCrc(Buffer.from([1, 4, 0, 1, 0, 2]));
      const times: number[] = [];
      for (let i = 0; i < 25; i++) {
        rx = Buffer.alloc(0);
        const t0 = performance.now();
        const got = new Promise<void>((res) => (waiting = res));
        master.write(request);
        await got;
        times.push(performance.now() - t0);
        expect(rx.length).toBe(9);
      }
      // (8 request + 9 reply bytes) × 10 bits + 3.5 characters of silence, at 9600 baud, + 2 ms turnaround.
      const expected = ((8 + 9) * 10 * 1000) / 9600 + (3.5 * 10 * 1000) / 9600 + 2;
      const sorted = [...times].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)]!;
      // Functional check only: a reply never comes sooner than a real 9600 baud line could deliver it,
      // and the emulation is in the right range (not, say, a second: a loaded machine adds tens of ms).
      // How close it gets is measured by `npm run bench -- acquisition`, not asserted here: timing
      // under CI load is not a property.
      expect(sorted[0]! / expected).toBeGreaterThan(0.98);
      expect(median / expected).toBeLessThan(10);
    } finally {
      if (master.isOpen) await new Promise<void>((res) => master.close(() => res()));
      await s.stop();
      await pair.stop();
    }
  });

  it('frames by length: resyncs after garbage, answers unknown functions with exception 1, ignores broadcasts', async () => {
    const config = parseConfig(CONFIG, 'test.yaml');
    const pair = await startPtyPair();
    const s = await startSimulator({ config, serialPath: pair.a, clock: new VirtualClock() });
    const slave = s.rtu!;
    const master = new SerialPort({ path: pair.b, baudRate: 9600, autoOpen: false });
    // Every byte the slave ever sends, never cleared: a reply to something that should get none would
    // shift everything after it, so the whole stream is checked at the end.
    let rx = Buffer.alloc(0);
    master.on('data', (d: Buffer) => (rx = Buffer.concat([rx, d])));
    /** Writes `bytes` and resolves once the stream holds `total` bytes. */
    const replyUntil = (bytes: Buffer, total: number, what: string): Promise<true> => {
      master.write(bytes);
      return waitFor(master, 'data', () => rx.length >= total, 5000, what, () => `have ${rx.toString('hex')}`);
    };
    /** Writes `bytes` and resolves with what the slave dropped to resynchronise. */
    const dropped = (bytes: Buffer): Promise<[number, string]> => {
      const p = once(slave, 'dropped') as Promise<[number, string]>;
      master.write(bytes);
      return withTimeout(p, 5000, `the slave dropping ${bytes.toString('hex')}`);
    };
    try {
      await new Promise<void>((res, rej) => master.open((err) => (err ? rej(err) : res())));
      const read = withCrc(Buffer.from([1, 4, 0, 1, 0, 1]));
      const READ_REPLY = 7; // unit, function, byte count, one register, CRC
      const illegalFunction = withCrc(Buffer.from([1, 0xab, 1]));
      await replyUntil(read, READ_REPLY, 'the first reply');
      // Noise before a request: the frame fails its CRC and the buffer is dropped; the next request is answered.
      expect(await dropped(Buffer.concat([Buffer.from([0x55, 0x03]), read]))).toEqual([2 + read.length, 'crc']);
      await replyUntil(read, 2 * READ_REPLY, 'the reply after the noise');
      // A stuck partial frame is dropped after resyncMs (50 ms) of silence.
      expect(await dropped(read.subarray(0, 5))).toEqual([5, 'resync']);
      await replyUntil(read, 3 * READ_REPLY, 'the reply after the partial frame');
      // Function 0x2B (read device identification) is not served: exception 1.
      await replyUntil(withCrc(Buffer.from([1, 0x2b, 0x0e, 0x01, 0x00])), 3 * READ_REPLY + illegalFunction.length, 'exception 1');
      // Broadcast: taken as a frame, no reply (the read after it must be the next thing on the line).
      const broadcast = withCrc(Buffer.from([0, 6, 0, 1, 0, 1]));
      const taken = once(slave, 'frame');
      master.write(broadcast);
      expect((await withTimeout(taken, 5000, 'the broadcast frame'))[0]).toEqual(broadcast);
      await replyUntil(read, 4 * READ_REPLY + illegalFunction.length, 'the reply after the broadcast');

      // The stream is exactly the replies asked for, in order: nothing for the noise, the partial
      // frame or the broadcast.
      const frames = [0, 7, 14, 21, 26].map((at, i) => rx.subarray(at, i === 3 ? at + illegalFunction.length : at + READ_REPLY));
      expect(rx.length).toBe(4 * READ_REPLY + illegalFunction.length);
      for (const f of [frames[0]!, frames[1]!, frames[2]!, frames[4]!]) expect([...f.subarray(0, 3), crcOk(f)]).toEqual([1, 4, 2, true]);
      expect(frames[3]).toEqual(illegalFunction);
      expect(s.rack.counters().rack01!.requests).toBe(5);
      expect(slave.stats).toMatchObject({ crcErrors: 1, broadcastsIgnored: 1, replies: 5, droppedBytes: 2 + read.length + 5 });
    } finally {
      if (master.isOpen) await new Promise<void>((res) => master.close(() => res()));
      await s.stop();
      await pair.stop();
    }
  });

  it('reports the port going away (pty unplugged) and stops cleanly', async () => {
    const config = parseConfig(CONFIG, 'test.yaml');
    const pair = await startPtyPair();
    let closed: (err: Error | undefined) => void = () => {};
    const closedP = new Promise<Error | undefined>((res) => (closed = res));
    const s = await startSimulator({ config, serialPath: pair.a, tcpPort: 0, onSerialClose: (err) => closed(err) });
    try {
      expect((await mbpoll(['-m', 'rtu', '-b', '9600', '-P', 'none', '-a', '1', '-t', '3', '-r', '1', '-c', '1', pair.b])).ok).toBe(true);
      await pair.unplug();
      await withTimeout(closedP, 5000, 'the simulator reporting the closed port');
      // TCP keeps serving; stop is clean afterwards.
      expect((await mbpoll(['-m', 'tcp', '-p', String(s.tcpPort), '-a', '1', '-t', '1', '-r', '0', '-c', '1', '127.0.0.1'])).values.get(0)).toBe('1');
    } finally {
      await s.stop();
      await s.stop();
      await pair.stop();
    }
  });
});
