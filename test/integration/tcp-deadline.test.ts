/**
 * Issue 7 item 11 on a Modbus TCP bus: a deadline's verdict first reads the bytes already waiting.
 *
 * TcpLine against pymodbus's TCP server in another process, on loopback. Right after each request
 * goes out, the event loop is blocked (as by a slow SQLite commit on another bus) for three times
 * the request's timeout. The server's reply waits in the kernel meanwhile; when the loop comes
 * back, the deadline's timer runs before the poll phase that would read it. Before the fix the
 * line counted a timeout and dropped the reply as a late one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TcpLine } from '../../agent/acquisition/tcp-line.js';
import { systemClock } from '../../agent/clock.js';
import { readRequestPdu, readResponseValues } from '../../agent/modbus/pdu.js';
import { silentLogger } from '../helpers/agent.js';
import { startPymodbusTcpServer, type PymodbusTcpServer } from '../helpers/pymodbus.js';

let server: PymodbusTcpServer;
let line: TcpLine;

beforeAll(async () => {
  server = await startPymodbusTcpServer({ units: { 1: { input: { 1: 231 } } } });
  line = new TcpLine({ id: 'tcp', host: '127.0.0.1', port: server.port, connectTimeoutMs: 2000, reopenInitialMs: 100, reopenMaxMs: 1000 }, { clock: systemClock, logger: silentLogger });
  const opened = new Promise<void>((resolve) => line.once('open', () => resolve()));
  await line.start();
  await opened;
}, 30_000);

afterAll(async () => {
  await line?.stop();
  await server?.stop();
});

function blockEventLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // a slow synchronous commit
  }
}

describe('a stalled event loop does not turn a waiting TCP reply into a timeout', () => {
  it('ten requests, each followed by a 450 ms stall against a 150 ms timeout: ten values', async () => {
    const pdu = readRequestPdu('input', 1, 1);
    await line.request(1, pdu, 2000); // warm-up
    const outcomes: string[] = [];
    for (let round = 0; round < 10; round++) {
      const r = line.request(1, pdu, 150).then(
        (reply) => String(readResponseValues('input', 1, reply)[0]),
        (err: { code: string }) => err.code,
      );
      // Let the request reach the socket, then stall before the reply can be read.
      await new Promise((resolve) => setImmediate(resolve));
      blockEventLoop(450);
      outcomes.push(await r);
    }
    expect(outcomes).toEqual(Array(10).fill('231'));
  });
});
