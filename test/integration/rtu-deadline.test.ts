/**
 * Issue 7 item 11: a deadline's verdict first reads the bytes already waiting.
 *
 * An RTU line on a real pty, with a slave in another process (as a real device, it answers while our
 * event loop is blocked). Once the request is on the wire (the slave says so), the event loop is
 * blocked (as by a slow synchronous SQLite commit) for three times the request's deadline. The slave
 * answers after 200 ms, into the blocked loop, so its reply waits in the kernel; when the loop comes
 * back, the deadline timer runs before the poll phase that would read it. Before the fix that counted
 * a timeout and flushed the reply; now it counts none.
 *
 * The stall starts when the request is on the wire, not at a fixed time after request(): the line
 * may first wait out its quiet gap, and a stall before the request goes out proves nothing (the
 * earlier version of this test, stalling in another bus's reply handler, no longer failed without
 * the fix for that reason).
 *
 * The deadline (TIMEOUT_MS) is wide enough that a loaded machine's scheduling alone never reaches
 * it: the slave may be late by up to the whole stall and its reply is still waiting when the loop
 * comes back. Everything is set up per attempt, so that a retry never meets a previous attempt's port.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RtuLine } from '../../agent/acquisition/rtu-line.js';
import { systemClock } from '../../agent/clock.js';
import { readRequestPdu, readResponseValues } from '../../agent/modbus/pdu.js';
import { silentLogger } from '../helpers/agent.js';
import { spawnAndWait } from '../helpers/proc.js';
import { startPtyPair } from '../helpers/pty.js';

const SLAVE = join(import.meta.dirname, '..', 'fixtures', 'hostile_rtu_slave.py');
const TIMEOUT_MS = 500;
const STALL_MS = 3 * TIMEOUT_MS;
/** The slave's answer time: the stall begins well before the reply comes in. */
const TURNAROUND_MS = 200;

function blockEventLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // a slow synchronous commit
  }
}

describe('a stalled event loop does not turn a waiting reply into a timeout', () => {
  it('a slow commit while a request is in flight makes it time out 0 times', async () => {
    const cleanups: Array<() => Promise<unknown>> = [];
    try {
      const pty = await startPtyPair();
      cleanups.push(() => pty.stop());
      const slave = await spawnAndWait('/usr/bin/python3', [SLAVE, '--port', pty.b, '--turnaround-ms', String(TURNAROUND_MS)], { readyLine: /^ready$/, timeoutMs: 10_000 });
      cleanups.push(() => slave.stop());
      const line = new RtuLine(
        { id: 'b', path: pty.a, baudRate: 9600, parity: 'none', dataBits: 8, stopBits: 1, interFrameGapMs: 0, recoveryGapMs: 50, reopenInitialMs: 100, reopenMaxMs: 100 },
        { clock: systemClock, logger: silentLogger },
      );
      cleanups.push(() => line.stop());
      const opened = new Promise<void>((resolve) => line.once('open', () => resolve()));
      await line.start();
      await opened;
      const temperature = readRequestPdu('input', 1, 1);
      // Warm up (the first request after opening flushes the port first).
      await line.request(1, temperature, 5000);
      const outcomes: string[] = [];
      for (let round = 0; round < 10; round++) {
        const from = slave.lines.length;
        const reply = line.request(1, temperature, TIMEOUT_MS).then(
          (pdu) => String(readResponseValues('input', 1, pdu)[0]),
          (err: { code: string }) => err.code,
        );
        // The request is on the wire once the slave says it got it (the line may first wait out its
        // quiet gap); the stall begins then, before the slave answers. (A request the line fails
        // without sending it, as it does after a timeout, settles first: no stall then.)
        const sent = slave.waitForLine(/^request/, 5000, from).then(
          () => true,
          () => false,
        );
        if (await Promise.race([sent, reply.then(() => false)])) blockEventLoop(STALL_MS);
        outcomes.push(await reply);
      }
      expect(outcomes).toEqual(Array(10).fill('231'));
    } finally {
      for (const c of cleanups.reverse()) await c().catch(() => {});
    }
  });
});
