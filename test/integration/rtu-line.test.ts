/**
 * The late-reply trap, on a real pty against the simulator: a reply that arrives after its
 * request's deadline must never be taken as the answer to the next request of the same unit
 * (FC03/FC04 replies do not echo the address, so nothing in the frame tells them apart).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { systemClock } from '../../agent/clock.js';
import type { Config } from '../../agent/config/model.js';
import { RtuLine } from '../../agent/acquisition/rtu-line.js';
import { readRequestPdu, readResponseValues } from '../../agent/modbus/pdu.js';
import { RtuSlave, SimRack } from '../../firmware-sim/index.js';
import { silentLogger } from '../helpers/agent.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';

let pty: PtyPair;
let rack: SimRack;
let slave: RtuSlave;
let config: Config;

beforeAll(async () => {
  pty = await startPtyPair();
  config = parseConfig(`version: 1\nbuses: [{ id: l, type: serial, path: ${pty.a}, devices: [{ id: s1, unitId: 1, profile: xy-md02 }] }]\n`, 't.yaml');
  rack = new SimRack({ config });
  slave = new RtuSlave({ path: pty.b, rack });
  await slave.start();
});

afterAll(async () => {
  await slave?.stop();
  await pty?.stop();
});

async function twoReads(recoveryGapMs: number): Promise<{ first: string; second: number | string }> {
  const line = new RtuLine(
    { id: 'l', path: pty.a, baudRate: 9600, parity: 'none', dataBits: 8, stopBits: 1, interFrameGapMs: 0, recoveryGapMs, reopenInitialMs: 100, reopenMaxMs: 100 },
    { clock: systemClock, logger: silentLogger },
  );
  line.start();
  await new Promise<void>((resolve) => line.once('open', () => resolve()));
  try {
    const pdu = readRequestPdu('input', 1, 1);
    // First request: the sensor reads 11.1 and answers 250 ms late; our deadline is 100 ms.
    rack.setValue('s1.temperature', 11.1);
    rack.setFault('s1', { type: 'late', delayMs: 250 });
    const first = await line.request(1, pdu, 100).then(
      () => 'answered',
      (err: { code: string }) => err.code,
    );
    // Second request: the sensor now reads 22.2 and answers 400 ms after the request, so without a
    // recovery silence the first reply (due 150 ms after the deadline) comes in first.
    rack.setValue('s1.temperature', 22.2);
    rack.setFault('s1', { type: 'late', delayMs: 400 });
    const second = await line.request(1, pdu, 1500).then(
      (reply) => readResponseValues('input', 1, reply)[0]! / 10,
      (err: { code: string }) => err.code,
    );
    return { first, second };
  } finally {
    rack.setFault('s1', { type: 'none' });
    await line.stop();
  }
}

describe('RtuLine late replies', () => {
  it('without a recovery silence the trap is real: the late 11.1 answers the second request', async () => {
    // The control: proves the scenario below can fail.
    expect(await twoReads(0)).toEqual({ first: 'E_MODBUS_TIMEOUT', second: 11.1 });
  });

  it('with the recovery silence the second request gets its own answer', async () => {
    expect(await twoReads(300)).toEqual({ first: 'E_MODBUS_TIMEOUT', second: 22.2 });
  });
});
