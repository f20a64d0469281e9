/**
 * TcpLine through its `connect` seam, on VirtualClock: the test plays the Modbus TCP server byte by
 * byte, so a malformed MBAP header, a late transaction id and a silent server are exact and fast.
 */
import { describe, expect, it } from 'vitest';
import { TcpLine } from '../../agent/acquisition/tcp-line.js';
import { VirtualClock } from '../../agent/clock.js';
import { RackguardError } from '../../agent/errors.js';
import { readRequestPdu } from '../../agent/modbus/pdu.js';
import { fakeConnector, flush, mbap } from '../helpers/fake-socket.js';
import { silentLogger } from '../helpers/agent.js';

const BUS = { id: 'plant', host: '192.0.2.10', port: 502, connectTimeoutMs: 1000, reopenInitialMs: 100, reopenMaxMs: 1600 };
const READ = readRequestPdu('holding', 0, 1);
const reply = (value: number) => [0x03, 0x02, value >> 8, value & 0xff];

function setup() {
  const clock = new VirtualClock();
  const { connect, sockets } = fakeConnector();
  const line = new TcpLine(BUS, { clock, logger: silentLogger, connect });
  return { clock, sockets, line };
}

/** Settles a promise into a value or the error, so a rejection can be awaited later without an unhandled warning. */
function outcome<T>(p: Promise<T>): Promise<T | RackguardError> {
  return p.catch((e: RackguardError) => e);
}

/** Connects the latest socket and lets the line see it. */
async function accept(sockets: ReturnType<typeof setup>['sockets']): Promise<void> {
  sockets.at(-1)!.accept();
  await flush();
}

describe('TcpLine on VirtualClock', () => {
  it('a malformed MBAP header drops the connection, and the reconnect delay grows until a good transaction', async () => {
    const { clock, sockets, line } = setup();
    await line.start();
    await accept(sockets);
    expect(line.isOpen).toBe(true);

    // The server answers a request with a header whose protocol id is 5: the stream cannot be trusted.
    const pending = outcome(line.request(1, READ, 500));
    await flush();
    sockets[0]!.send(Buffer.from([0x00, 0x01, 0x00, 0x05, 0x00, 0x05, 0x01, 0x03, 0x02, 0x00, 0x07]));
    const err = await pending;
    expect(err).toBeInstanceOf(RackguardError);
    expect((err as RackguardError).code).toBe('E_PORT_CLOSED');
    expect((err as RackguardError).message).toMatch(/malformed MBAP header/);
    expect(sockets[0]!.destroyed).toBe(true);
    await flush();
    expect(line.isOpen).toBe(false);

    // Each new connection is accepted and answered with garbage at once. Connecting is not success:
    // the delay doubles, 100 → 200 → 400 → 800 → 1600 (the cap), and stays there.
    for (const delay of [100, 200, 400, 800, 1600, 1600]) {
      const n = sockets.length;
      clock.advance(delay - 1);
      await flush();
      expect(sockets.length).toBe(n);
      clock.advance(1);
      await flush();
      expect(sockets.length).toBe(n + 1);
      await accept(sockets);
      sockets.at(-1)!.send(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'));
      await flush();
      expect(sockets.at(-1)!.destroyError?.message).toMatch(/^malformed MBAP header \(protocol id \d+, length \d+\)$/);
    }

    // A server that does speak Modbus TCP: one good transaction resets the backoff.
    clock.advance(1600);
    await flush();
    await accept(sockets);
    const good = line.request(1, READ, 500);
    await flush();
    const s = sockets.at(-1)!;
    s.send(mbap(s.tidOf(0), 1, reply(42)));
    expect((await good).readUInt16BE(2)).toBe(42);
    s.reset();
    await flush();
    const n = sockets.length;
    clock.advance(100);
    await flush();
    expect(sockets.length).toBe(n + 1);
    await line.stop();
  });

  it('a late reply (old transaction id) is dropped, even when it arrives in pieces with the next reply', async () => {
    const { clock, sockets, line } = setup();
    await line.start();
    await accept(sockets);
    const s = sockets[0]!;

    const first = outcome(line.request(1, READ, 300));
    await flush();
    clock.advance(300);
    const timedOut = await first;
    expect((timedOut as RackguardError).code).toBe('E_MODBUS_TIMEOUT');

    const second = line.request(1, READ, 300);
    await flush();
    expect(s.tidOf(1)).not.toBe(s.tidOf(0));
    // Same unit, same function, same length: only the transaction id tells them apart. The two
    // replies arrive in one stream, cut at awkward places.
    const stream = Buffer.concat([mbap(s.tidOf(0), 1, reply(111)), mbap(s.tidOf(1), 1, reply(222))]);
    clock.advance(7);
    s.send(stream.subarray(0, 3));
    s.send(stream.subarray(3, 14));
    s.send(stream.subarray(14));
    expect((await second).readUInt16BE(2)).toBe(222);
    expect(line.unmatchedReplies).toBe(1);
    // From the write of the second request to its reply, not from the first request.
    expect(line.lastExchangeMs).toBe(7);
    expect(line.isOpen).toBe(true);
    await line.stop();
  });

  it('an exception reply without its code is a bad frame, not a device exception', async () => {
    const { sockets, line } = setup();
    await line.start();
    await accept(sockets);
    const s = sockets[0]!;
    const r = outcome(line.request(1, READ, 300));
    await flush();
    s.send(mbap(s.tidOf(0), 1, [0x83])); // MBAP length 2: unit and function, no exception code
    expect((await r as RackguardError).code).toBe('E_MODBUS_BAD_FRAME');
    await line.stop();
  });

  it('latency leaves out the time a request waited in the queue', async () => {
    const { clock, sockets, line } = setup();
    await line.start();
    await accept(sockets);
    const s = sockets[0]!;
    const a = line.request(1, READ, 300);
    const b = line.request(2, READ, 300);
    await flush();
    expect(s.written).toHaveLength(1); // one request at a time: b waits
    clock.advance(40);
    s.send(mbap(s.tidOf(0), 1, reply(1)));
    await a;
    expect(line.lastExchangeMs).toBe(40);
    await flush();
    expect(s.written).toHaveLength(2);
    clock.advance(3);
    s.send(mbap(s.tidOf(1), 2, reply(2)));
    await b;
    expect(line.lastExchangeMs).toBe(3);
    await line.stop();
  });

  it('reconnects after five silent requests in a row, and not after four', async () => {
    const { clock, sockets, line } = setup();
    const opens: number[] = [];
    line.on('open', () => opens.push(clock.monoMs()));
    await line.start();
    await accept(sockets);
    const s = sockets[0]!;

    const silent = async (): Promise<void> => {
      const p = outcome(line.request(1, READ, 250));
      await flush();
      clock.advance(250);
      expect(((await p) as RackguardError).code).toBe('E_MODBUS_TIMEOUT');
    };
    for (let i = 0; i < 4; i++) await silent();
    // A reply ends the streak.
    const ok = line.request(1, READ, 250);
    await flush();
    s.send(mbap(s.tidOf(4), 1, reply(5)));
    await ok;
    for (let i = 0; i < 4; i++) await silent();
    await flush();
    expect(s.destroyed).toBe(false);

    await silent();
    expect(s.destroyed).toBe(true);
    expect(s.destroyError?.message).toMatch(/5 requests in a row unanswered/);
    await flush();
    expect(line.isOpen).toBe(false);
    await expect(line.request(1, READ, 250)).rejects.toMatchObject({ code: 'E_PORT_CLOSED' });

    // The connection was good before (a reply on it), so the first retry comes after the initial delay.
    clock.advance(100);
    await flush();
    expect(sockets).toHaveLength(2);
    await accept(sockets);
    expect(opens).toHaveLength(2);
    const again = line.request(1, READ, 250);
    await flush();
    sockets[1]!.send(mbap(sockets[1]!.tidOf(0), 1, reply(77)));
    expect((await again).readUInt16BE(2)).toBe(77);
    await line.stop();
  });

  it('start → stop → start: one connection, no stale listeners or timers, stop safe at any stage', async () => {
    const { clock, sockets, line } = setup();
    await line.stop(); // before start
    await line.start();
    await line.start(); // twice: still one connection
    expect(sockets).toHaveLength(1);
    await line.stop(); // while connecting
    await line.stop(); // twice
    expect(sockets[0]!.destroyed).toBe(true);
    expect(clock.pendingTimers()).toBe(0);

    await line.start();
    expect(sockets).toHaveLength(2);
    await accept(sockets);
    // The first socket's late events must not reach the new connection.
    sockets[0]!.emit('data', mbap(1, 1, reply(9)));
    sockets[0]!.emit('close');
    expect(line.isOpen).toBe(true);
    const opens: number[] = [];
    line.on('open', () => opens.push(1));
    const p = line.request(1, READ, 300);
    await flush();
    const s = sockets[1]!;
    s.send(mbap(s.tidOf(0), 1, reply(9)));
    expect((await p).readUInt16BE(2)).toBe(9);
    expect(line.unmatchedReplies).toBe(0);

    // Stop with a request in flight: it fails with E_STOPPED, nothing is left scheduled.
    const inFlight = outcome(line.request(1, READ, 300));
    await flush();
    await line.stop();
    expect(((await inFlight) as RackguardError).code).toBe('E_STOPPED');
    expect(clock.pendingTimers()).toBe(0);
    clock.advance(10_000);
    await flush();
    expect(sockets).toHaveLength(2);
    expect(opens).toHaveLength(0);
  });
});

describe('TcpLine transaction ids', () => {
  it('a transaction id that timed out is not reused after the 16-bit counter wraps, so its late reply cannot answer a new request', async () => {
    const { clock, sockets, line } = setup();
    await line.start();
    await accept(sockets);
    const s = sockets[0]!;
    // A server that answers every request at once (in a microtask), unless told to stay silent.
    let silent = true;
    const write = s.write.bind(s);
    s.write = (data: Buffer): boolean => {
      const ok = write(data);
      if (!silent) queueMicrotask(() => s.send(mbap(data.readUInt16BE(0), data[6]!, reply(data.readUInt16BE(10)))));
      return ok;
    };
    const READ_Q = (n: number) => readRequestPdu('holding', 0, n);

    // The request that will be answered late: its value would be 111.
    const lost = outcome(line.request(1, READ, 300));
    await flush();
    clock.advance(300);
    expect(((await lost) as RackguardError).code).toBe('E_MODBUS_TIMEOUT');
    const lostTid = s.tidOf(0);

    // A full turn of the 16-bit counter (each reply carries the quantity as its value, to check each).
    silent = false;
    for (let i = 1; i < 0x10000; i++) {
      const q = (i % 100) + 1;
      const pdu = await line.request(1, READ_Q(q), 300);
      expect(pdu.readUInt16BE(2)).toBe(q);
    }
    // The next request, same unit, function and length as the lost one. The late reply comes now.
    silent = true;
    const next = outcome(line.request(1, READ, 300));
    await flush();
    expect(s.written).toHaveLength(0x10000 + 1);
    s.send(mbap(lostTid, 1, reply(111)));
    clock.advance(300);
    expect(((await next) as RackguardError).code).toBe('E_MODBUS_TIMEOUT');
    expect(s.tidOf(0x10000)).not.toBe(lostTid);
    expect(line.unmatchedReplies).toBe(1);
    await line.stop();
  }, 60_000);
});

describe('TcpLine reconnect on silence', () => {
  it('timeouts of a unit that never answered on this connection do not drop it; once a unit that did answer falls silent too, it is dropped', async () => {
    const { clock, sockets, line } = setup();
    await line.start();
    await accept(sockets);
    const s = sockets[0]!;
    const ok = line.request(1, READ, 250);
    await flush();
    s.send(mbap(s.tidOf(0), 1, reply(3)));
    await ok;

    const silent = async (unit: number): Promise<void> => {
      const p = outcome(line.request(unit, READ, 250));
      await flush();
      clock.advance(250);
      expect(((await p) as RackguardError).code).toBe('E_MODBUS_TIMEOUT');
      await flush();
    };
    // Unit 2, dead behind the gateway: eight timeouts in a row, the connection stays.
    for (let i = 0; i < 8; i++) await silent(2);
    expect(s.destroyed).toBe(false);
    expect(line.isOpen).toBe(true);
    // Unit 1 answered on this connection; now it is silent too: the connection is the problem.
    await silent(1);
    expect(s.destroyed).toBe(true);
    expect(s.destroyError?.message).toBe('9 requests in a row unanswered');
    await line.stop();
  });
});

describe('TcpLine timeout messages', () => {
  it('a server that answers with a transaction id of its own (not echoing ours): a timeout that says a reply came and why it was not taken', async () => {
    const { clock, sockets, line } = setup();
    await line.start();
    await accept(sockets);
    const s = sockets[0]!;
    const p = outcome(line.request(1, READ, 300));
    await flush();
    s.send(mbap(0, 1, reply(42))); // always transaction id 0
    clock.advance(300);
    const err = (await p) as RackguardError;
    expect(err.code).toBe('E_MODBUS_TIMEOUT');
    expect(err.message).toBe(
      `192.0.2.10:502 unit 1: no reply within 300 ms (a reply with transaction id 0 matched no request, expected ${s.tidOf(0)}: a late reply, or a server that does not echo the transaction id)`,
    );
    await line.stop();
  });
});
