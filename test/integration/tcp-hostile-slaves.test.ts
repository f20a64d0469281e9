/**
 * TcpLine (and BusPoller over it) against hostile Modbus TCP servers on real loopback sockets.
 *
 * Each server is a Node `net` server in this process, scripted per request: it can answer with a
 * wrong transaction id, a lying MBAP header, a frame cut into single bytes, garbage, or nothing at
 * all, hang up, reset, or stop reading. The invariant checked throughout: every value the line
 * hands back is the value of the register that was asked for. The honest answer to a read of
 * holding register N is the value N, so an answer taken from the wrong request shows up as a
 * wrong number, never as an accident of timing.
 */
import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BusPoller } from '../../agent/acquisition/poller.js';
import { connectTcp, TcpLine, type TcpConnector } from '../../agent/acquisition/tcp-line.js';
import type { Sample } from '../../agent/acquisition/types.js';
import { systemClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import type { DeviceDef } from '../../agent/config/model.js';
import { ModbusExceptionError, RackguardError } from '../../agent/errors.js';
import { readRequestPdu } from '../../agent/modbus/pdu.js';
import { silentLogger } from '../helpers/agent.js';
import { mbap } from '../helpers/fake-socket.js';
import { waitFor } from '../helpers/wait.js';

/** One request as the server parsed it. */
interface Req {
  tid: number;
  unit: number;
  fc: number;
  address: number;
  quantity: number;
  sock: Socket;
  /** Index of the request over the server's life (0 = first). */
  n: number;
}

/** The honest reply: FC03, one register per item, each holding its own address. */
function honest(req: Req, tid = req.tid, unit = req.unit): Buffer {
  const body = [req.fc, req.quantity * 2];
  for (let i = 0; i < req.quantity; i++) body.push(((req.address + i) >> 8) & 0xff, (req.address + i) & 0xff);
  return mbap(tid, unit, body);
}

/** An MBAP frame with every header field chosen by the test. */
function raw(tid: number, protocol: number, length: number, unit: number, pdu: number[]): Buffer {
  const h = Buffer.alloc(7);
  h.writeUInt16BE(tid, 0);
  h.writeUInt16BE(protocol, 2);
  h.writeUInt16BE(length, 4);
  h[6] = unit;
  return Buffer.concat([h, Buffer.from(pdu)]);
}

class HostileSlave extends EventEmitter {
  server!: Server;
  port = 0;
  connections = 0;
  readonly sockets = new Set<Socket>();
  readonly requests: Req[] = [];
  /** What the server does with each parsed request. Default: the honest answer. */
  onRequest: (req: Req) => void = (req) => req.sock.write(honest(req));
  /** What the server does with a new connection before reading it; return false to not read at all. */
  onConnection: (sock: Socket) => boolean = () => true;

  async listen(port = 0): Promise<void> {
    this.server = createServer((sock) => {
      this.connections++;
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
      sock.on('error', () => {});
      const read = this.onConnection(sock);
      if (read) {
        let rx = Buffer.alloc(0);
        sock.on('data', (chunk: Buffer) => {
          rx = Buffer.concat([rx, chunk]);
          while (rx.length >= 6 && rx.length >= 6 + rx.readUInt16BE(4)) {
            const len = rx.readUInt16BE(4);
            const frame = rx.subarray(0, 6 + len);
            rx = rx.subarray(6 + len);
            const req: Req = { tid: frame.readUInt16BE(0), unit: frame[6]!, fc: frame[7]!, address: frame.readUInt16BE(8), quantity: frame.readUInt16BE(10), sock, n: this.requests.length };
            this.requests.push(req);
            this.onRequest(req);
            this.emit('request', req);
          }
        });
      }
      this.emit('connection', sock);
    });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: '127.0.0.1', port }, () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  waitRequests(n: number): Promise<Req> {
    return waitFor(this, 'request', () => this.requests[n - 1], 5000, `${n} requests at the server`);
  }

  waitConnections(n: number): Promise<number> {
    return waitFor(this, 'connection', () => this.connections >= n && this.connections, 10_000, `${n} connections at the server`);
  }
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function slave(): Promise<HostileSlave> {
  const s = new HostileSlave();
  await s.listen();
  cleanups.push(() => s.close());
  return s;
}

function lineTo(port: number, opts: { reopenInitialMs?: number; reopenMaxMs?: number; connect?: TcpConnector } = {}): TcpLine {
  const line = new TcpLine(
    { id: 'hostile', host: '127.0.0.1', port, connectTimeoutMs: 2000, reopenInitialMs: opts.reopenInitialMs ?? 20, reopenMaxMs: opts.reopenMaxMs ?? 200 },
    { clock: systemClock, logger: silentLogger, connect: opts.connect },
  );
  cleanups.push(() => line.stop());
  return line;
}

async function openLine(port: number, opts?: Parameters<typeof lineTo>[1]): Promise<TcpLine> {
  const line = lineTo(port, opts);
  const opened = new Promise<void>((resolve) => line.once('open', () => resolve()));
  await line.start();
  await opened;
  return line;
}

/** Waits until the line is connected again (after the server or the line dropped the connection). */
async function reopened(line: TcpLine): Promise<void> {
  if (line.isOpen) return;
  await new Promise<void>((resolve) => line.once('open', () => resolve()));
}

/**
 * Reads holding register `address` (one register) and returns its value, or the error code. A
 * value other than `address` is a wrong value: the test fails on it wherever it happens.
 */
async function readReg(line: TcpLine, address: number, timeoutMs = 1000, unit = 1): Promise<number | string> {
  try {
    const pdu = await line.request(unit, readRequestPdu('holding', address, 1), timeoutMs);
    if (pdu.length !== 4) return `short reply ${pdu.toString('hex')}`;
    const v = pdu.readUInt16BE(2);
    if (v !== address) throw new Error(`WRONG VALUE: register ${address} read as ${v}`);
    return v;
  } catch (err) {
    if (err instanceof RackguardError) return err.code;
    throw err;
  }
}

async function readErr(line: TcpLine, address: number, timeoutMs = 1000): Promise<RackguardError> {
  try {
    const pdu = await line.request(1, readRequestPdu('holding', address, 1), timeoutMs);
    throw new Error(`expected an error, got ${pdu.toString('hex')}`);
  } catch (err) {
    if (err instanceof RackguardError) return err;
    throw err;
  }
}

describe('late and mismatched replies', () => {
  it('a late reply arriving while the next same-shaped request is in flight is never its answer', async () => {
    const s = await slave();
    // Request 0: no answer. Request 1: only the late answer to request 0 (with request 0's tid).
    // Request 2: the late answer again and then its own, in one segment.
    s.onRequest = (req) => {
      const first = s.requests[0]!;
      if (req.n === 1) req.sock.write(honest(first));
      if (req.n === 2) req.sock.write(Buffer.concat([honest(first), honest(req)]));
      if (req.n >= 3) req.sock.write(honest(req));
    };
    const line = await openLine(s.port);
    expect(await readReg(line, 100, 200)).toBe('E_MODBUS_TIMEOUT');
    expect(await readReg(line, 101, 200)).toBe('E_MODBUS_TIMEOUT');
    expect(await readReg(line, 102)).toBe(102);
    expect(await readReg(line, 103)).toBe(103);
    expect(line.unmatchedReplies).toBe(2);
  });

  it('a late reply cut across the timeout (half before, half after with the next reply) leaves the stream in step', async () => {
    const s = await slave();
    s.onRequest = (req) => {
      const first = s.requests[0]!;
      if (req.n === 0) req.sock.write(honest(req).subarray(0, 9));
      else if (req.n === 1) req.sock.write(Buffer.concat([honest(first).subarray(9), honest(req)]));
      else req.sock.write(honest(req));
    };
    const line = await openLine(s.port);
    expect(await readReg(line, 200, 200)).toBe('E_MODBUS_TIMEOUT');
    expect(await readReg(line, 201)).toBe(201);
    expect(await readReg(line, 202)).toBe(202);
    expect(line.unmatchedReplies).toBe(1);
    expect(s.connections).toBe(1);
  });

  it('transaction ids stay distinct across many requests and a reconnect (no reuse that a late reply could match)', async () => {
    const s = await slave();
    const line = await openLine(s.port);
    for (let i = 0; i < 50; i++) expect(await readReg(line, i)).toBe(i);
    s.onRequest = (req) => req.sock.destroy();
    expect(await readReg(line, 50)).toBe('E_PORT_CLOSED');
    s.onRequest = (req) => req.sock.write(honest(req));
    await reopened(line);
    for (let i = 51; i < 60; i++) expect(await readReg(line, i)).toBe(i);
    const tids = s.requests.map((r) => r.tid);
    expect(new Set(tids).size).toBe(tids.length);
  });

  it('a reply for another unit id is a bad frame naming both units', async () => {
    const s = await slave();
    s.onRequest = (req) => req.sock.write(honest(req, req.tid, req.n === 0 ? 7 : req.unit));
    const line = await openLine(s.port);
    const err = await readErr(line, 5);
    expect(err.code).toBe('E_MODBUS_BAD_FRAME');
    expect(err.message).toMatch(/unit 1.*unit 7/);
    expect(await readReg(line, 6)).toBe(6);
  });

  it('a reply with another function code is a bad frame, an exception reply is a ModbusExceptionError with its code', async () => {
    const s = await slave();
    s.onRequest = (req) => {
      if (req.n === 0) req.sock.write(mbap(req.tid, req.unit, [0x04, 0x02, 0x00, req.address]));
      else if (req.n === 1) req.sock.write(mbap(req.tid, req.unit, [0x83, 0x02]));
      else req.sock.write(honest(req));
    };
    const line = await openLine(s.port);
    expect((await readErr(line, 9)).code).toBe('E_MODBUS_BAD_FRAME');
    const ex = await readErr(line, 10);
    expect(ex).toBeInstanceOf(ModbusExceptionError);
    expect((ex as ModbusExceptionError).exceptionCode).toBe(2);
    expect(ex.message).toMatch(/unit 1: Modbus exception 2 \(illegal data address\)/);
    expect(await readReg(line, 11)).toBe(11);
  });
});

describe('lying and broken framing', () => {
  it('protocol id other than 0, with the right transaction id: no value; the line reconnects and reads again', async () => {
    const s = await slave();
    s.onRequest = (req) => req.sock.write(req.n === 0 ? raw(req.tid, 1, 5, req.unit, [3, 2, 0, req.address]) : honest(req));
    const line = await openLine(s.port);
    const err = await readErr(line, 20);
    expect(err.code).toBe('E_PORT_CLOSED');
    expect(err.message).toMatch(/malformed MBAP header/);
    await reopened(line);
    expect(await readReg(line, 21)).toBe(21);
  });

  for (const length of [0, 1, 65535, 300]) {
    it(`MBAP length ${length}: no value; the line reconnects and reads again`, async () => {
      const s = await slave();
      s.onRequest = (req) => req.sock.write(req.n === 0 ? raw(req.tid, 0, length, req.unit, [3, 2, 0, req.address]) : honest(req));
      const line = await openLine(s.port);
      const out = await readReg(line, 30, 200);
      expect(['E_PORT_CLOSED', 'E_MODBUS_TIMEOUT']).toContain(out);
      await reopened(line);
      for (let a = 31; a < 34; a++) {
        const v = await readReg(line, a);
        if (v === 'E_PORT_CLOSED') await reopened(line);
        else expect(v).toBe(a);
      }
    });
  }

  it('MBAP length shorter than the PDU sent: no value, and the leftover bytes never become a value', async () => {
    const s = await slave();
    // The header claims unit + function + byte count (3); the two data bytes follow anyway. The
    // leftover is crafted to look like the start of a frame with the next transaction id.
    s.onRequest = (req) => {
      if (req.n === 0) {
        const next = (req.tid + 1) & 0xffff;
        req.sock.write(Buffer.concat([raw(req.tid, 0, 3, req.unit, [3, 2]), raw(next, 0, 5, req.unit, [3, 2, 0x0b, 0xad]).subarray(0, 2)]));
      } else if (req.n === 1) {
        // Completes the crafted frame: as if register 0x0bad (2989) were the answer.
        req.sock.write(raw(req.tid, 0, 5, req.unit, [3, 2, 0x0b, 0xad]).subarray(2));
      } else req.sock.write(honest(req));
    };
    const line = await openLine(s.port);
    const outcomes: Array<number | string> = [];
    outcomes.push(await readReg(line, 40));
    await reopened(line);
    outcomes.push(await readReg(line, 41));
    await reopened(line);
    outcomes.push(await readReg(line, 42));
    expect(outcomes[0]).toBe('E_MODBUS_BAD_FRAME');
    expect(outcomes[2]).toBe(42);
  });

  it('MBAP length longer than the PDU sent: the request times out, and the next reply is never read into the old frame as a value', async () => {
    const s = await slave();
    s.onRequest = (req) => req.sock.write(req.n === 0 ? raw(req.tid, 0, 9, req.unit, [3, 2, 0, req.address]) : honest(req));
    const line = await openLine(s.port);
    expect(await readReg(line, 50, 200)).toBe('E_MODBUS_TIMEOUT');
    // Whatever the line makes of the stream now, a value is the right one.
    let got: number | string = '';
    for (let a = 51; a < 60 && got !== a; a++) {
      await reopened(line);
      got = await readReg(line, a);
    }
    expect(typeof got).toBe('number');
  });

  it('a reply cut into single bytes with pauses is read whole', async () => {
    const s = await slave();
    s.onRequest = (req) => {
      const bytes = honest(req);
      let i = 0;
      const next = (): void => {
        if (i < bytes.length && !req.sock.destroyed) {
          req.sock.write(bytes.subarray(i, ++i));
          setTimeout(next, 10);
        }
      };
      next();
    };
    const line = await openLine(s.port);
    for (let a = 60; a < 63; a++) expect(await readReg(line, a)).toBe(a);
  });

  it('two replies in one segment (a duplicate after the answer): each request gets its own value', async () => {
    const s = await slave();
    s.onRequest = (req) => req.sock.write(Buffer.concat([honest(req), honest(req)]));
    const line = await openLine(s.port);
    for (let a = 70; a < 75; a++) expect(await readReg(line, a)).toBe(a);
    expect(line.unmatchedReplies).toBe(5);
  });

  it('garbage before a valid frame: no value; the line reconnects and reads again', async () => {
    const s = await slave();
    s.onRequest = (req) => req.sock.write(req.n === 0 ? Buffer.concat([Buffer.from('\r\nOK\r\n'), honest(req)]) : honest(req));
    const line = await openLine(s.port);
    expect(await readReg(line, 80)).toBe('E_PORT_CLOSED');
    await reopened(line);
    expect(await readReg(line, 81)).toBe(81);
  });

  it('a server that resets mid-reply: no value; the next connection reads again', async () => {
    const s = await slave();
    s.onRequest = (req) => {
      if (req.n === 0) {
        req.sock.write(honest(req).subarray(0, 8));
        setTimeout(() => req.sock.resetAndDestroy(), 20);
      } else req.sock.write(honest(req));
    };
    const line = await openLine(s.port);
    const err = await readErr(line, 90);
    expect(err.code).toBe('E_PORT_CLOSED');
    await reopened(line);
    expect(await readReg(line, 91)).toBe(91);
  });
});

describe('dead and unreachable servers', () => {
  it('a server that never replies (and stops reading): timeouts, then a reconnect after five', async () => {
    const s = await slave();
    s.onConnection = (sock) => {
      if (s.connections === 1) {
        sock.pause();
        return false;
      }
      return true;
    };
    const line = await openLine(s.port);
    for (let i = 0; i < 5; i++) expect(await readReg(line, 100 + i, 100)).toBe('E_MODBUS_TIMEOUT');
    await s.waitConnections(2);
    await reopened(line);
    expect(await readReg(line, 110)).toBe(110);
  });

  it('a server that closes right after accept: no value, and redials back off', async () => {
    const s = await slave();
    s.onConnection = (sock) => {
      sock.end();
      return false;
    };
    const line = lineTo(s.port, { reopenInitialMs: 20, reopenMaxMs: 5000 });
    await line.start();
    await s.waitConnections(1);
    expect(await readReg(line, 1)).toMatch(/E_PORT_CLOSED/);
    const from = s.connections;
    await new Promise((resolve) => setTimeout(resolve, 1500)); // a measurement window, not synchronisation
    // 20, 40, 80, 160, 320, 640 ms: at most 6 redials in 1.5 s (+1 for a loaded machine), not 75.
    expect(s.connections - from).toBeLessThanOrEqual(7);
  });

  it('connection refused, then the server comes up: the line connects and reads', async () => {
    // A port that was free a moment ago: nothing listens on it.
    const probe = new HostileSlave();
    await probe.listen();
    const port = probe.port;
    await probe.close();
    const attempts = new EventEmitter();
    let tries = 0;
    const connect: TcpConnector = (t) => {
      tries++;
      attempts.emit('try');
      return connectTcp(t);
    };
    const line = lineTo(port, { reopenInitialMs: 20, reopenMaxMs: 100, connect });
    await line.start();
    await waitFor(attempts, 'try', () => tries >= 3, 5000, 'three refused connects');
    expect(line.isOpen).toBe(false);
    expect(await readReg(line, 1)).toBe('E_PORT_CLOSED');
    const s = new HostileSlave();
    await s.listen(port);
    cleanups.push(() => s.close());
    await reopened(line);
    expect(await readReg(line, 2)).toBe(2);
  });
});

function devices(busYaml: string): DeviceDef[] {
  const config = parseConfig(`version: 1\nbuses:\n${busYaml}`, 'tcp-hostile.yaml');
  return config.buses.flatMap((b) => (b.type === 'serial-stream' ? [] : [...b.devices]));
}

describe('BusPoller over hostile servers', () => {
  it('a server that never answers does not slow a device on another bus; its device never gets a number', async () => {
    const dead = await slave();
    dead.onRequest = () => {};
    const good = await slave();
    // xy-md02: input registers 1 and 2, one read of two registers.
    good.onRequest = (req) => req.sock.write(mbap(req.tid, req.unit, [4, 4, 0, 231, 1, 0xc2]));
    const defs = devices(
      `  - { id: a, type: tcp, host: 127.0.0.1, port: ${dead.port}, devices: [ { id: dead, profile: xy-md02, unitId: 1, pollIntervalMs: 100, timeoutMs: 300, backoffInitialMs: 50, backoffMaxMs: 100 } ] }\n` +
        `  - { id: b, type: tcp, host: 127.0.0.1, port: ${good.port}, devices: [ { id: live, profile: xy-md02, unitId: 1, pollIntervalMs: 100, timeoutMs: 300 } ] }\n`,
    );
    const lineA = await openLine(dead.port);
    const lineB = await openLine(good.port);
    const samples = new EventEmitter();
    const byDevice: Record<string, Sample[][]> = { dead: [], live: [] };
    const mk = (line: TcpLine, def: DeviceDef): BusPoller => {
      const p = new BusPoller([def], line, { clock: systemClock, logger: silentLogger, onSamples: (s, d) => (byDevice[d.id]!.push(s), samples.emit('s')) });
      cleanups.push(() => p.stop());
      return p;
    };
    await mk(lineA, defs[0]!).start();
    await mk(lineB, defs[1]!).start();
    await waitFor(samples, 's', () => byDevice.dead!.length >= 2, 5000, 'two polls of the dead device');
    // While the dead device used up two 300 ms timeouts, the live one kept its 100 ms cadence
    // (about 7 polls; 2 at most if it had to wait behind the dead one).
    expect(byDevice.live!.length).toBeGreaterThanOrEqual(3);
    expect(byDevice.live!.flat().every((s) => s.quality === 'good' && typeof s.value === 'number')).toBe(true);
    expect(byDevice.dead!.flat().every((s) => s.value === null && s.quality === 'comm_error' && /E_MODBUS_TIMEOUT/.test(s.reason!))).toBe(true);
  });

  it('a well-framed reply carrying fewer registers than asked: comm_error naming the read, never a number', async () => {
    const s = await slave();
    s.onRequest = (req) => req.sock.write(mbap(req.tid, req.unit, [4, 2, 0, 231]));
    const [def] = devices(`  - { id: a, type: tcp, host: 127.0.0.1, port: ${s.port}, devices: [ { id: th, profile: xy-md02, unitId: 1, pollIntervalMs: 100, timeoutMs: 300 } ] }\n`);
    const line = await openLine(s.port);
    const got: Sample[][] = [];
    const ev = new EventEmitter();
    const p = new BusPoller([def!], line, { clock: systemClock, logger: silentLogger, onSamples: (x) => (got.push(x), ev.emit('s')) });
    cleanups.push(() => p.stop());
    await p.start();
    await waitFor(ev, 's', () => got.length >= 1, 5000, 'one poll');
    const batch = got[0]!;
    expect(batch.map((x) => x.pointId).sort()).toEqual(['th.humidity', 'th.temperature']);
    for (const x of batch) {
      expect(x.value).toBeNull();
      expect(x.quality).toBe('comm_error');
      expect(x.reason).toMatch(/E_MODBUS_BAD_FRAME/);
      expect(x.reason).toMatch(/input register 1 \(×2\)/);
    }
  });
});

describe('a gateway with one dead unit behind it', () => {
  it('the dead unit’s timeouts do not drop the connection its live neighbour answers on', async () => {
    const s = await slave();
    // Unit 1 answers, unit 2 (dead behind the gateway) never does.
    s.onRequest = (req) => {
      if (req.unit === 1) req.sock.write(mbap(req.tid, 1, [4, 4, 0, 231, 1, 0xc2]));
    };
    // The dead unit is asked far more often than the live one: five timeouts in a row come
    // between two reads of the live unit.
    const [bus] = parseConfig(
      `version: 1\nbuses:\n  - { id: gw, type: tcp, host: 127.0.0.1, port: ${s.port}, reopenInitialMs: 100, devices: [` +
        ` { id: live, profile: xy-md02, unitId: 1, pollIntervalMs: 400, timeoutMs: 2000 },` +
        ` { id: dead, profile: xy-md02, unitId: 2, pollIntervalMs: 40, timeoutMs: 40, backoffInitialMs: 20, backoffMaxMs: 20 } ] }\n`,
      'gateway.yaml',
    ).buses;
    if (!bus || bus.type !== 'tcp') throw new Error('expected a tcp bus');
    const line = await openLine(s.port, { reopenInitialMs: 100 });
    const live: Sample[][] = [];
    const states: string[] = [];
    const ev = new EventEmitter();
    const p = new BusPoller(bus.devices, line, {
      clock: systemClock,
      logger: silentLogger,
      onSamples: (x, d) => {
        if (d.id === 'live') live.push(x);
        ev.emit('s');
      },
      onDeviceState: (h, from) => states.push(`${h.deviceId}: ${from} → ${h.state}`),
    });
    cleanups.push(() => p.stop());
    await p.start();
    await waitFor(ev, 's', () => live.length >= 5, 10_000, 'five polls of the live unit');
    await p.stop();
    expect(s.requests.filter((r) => r.unit === 2).length).toBeGreaterThanOrEqual(10);
    expect(live.flat().map((x) => x.quality)).toEqual(Array(10).fill('good'));
    expect(states.filter((x) => x.startsWith('live'))).toEqual(['live: unknown → online']);
    expect(s.connections).toBe(1);
  });
});
