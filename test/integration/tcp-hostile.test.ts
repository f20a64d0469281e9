/**
 * TcpLine against a hostile server on a real loopback socket: it accepts every connection and at
 * once sends something that is not Modbus TCP (an HTTP error page: a web server behind the
 * configured port). The line must drop each connection and redial with a growing delay, not at
 * the initial delay forever (issue 7, item 9).
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TcpLine } from '../../agent/acquisition/tcp-line.js';
import { systemClock } from '../../agent/clock.js';
import { silentLogger } from '../helpers/agent.js';

let server: Server;
let port: number;
const sockets = new Set<Socket>();
let connections = 0;
let waiters: Array<{ n: number; resolve: () => void }> = [];

beforeAll(async () => {
  server = createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.write('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n');
    waiters = waiters.filter((w) => (connections >= w.n ? (w.resolve(), false) : true));
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function connectionCount(n: number): Promise<void> {
  return new Promise((resolve) => {
    if (connections >= n) resolve();
    else waiters.push({ n, resolve });
  });
}

describe('TcpLine against a server that answers garbage', () => {
  it('redials with a growing delay: a handful of connections in 2 s, not one every 20 ms', async () => {
    const line = new TcpLine({ id: 'hostile', host: '127.0.0.1', port, connectTimeoutMs: 1000, reopenInitialMs: 20, reopenMaxMs: 5000 }, { clock: systemClock, logger: silentLogger });
    await line.start();
    try {
      await connectionCount(1);
      const from = connections;
      await new Promise((resolve) => setTimeout(resolve, 2000)); // a measurement window, not synchronisation
      const count = connections - from;
      // With backoff the redials come after 20, 40, 80, 160, 320, 640, 1280 ms: at most 7 in 2 s
      // (plus one for a window that runs long on a loaded machine). At a fixed 20 ms it is ~100.
      expect(count).toBeLessThanOrEqual(8);
      expect(count).toBeGreaterThanOrEqual(3);
      expect(line.isOpen).toBe(false);
    } finally {
      await line.stop();
    }
  });
});
