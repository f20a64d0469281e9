/**
 * Issue 7 item 11: a deadline's verdict first reads the bytes already waiting.
 *
 * Two RTU lines on two real ptys, each with a slave in another process. Bus A's reply handler
 * blocks the event loop (as a slow SQLite commit did) for longer than bus B's timeout, just after
 * bus B's request went out. B's slave answers in 40 ms, so B's reply waits in the kernel while the
 * loop is blocked; when the loop comes back, B's deadline timer runs before the poll phase that
 * would read it. Before the fix B counted a timeout and flushed its reply; now it counts none.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RtuLine } from '../../agent/acquisition/rtu-line.js';
import { systemClock } from '../../agent/clock.js';
import { readRequestPdu, readResponseValues } from '../../agent/modbus/pdu.js';
import { silentLogger } from '../helpers/agent.js';
import { spawnAndWait } from '../helpers/proc.js';
import { startPtyPair } from '../helpers/pty.js';

const SLAVE = join(import.meta.dirname, '..', 'fixtures', 'hostile_rtu_slave.py');
const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

async function lineWithSlave(id: string, turnaroundMs: number): Promise<RtuLine> {
  const pty = await startPtyPair();
  cleanups.push(() => pty.stop());
  const slave = await spawnAndWait('/usr/bin/python3', [SLAVE, '--port', pty.b, '--turnaround-ms', String(turnaroundMs)], { readyLine: /^ready$/, timeoutMs: 10_000 });
  cleanups.push(() => slave.stop());
  const line = new RtuLine(
    { id, path: pty.a, baudRate: 9600, parity: 'none', dataBits: 8, stopBits: 1, interFrameGapMs: 0, recoveryGapMs: 50, reopenInitialMs: 100, reopenMaxMs: 100 },
    { clock: systemClock, logger: silentLogger },
  );
  cleanups.push(() => line.stop());
  const opened = new Promise<void>((resolve) => line.once('open', () => resolve()));
  await line.start();
  await opened;
  return line;
}

function blockEventLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // a slow synchronous commit
  }
}

let busA: RtuLine;
let busB: RtuLine;

beforeAll(async () => {
  [busA, busB] = await Promise.all([lineWithSlave('a', 20), lineWithSlave('b', 40)]);
});

describe('a stalled event loop does not turn a waiting reply into a timeout', () => {
  it('a slow commit in bus A\'s reply handler makes bus B time out 0 times', async () => {
    const temperature = readRequestPdu('input', 1, 1);
    // Warm up both lines (the first request after opening flushes the port first).
    await busA.request(1, temperature, 1000);
    await busB.request(1, temperature, 1000);
    const outcomes: string[] = [];
    for (let round = 0; round < 10; round++) {
      // Both requests go out at once. A's slave answers after 20 ms, and A's reply handler blocks
      // the loop for 3× B's timeout; B's slave answers after 40 ms, into the blocked loop.
      const a = busA.request(1, temperature, 1000).then(() => blockEventLoop(450));
      const b = busB.request(1, temperature, 150).then(
        (pdu) => String(readResponseValues('input', 1, pdu)[0]),
        (err: { code: string }) => err.code,
      );
      await a;
      outcomes.push(await b);
    }
    expect(outcomes).toEqual(Array(10).fill('231'));
  });
});
