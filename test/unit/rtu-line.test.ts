/**
 * RtuLine through its seams (issue 11 item 4): a fake port through the SerialLink `opener`, time on
 * VirtualClock. Deterministic and fast: framing, the order of quiet gap and flush, stop() mid-wait,
 * the deadline's verdict, the late-reply and dirty-line rules of issue 7 item 1, and the lifecycle.
 */
import { describe, expect, it } from 'vitest';
import { RtuLine } from '../../agent/acquisition/rtu-line.js';
import { FLUSH_DEADLINE_MS } from '../../agent/acquisition/serial-link.js';
import { VirtualClock } from '../../agent/clock.js';
import { withCrc } from '../../agent/modbus/crc.js';
import { readRequestPdu, readResponsePdu } from '../../agent/modbus/pdu.js';
import { silentLogger } from '../helpers/agent.js';
import { fakeOpener, settle, type FakePort } from '../helpers/fake-serial.js';

const RECOVERY = 100;
const GAP = 4;
const TIMEOUT = 300;
const reg1 = readRequestPdu('input', 1, 1);
const reg2 = readRequestPdu('input', 2, 1);
const regs12 = readRequestPdu('input', 1, 2);

/** The RTU frame a slave sends for a read of input registers. */
const replyFrame = (values: number[], unit = 1): Buffer => withCrc(Buffer.concat([Buffer.from([unit]), readResponsePdu(4, values, false)]));
const requestFrame = (pdu: Buffer, unit = 1): Buffer => withCrc(Buffer.concat([Buffer.from([unit]), pdu]));

async function setup(opts: { failFirst?: number } = {}) {
  const clock = new VirtualClock();
  const opener = fakeOpener(clock, opts);
  const line = new RtuLine(
    { id: 'l', path: '/dev/fake', baudRate: 9600, parity: 'none', dataBits: 8, stopBits: 1, interFrameGapMs: GAP, recoveryGapMs: RECOVERY, reopenInitialMs: 500, reopenMaxMs: 4000 },
    { clock, logger: silentLogger, opener },
  );
  await line.start();
  await settle();
  return { clock, opener, line, port: () => opener.ports.at(-1)! };
}

/** A request whose outcome can be looked at while it is still pending. */
function track(p: Promise<Buffer>): { readonly value: Buffer | undefined; readonly code: string | undefined; readonly settled: boolean } {
  const s: { value: Buffer | undefined; code: string | undefined; settled: boolean } = { value: undefined, code: undefined, settled: false };
  p.then(
    (v) => Object.assign(s, { value: v, settled: true }),
    (e: { code?: string }) => Object.assign(s, { code: e.code ?? String(e), settled: true }),
  );
  return s;
}

/** Issues a request and lets it reach the wire (or its wait). */
async function send(line: RtuLine, pdu: Buffer, timeoutMs = TIMEOUT) {
  const t = track(line.request(1, pdu, timeoutMs));
  await settle();
  return t;
}

/** A first request that times out, leaving its reply outstanding. */
async function timeOut(line: RtuLine, clock: VirtualClock, pdu: Buffer) {
  const t = await send(line, pdu);
  clock.advance(TIMEOUT);
  await settle();
  expect(t.code).toBe('E_MODBUS_TIMEOUT');
}

describe('RtuLine framing', () => {
  it('assembles a reply that comes in split chunks, and measures latency from the end of the write', async () => {
    const { line, clock, port } = await setup();
    const t = await send(line, reg1);
    expect(port().writes()).toEqual([requestFrame(reg1)]);
    const reply = replyFrame([231]);
    clock.advance(7);
    port().receive(reply.subarray(0, 2));
    port().receive(reply.subarray(2, 5));
    await settle();
    expect(t.settled).toBe(false);
    clock.advance(1);
    port().receive(reply.subarray(5));
    await settle();
    expect(t.value).toEqual(Buffer.from([4, 2, 0, 231]));
    expect(line.lastExchangeMs).toBe(8);
  });

  it('rejects a reply with leading junk at once, and never as a value', async () => {
    const { line, port } = await setup();
    const t = await send(line, reg1);
    port().receive(Buffer.concat([Buffer.from([0x00]), replyFrame([231])]));
    await settle();
    expect(t.code).toBe('E_MODBUS_BAD_FRAME');
  });

  it('rejects a reply whose byte count is short for the registers asked', async () => {
    const { line, port } = await setup();
    const t = await send(line, regs12);
    port().receive(replyFrame([231])); // 2 data bytes for a 2-register read
    await settle();
    expect(t.code).toBe('E_MODBUS_BAD_FRAME');
  });

  it('rejects a reply with a bad CRC', async () => {
    const { line, port } = await setup();
    const t = await send(line, reg1);
    const bad = replyFrame([231]);
    bad[bad.length - 1]! ^= 0xff;
    port().receive(bad);
    await settle();
    expect(t.code).toBe('E_MODBUS_CRC');
  });
});

describe('RtuLine deadlines and silences', () => {
  it('after a timeout keeps the line quiet for recoveryGapMs, then flushes, then sends', async () => {
    const { line, clock, port } = await setup();
    await timeOut(line, clock, reg1);
    const before = port().events.length;
    const t = await send(line, regs12); // another reply length: no probe needed
    clock.advance(RECOVERY - 1);
    await settle();
    expect(port().events.length).toBe(before);
    clock.advance(1);
    await settle();
    expect(port().events.slice(before).map((e) => [e.kind, e.at])).toEqual([
      ['flush', TIMEOUT + RECOVERY],
      ['write', TIMEOUT + RECOVERY],
    ]);
    port().receive(replyFrame([231, 455]));
    await settle();
    expect(t.value).toEqual(Buffer.from([4, 4, 0, 231, 1, 199]));
  });

  it('stop() during the quiet wait ends the request at once and leaves no timer behind', async () => {
    const { line, clock, port } = await setup();
    await timeOut(line, clock, reg1);
    const writes = port().writes().length;
    const t = await send(line, regs12);
    await line.stop();
    await settle();
    expect(t.code).toBe('E_STOPPED');
    expect(clock.pendingTimers()).toBe(0);
    clock.advance(10 * RECOVERY);
    await settle();
    expect(port().writes().length).toBe(writes);
    expect(port().events.at(-1)?.kind).toBe('close');
  });

  it("a deadline's verdict first reads the bytes that are already waiting", async () => {
    const { line, clock, port } = await setup();
    const t = await send(line, reg1);
    // The reply becomes readable at the very instant of the deadline, after the deadline's timer
    // was armed: the timer runs first, as a Node timer runs before the poll phase.
    clock.setTimeout(() => port().receive(replyFrame([231])), TIMEOUT);
    clock.advance(TIMEOUT);
    await settle();
    expect(t.value).toEqual(Buffer.from([4, 2, 0, 231]));
  });
});

describe('RtuLine: a late reply or an echo is never another request\'s answer', () => {
  it('after a timeout, a read of the same length waits for a probe; the late reply is skipped', async () => {
    const { line, clock, port } = await setup();
    await timeOut(line, clock, reg1);
    const t = await send(line, reg2);
    clock.advance(RECOVERY);
    await settle();
    // The probe: one register more, a reply length no earlier request can produce.
    expect(port().writes().at(-1)).toEqual(requestFrame(readRequestPdu('input', 2, 2)));
    port().receive(replyFrame([231])); // the late reply to the timed-out read of register 1
    port().receive(replyFrame([455, 1003])); // the probe's own reply
    await settle();
    expect(t.settled).toBe(false);
    // The read goes out once the late frame could no longer be echoed into it (R4).
    clock.advance(RECOVERY - 1);
    await settle();
    expect(port().writes().at(-1)).toEqual(requestFrame(readRequestPdu('input', 2, 2)));
    clock.advance(1);
    await settle();
    expect(port().writes().at(-1)).toEqual(requestFrame(reg2));
    port().receive(replyFrame([455]));
    await settle();
    expect(t.value).toEqual(Buffer.from([4, 2, 1, 199]));
    expect(line.probes).toBe(1);
  });

  it('the late reply arriving in the read itself would be refused: the read only goes out once in step', async () => {
    const { line, clock, port } = await setup();
    await timeOut(line, clock, reg1);
    const t = await send(line, reg2);
    clock.advance(RECOVERY);
    await settle();
    // The probe times out too: the read of register 2 is not sent, its request fails.
    clock.advance(TIMEOUT);
    await settle();
    expect(t.code).toBe('E_MODBUS_TIMEOUT');
    expect(port().writes().filter((w) => w.equals(requestFrame(reg2)))).toEqual([]);
  });

  it('bytes that arrive while nothing is in flight fail the next request without sending it', async () => {
    const { line, clock, port } = await setup();
    const first = await send(line, reg1);
    port().receive(replyFrame([231]));
    await settle();
    expect(first.value).toBeDefined();
    port().receive(replyFrame([231])); // an echo, a late reply, noise
    const writes = port().writes().length;
    const t = await send(line, regs12);
    clock.advance(GAP);
    await settle();
    expect(t.code).toBe('E_MODBUS_LINE_DIRTY');
    expect(port().writes().length).toBe(writes);
    // The line is clean again after a recovery gap and a flush.
    const next = await send(line, regs12);
    clock.advance(RECOVERY);
    await settle();
    expect(port().events.slice(-2).map((e) => e.kind)).toEqual(['flush', 'write']);
    port().receive(replyFrame([231, 455]));
    await settle();
    expect(next.value).toBeDefined();
  });

  it("another unit's late reply arriving between requests fails that unit's next request, not this one's", async () => {
    const { line, clock, port } = await setup();
    await timeOut(line, clock, reg1); // unit 1 is slow
    clock.advance(RECOVERY);
    port().receive(replyFrame([231])); // its late reply, while nothing is in flight
    const writes = port().writes().length;
    const unit2 = track(line.request(2, reg1, TIMEOUT));
    await settle();
    clock.advance(GAP);
    await settle();
    clock.advance(RECOVERY);
    await settle();
    // Unit 2 is healthy: its read goes out (after a flush and a recovery gap) and is answered.
    expect(port().writes().slice(writes)).toEqual([requestFrame(reg1, 2)]);
    port().receive(replyFrame([777], 2));
    await settle();
    expect(unit2.value).toEqual(Buffer.from([4, 2, 3, 9]));
    // Unit 1's next request carries the blame, so its error counter moves and says why.
    const unit1 = track(line.request(1, regs12, TIMEOUT));
    clock.advance(GAP);
    await settle();
    expect(unit1.code).toBe('E_MODBUS_LINE_DIRTY');
    expect(port().writes().length).toBe(writes + 1);
  });

  it("another unit's late reply arriving during this read is skipped; this read still gets its own answer", async () => {
    const { line, clock, port } = await setup();
    const t = await send(line, reg1);
    clock.advance(5);
    port().receive(replyFrame([777], 2)); // unit 2's late reply: same length, another unit
    await settle();
    expect(t.settled).toBe(false);
    port().receive(replyFrame([231]));
    await settle();
    expect(t.value).toEqual(Buffer.from([4, 2, 0, 231]));
    // Unit 2's next request carries the blame instead.
    const u2 = track(line.request(2, reg1, TIMEOUT));
    clock.advance(GAP);
    await settle();
    expect(u2.code).toBe('E_MODBUS_LINE_DIRTY');
  });

  it('a frame of another unit with a bad CRC still fails this read at once', async () => {
    const { line, port } = await setup();
    const t = await send(line, reg1);
    const bad = replyFrame([777], 2);
    bad[bad.length - 1]! ^= 0xff;
    port().receive(bad);
    await settle();
    expect(t.code).toBe('E_MODBUS_BAD_FRAME');
  });

  it('a read of other registers with the same reply length waits out the echo window; the echo then fails it', async () => {
    const { line, clock, port } = await setup();
    const first = await send(line, reg1);
    port().receive(replyFrame([231]));
    await settle();
    expect(first.value).toBeDefined();
    const writes = port().writes().length;
    const t = await send(line, reg2);
    clock.advance(10);
    port().receive(replyFrame([231])); // a repeater's echo of register 1's reply
    clock.advance(RECOVERY);
    await settle();
    expect(port().writes().length).toBe(writes);
    expect(t.code).toBe('E_MODBUS_LINE_DIRTY');
  });

  it('the same read repeated waits out the echo window too: an echo it took would leave its own reply owed', async () => {
    const { line, clock, port } = await setup();
    const first = await send(line, reg1);
    port().receive(replyFrame([231]));
    await settle();
    expect(first.value).toBeDefined();
    const at = clock.monoMs();
    await send(line, reg1);
    clock.advance(RECOVERY - 1);
    await settle();
    expect(port().writes().length).toBe(1);
    clock.advance(1);
    await settle();
    expect(port().events.at(-1)).toMatchObject({ kind: 'write', at: at + RECOVERY });
  });

  it("an echoed exception taken by the next read does not let that read's own reply answer a later one", async () => {
    // Found by a randomised run against a model slave: the echo of one read's exception lands in
    // the next read (other registers, 3 registers), which then looks answered; its real reply
    // comes after, into a third read of the same length.
    const { line, clock, port } = await setup();
    const bad = await send(line, readRequestPdu('input', 6, 3));
    clock.advance(20);
    port().receive(withCrc(Buffer.from([1, 0x84, 2])));
    await settle();
    expect(bad.code).toBe('E_MODBUS_EXCEPTION');
    const y = await send(line, readRequestPdu('input', 2, 3));
    clock.advance(GAP);
    await settle();
    clock.advance(10);
    port().receive(withCrc(Buffer.from([1, 0x84, 2]))); // the repeater's echo of the exception
    await settle();
    expect(y.code).toBe('E_MODBUS_EXCEPTION');
    const z = track(line.request(1, readRequestPdu('input', 3, 3), TIMEOUT));
    for (let i = 0; i < 2 * RECOVERY && !z.settled; i++) {
      await settle();
      // Registers 2..4: the reply to the read of register 2, whenever it comes.
      if (i === 60) port().receive(replyFrame([1002, 1003, 1004]));
      clock.advance(1);
    }
    clock.advance(TIMEOUT);
    await settle();
    expect(z.value?.toString('hex')).not.toBe(Buffer.from([4, 6, 3, 0xea, 3, 0xeb, 3, 0xec]).toString('hex'));
  });

  it("the same read repeated within the echo window: an echo it takes leaves its own reply owed", async () => {
    const { line, clock, port } = await setup();
    const first = await send(line, reg1);
    port().receive(replyFrame([231]));
    await settle();
    expect(first.value).toBeDefined();
    const again = await send(line, reg1);
    clock.advance(GAP);
    await settle();
    clock.advance(6);
    port().receive(replyFrame([231])); // the repeater's echo of the first reply
    await settle();
    // A value, if any, carries the right registers.
    if (again.value) expect(again.value).toEqual(Buffer.from([4, 2, 0, 231]));
    const againSent = port().writes().length === 2;
    // The repeated read's own reply, if it went out, is slow; a read of register 2 must never take it.
    const other = track(line.request(1, reg2, TIMEOUT));
    for (let i = 0; i < 3 * RECOVERY && !other.settled; i++) {
      await settle();
      if (i === 150 && againSent) port().receive(replyFrame([231]));
      clock.advance(1);
    }
    clock.advance(2 * TIMEOUT);
    await settle();
    expect(other.value).not.toEqual(Buffer.from([4, 2, 0, 231]));
  });

  it('bytes after a complete reply in the same exchange make it untrusted', async () => {
    const { line, port } = await setup();
    const t = await send(line, reg2);
    port().receive(Buffer.concat([replyFrame([231]), replyFrame([455])]));
    await settle();
    expect(t.code).toBe('E_MODBUS_LINE_DIRTY');
  });

  it('an exception is an error, never a value', async () => {
    const { line, port } = await setup();
    const t = await send(line, reg1);
    port().receive(withCrc(Buffer.from([1, 0x84, 2])));
    await settle();
    expect(t.code).toBe('E_MODBUS_EXCEPTION');
  });
});

describe('RtuLine: a unit that fell out of step always gets back in (liveness)', () => {
  /**
   * A one-register device (register 1 = 231; every other address gets exception 2) that answers
   * in 10 ms, or not at all while `silent` is set: powered off, then back.
   */
  function oneRegisterSlave(clock: VirtualClock, port: () => FakePort, state: { silent: boolean }) {
    const p = port();
    const write = p.write.bind(p);
    p.write = (data: Buffer, cb: (err?: Error | null) => void) => {
      write(data, cb);
      if (state.silent) return;
      const addr = data.readUInt16BE(2);
      const qty = data.readUInt16BE(4);
      const reply = addr === 1 && qty === 1 ? replyFrame([231]) : withCrc(Buffer.from([1, data[1]! | 0x80, 2]));
      clock.setTimeout(() => p.receive(reply), 10);
    };
  }

  /** Runs one request to its end on virtual time. */
  async function complete(line: RtuLine, clock: VirtualClock, pdu: Buffer) {
    const t = track(line.request(1, pdu, TIMEOUT));
    for (let i = 0; i < 10 * (TIMEOUT + RECOVERY) && !t.settled; i++) {
      await settle();
      if (!t.settled) clock.advance(1);
    }
    return t;
  }

  it('after an outage long enough to time out every probe, the first polls after the device is back read it', async () => {
    const { line, clock, port } = await setup();
    const state = { silent: true };
    oneRegisterSlave(clock, port, state);
    // Ten polls, one a second, while the device is off: the read and then each probe time out.
    for (let i = 0; i < 10; i++) {
      const t = await complete(line, clock, reg1);
      expect(t.value).toBeUndefined();
      clock.advance(1000);
    }
    state.silent = false;
    // Back well inside the late-reply horizon: a probe proves the unit in step and the read goes out.
    const outcomes: string[] = [];
    for (let i = 0; i < 3; i++) {
      const t = await complete(line, clock, reg1);
      outcomes.push(t.value ? t.value.toString('hex') : t.code!);
      clock.advance(1000);
    }
    expect(outcomes.at(-1)).toBe('040200e7');
    expect(clock.monoMs()).toBeLessThan(30_000);
  });
});

describe('RtuLine lifecycle', () => {
  it('start → stop → start: one port, one listener, requests work, no timer left after stop', async () => {
    const { line, clock, opener, port } = await setup();
    await line.start(); // a second start while started is a no-op
    await settle();
    expect(opener.ports.length).toBe(1);
    await line.stop();
    await line.stop(); // twice is fine
    expect(clock.pendingTimers()).toBe(0);
    expect(opener.ports[0]!.isOpen).toBe(false);
    await expect(line.request(1, reg1, TIMEOUT)).rejects.toMatchObject({ code: 'E_STOPPED' });

    await line.start();
    await settle();
    expect(opener.ports.length).toBe(2);
    expect(port().dataListeners).toBe(1);
    expect(line.isOpen).toBe(true);
    const t = await send(line, reg1);
    port().receive(replyFrame([231]));
    await settle();
    expect(t.value).toEqual(Buffer.from([4, 2, 0, 231]));
    await line.stop();
    expect(clock.pendingTimers()).toBe(0);
  });

  it('stop() before start() is safe, and a port that fails to open is retried in the background', async () => {
    const clock = new VirtualClock();
    const opener = fakeOpener(clock, { failFirst: 1 });
    const line = new RtuLine(
      { id: 'l', path: '/dev/fake', baudRate: 9600, parity: 'none', dataBits: 8, stopBits: 1, interFrameGapMs: GAP, recoveryGapMs: RECOVERY, reopenInitialMs: 500, reopenMaxMs: 4000 },
      { clock, logger: silentLogger, opener },
    );
    await line.stop();
    await line.start(); // resolves although the port did not open
    await settle();
    expect(line.isOpen).toBe(false);
    await expect(line.request(1, reg1, TIMEOUT)).rejects.toMatchObject({ code: 'E_PORT_CLOSED' });
    clock.advance(500);
    await settle();
    expect(line.isOpen).toBe(true);
    expect(opener.attempts.length).toBe(2);
    await line.stop();
    expect(clock.pendingTimers()).toBe(0);
  });

  it('a request queued before stop() never reaches the wire after a restart', async () => {
    const { line, clock, opener } = await setup();
    await timeOut(line, clock, reg1);
    const queued = await send(line, regs12); // waiting out the recovery gap
    await line.stop();
    await line.start();
    await settle();
    clock.advance(10 * RECOVERY);
    await settle();
    expect(queued.code).toBe('E_STOPPED');
    expect(opener.ports.at(-1)!.writes()).toEqual([]);
  });

  it('a lost port fails the request in flight and comes back by itself', async () => {
    const { line, clock, opener, port } = await setup();
    const t = await send(line, reg1);
    port().lose();
    await settle();
    expect(t.code).toBe('E_PORT_CLOSED');
    clock.advance(500);
    await settle();
    expect(opener.ports.length).toBe(2);
    expect(line.isOpen).toBe(true);
    await line.stop();
  });

  it('an input flush that does not return (a wedged adapter) fails the request by its deadline; the port is reopened once the flush returns', async () => {
    const { line, clock, opener, port } = await setup();
    const first = port();
    first.flushHangs = true;
    const t = await send(line, reg1); // a fresh port is flushed before its first request
    expect(first.events.map((e) => e.kind)).toEqual(['flush']);
    clock.advance(FLUSH_DEADLINE_MS - 1);
    await settle();
    expect(t.settled).toBe(false);
    clock.advance(1);
    await settle();
    expect(t.code).toBe('E_PORT_CLOSED');
    expect(first.writes()).toEqual([]); // nothing was sent on a line whose input was not cleared
    expect(first.events.at(-1)!.kind).toBe('close');
    // Not reopened while the abandoned flush still holds its thread: a wedged adapter would take one
    // more per reopen.
    clock.advance(500 + 1000 + 2000); // three reopen attempts' backoff
    await settle();
    expect(opener.ports.length).toBe(1);
    first.releaseFlushes();
    await settle();
    clock.advance(4000); // the next attempt (reopenMaxMs)
    await settle();
    expect(opener.ports.length).toBe(2);
    const u = await send(line, reg1);
    clock.advance(RECOVERY);
    await settle();
    expect(port().writes()).toEqual([requestFrame(reg1)]);
    port().receive(replyFrame([231]));
    await settle();
    expect(u.value).toEqual(Buffer.from([4, 2, 0, 231]));
    await line.stop();
  });
});
