import { createServer, connect, type AddressInfo, type Server } from 'node:net';

function listenOnEphemeralPort(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => resolve(server));
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago: the kernel picks it (bind to port 0), we read it
 * and release it. Another process may still grab it before ours binds; that window is small enough for
 * tests, and far better than a fixed port.
 */
export async function freePort(): Promise<number> {
  const server = await listenOnEphemeralPort();
  const { port } = server.address() as AddressInfo;
  await close(server);
  return port;
}

/**
 * `count` distinct free ports (all held open at once before release, so they cannot repeat), e.g. for
 * influxd, which needs an HTTP port and an RPC port.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) servers.push(await listenOnEphemeralPort());
    return servers.map((s) => (s.address() as AddressInfo).port);
  } finally {
    await Promise.all(servers.map(close));
  }
}

/**
 * Resolves once `host:port` accepts a TCP connection. A server gives no event we could await from outside,
 * so this is a bounded poll (every `intervalMs`, default 25) with a deadline of `timeoutMs`. Prefer awaiting
 * a readiness line from the server's own output when it prints one.
 */
export async function waitForPort(
  port: number,
  opts: { host?: string; timeoutMs: number; intervalMs?: number },
): Promise<void> {
  const host = opts.host ?? '127.0.0.1';
  const deadline = performance.now() + opts.timeoutMs;
  let lastError: unknown;
  while (performance.now() < deadline) {
    try {
      await new Promise<void>((resolve, reject) => {
        const socket = connect({ port, host });
        socket.once('connect', () => {
          socket.destroy();
          resolve();
        });
        socket.once('error', (err) => {
          socket.destroy();
          reject(err);
        });
      });
      return;
    } catch (err) {
      lastError = err;
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 25));
    }
  }
  throw new Error(`${host}:${port} did not accept connections within ${opts.timeoutMs} ms`, {
    cause: lastError,
  });
}
