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

/**
 * A read that times out, then reads of the same register count while its reply is still coming.
 * Returns the first outcome and every later outcome until the first value.
 */
async function lateThenReads(recoveryGapMs: number): Promise<{ first: string; later: Array<number | string> }> {
  const line = new RtuLine(
    { id: 'l', path: pty.a, baudRate: 9600, parity: 'none', dataBits: 8, stopBits: 1, interFrameGapMs: 0, recoveryGapMs, reopenInitialMs: 100, reopenMaxMs: 100 },
    { clock: systemClock, logger: silentLogger },
  );
  const opened = new Promise<void>((resolve) => line.once('open', () => resolve()));
  await line.start();
  await opened;
  try {
    const pdu = readRequestPdu('input', 1, 1);
    // First request: the sensor reads 11.1 and answers 250 ms late; our deadline is 100 ms.
    rack.setValue('s1.temperature', 11.1);
    rack.setFault('s1', { type: 'late', delayMs: 250 });
    const first = await line.request(1, pdu, 100).then(
      () => 'answered',
      (err: { code: string }) => err.code,
    );
    // Then the sensor reads 22.2 and answers 400 ms after each request, so without care the first
    // reply (due 150 ms after the deadline) comes in first. Ask until a value comes back.
    rack.setValue('s1.temperature', 22.2);
    rack.setFault('s1', { type: 'late', delayMs: 400 });
    const later: Array<number | string> = [];
    for (let i = 0; i < 6 && typeof later.at(-1) !== 'number'; i++) {
      later.push(
        await line.request(1, pdu, 1500).then(
          (reply) => readResponseValues('input', 1, reply)[0]! / 10,
          (err: { code: string }) => err.code,
        ),
      );
    }
    return { first, later };
  } finally {
    rack.setFault('s1', { type: 'none' });
    await line.stop();
  }
}

describe('RtuLine late replies', () => {
  // Issue 7 item 1: a quiet gap alone cannot tell a late reply from the answer (before the fix,
  // recoveryGapMs 0 returned 11.1 for the second request). The line now proves itself in step first.
  for (const gap of [0, 300]) {
    it(`recoveryGapMs ${gap}: the late 11.1 never answers a later request; the first value is 22.2`, async () => {
      const { first, later } = await lateThenReads(gap);
      expect(first).toBe('E_MODBUS_TIMEOUT');
      expect(later).not.toContain(11.1);
      expect(later.at(-1)).toBe(22.2);
      expect(later.slice(0, -1).every((o) => o === 'E_MODBUS_LINE_DIRTY')).toBe(true);
    });
  }
});
