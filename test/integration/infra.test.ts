/**
 * Smoke test of the test helpers themselves: if this file fails, every integration test built on them is
 * suspect. Real parts only: socat ptys, the pymodbus RTU server, loopback sockets.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import ModbusRTUModule from 'modbus-serial';
import { SerialPort } from 'serialport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, freePorts } from '../helpers/ports.js';
import { spawnAndWait } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { startPymodbusServer, type PymodbusServer } from '../helpers/pymodbus.js';
import { tempDir } from '../helpers/tmp.js';

// modbus-serial's typings declare an ES default export, but the package is CommonJS with
// `module.exports = ModbusRTU`: under NodeNext, TypeScript types the default import as the whole module
// (class under `.default`) while Node hands over the class itself. Accept both.
const ModbusRTU = ((ModbusRTUModule as unknown as { default?: unknown }).default ??
  ModbusRTUModule) as typeof ModbusRTUModule.default;

async function openPort(path: string): Promise<SerialPort> {
  const port = new SerialPort({ path, baudRate: 9600, autoOpen: false });
  await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
  return port;
}

async function closePort(port: SerialPort): Promise<void> {
  if (!port.isOpen) return;
  await new Promise<void>((resolve, reject) => port.close((err) => (err ? reject(err) : resolve())));
}

/** Resolves with the first `length` bytes that arrive on `port`, or rejects after `timeoutMs`. */
function receive(port: SerialPort, length: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received >= length) {
        cleanup();
        resolve(Buffer.concat(chunks).subarray(0, length));
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`received ${received} of ${length} bytes within ${timeoutMs} ms`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      port.off('data', onData);
    };
    port.on('data', onData);
  });
}

async function roundTrip(pair: PtyPair): Promise<void> {
  const a = await openPort(pair.a);
  const b = await openPort(pair.b);
  try {
    // Every byte value, including the ones a cooked tty would eat or translate (0x03, 0x0a, 0x0d, 0x7f).
    const aToB = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const bToA = Buffer.from([0x01, 0x04, 0x00, 0x01, 0x00, 0x02, 0x20, 0x0b]);
    const gotB = receive(b, aToB.length, 2000);
    a.write(aToB);
    expect(await gotB).toEqual(aToB);
    const gotA = receive(a, bToA.length, 2000);
    b.write(bToA);
    expect(await gotA).toEqual(bToA);
  } finally {
    await closePort(a);
    await closePort(b);
  }
}

describe('pty pair (socat)', () => {
  let pair: PtyPair;
  beforeAll(async () => {
    pair = await startPtyPair();
  });
  afterAll(async () => {
    await pair?.stop();
  });

  it('links both ends to distinct /dev/pts devices', () => {
    expect(pair.devices).toHaveLength(2);
    expect(pair.devices![0]).toMatch(/^\/dev\/pts\/\d+$/);
    expect(pair.devices![1]).not.toBe(pair.devices![0]);
    expect(existsSync(pair.a) && existsSync(pair.b)).toBe(true);
  });

  it('carries raw bytes both ways', async () => {
    await roundTrip(pair);
  });

  it('unplugs (links vanish) and replugs on the same paths', async () => {
    const [a, b] = [pair.a, pair.b];
    await pair.unplug();
    expect(existsSync(a) || existsSync(b)).toBe(false);
    expect(pair.proc.exitCode ?? pair.proc.signalCode).not.toBeNull();
    await pair.replug();
    expect([pair.a, pair.b]).toEqual([a, b]);
    await roundTrip(pair);
  });

  it('starts a pair in a dir it does not own, and leaves the dir behind', async () => {
    const dir = await tempDir('rackguard-infra-');
    try {
      const first = await startPtyPair({ dir: dir.path });
      await first.stop();
      const second = await startPtyPair({ dir: dir.path });
      expect(second.a).toBe(first.a);
      await roundTrip(second);
      await second.stop();
      expect(existsSync(dir.path)).toBe(true);
    } finally {
      await dir.cleanup();
    }
  });
});

describe('pymodbus RTU server answering modbus-serial over a pty', () => {
  let pair: PtyPair;
  let server: PymodbusServer;
  const client = new ModbusRTU();

  beforeAll(async () => {
    pair = await startPtyPair();
    server = await startPymodbusServer({
      port: pair.b,
      baud: 9600,
      units: {
        1: { input: { 1: 235, 2: 451 }, holding: { 0: 123, 0x101: 1, 0x102: 0 } },
        7: { input: { 1: -52, 2: 999 }, coil: { 3: 1 }, discrete: { 0: true } },
      },
    });
    await client.connectRTUBuffered(pair.a, { baudRate: 9600 });
    client.setTimeout(1000);
  });

  afterAll(async () => {
    if (client.isOpen) await new Promise<void>((resolve) => client.close(() => resolve()));
    await server?.stop();
    await pair?.stop();
  });

  it('reads input registers at the addresses written (no +1 offset)', async () => {
    client.setID(1);
    expect((await client.readInputRegisters(1, 2)).data).toEqual([235, 451]);
    expect((await client.readInputRegisters(0, 4)).data).toEqual([0, 235, 451, 0]);
  });

  it('reads holding registers', async () => {
    client.setID(1);
    expect((await client.readHoldingRegisters(0, 1)).data).toEqual([123]);
    expect((await client.readHoldingRegisters(0x101, 2)).data).toEqual([1, 0]);
  });

  it('serves several units with their own tables, signed values as two-complement', async () => {
    client.setID(7);
    expect((await client.readInputRegisters(1, 2)).data).toEqual([0x10000 - 52, 999]);
    expect((await client.readCoils(3, 1)).data[0]).toBe(true);
    expect((await client.readDiscreteInputs(0, 1)).data[0]).toBe(true);
    expect((await client.readHoldingRegisters(0, 1)).data).toEqual([0]);
  });

  it('keeps written holding registers', async () => {
    client.setID(1);
    await client.writeRegister(5, 4242);
    expect((await client.readHoldingRegisters(5, 1)).data).toEqual([4242]);
  });

  // Last in this block: after a timeout, a late reply could be taken for the next request's answer.
  it('stays silent for a unit it does not serve', async () => {
    client.setID(2);
    client.setTimeout(300);
    await expect(client.readInputRegisters(1, 1)).rejects.toMatchObject({ name: 'TransactionTimedOutError' });
  });
});

describe('free ports', () => {
  function bind(port: number): Promise<Server> {
    return new Promise((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve(server));
    });
  }

  it('hands out distinct ports that can be bound on loopback', async () => {
    const ports = [...(await freePorts(4)), await freePort()];
    expect(ports.slice(0, 4).length).toBe(new Set(ports.slice(0, 4)).size);
    const servers: Server[] = [];
    try {
      for (const port of ports.slice(0, 4)) servers.push(await bind(port));
      expect(servers).toHaveLength(4);
    } finally {
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    }
    const last = await bind(ports[4]!);
    await new Promise((r) => last.close(r));
    for (const port of ports) expect(port).toBeGreaterThan(0);
  });
});

describe('spawnAndWait', () => {
  it('resolves on the ready line and reports the exit code from stop()', async () => {
    const p = await spawnAndWait('sh', ['-c', 'echo starting >&2; echo up; exec sleep 30'], {
      readyLine: /^up$/,
      timeoutMs: 5000,
    });
    // stdout and stderr are separate pipes: their lines may arrive in either order.
    expect(p.readyLine).toBe('up');
    await p.waitForLine(/^starting$/, 5000);
    expect([...p.lines].sort()).toEqual(['starting', 'up']);
    expect(await p.stop()).toBeNull(); // died of SIGTERM
    expect((await p.exited).signal).toBe('SIGTERM');
  });

  it('rejects with the collected output when the process exits first', async () => {
    await expect(
      spawnAndWait('sh', ['-c', 'echo something went wrong; exit 3'], { readyLine: /^up$/, timeoutMs: 5000 }),
    ).rejects.toThrow(/exited \(code 3[\s\S]*something went wrong/);
  });

  it('rejects on timeout and kills the process', async () => {
    const dir = await tempDir('rackguard-infra-');
    try {
      const pidFile = `${dir.path}/pid`;
      await expect(
        spawnAndWait('sh', ['-c', `echo $$ > ${pidFile}; echo waiting; exec sleep 30`], {
          readyLine: /^up$/,
          // Long enough that the shell writes its pid and line first, however loaded the machine.
          timeoutMs: 2000,
        }),
      ).rejects.toThrow(/within 2000 ms[\s\S]*waiting/);
      const pid = Number(await readFile(pidFile, 'utf8'));
      expect(pid).toBeGreaterThan(0);
      expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    } finally {
      await dir.cleanup();
    }
  });

  it('rejects when the command does not exist', async () => {
    await expect(
      spawnAndWait('/nonexistent/rackguard-no-such-binary', [], { readyLine: /x/, timeoutMs: 5000 }),
    ).rejects.toThrow(/could not be started/);
  });
});
