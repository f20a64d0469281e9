/**
 * Modbus RTU master on one serial line (Modbus over Serial Line v1.02).
 *
 * - One request in flight per line: RS-485 is half-duplex and replies to FC03/FC04 do not echo the
 *   address, so overlapping requests corrupt each other (a known modbus-serial failure).
 * - Replies are framed by their expected length, not by a silence timer, so we finish as soon as
 *   the last byte is in.
 * - Every request has our own deadline. A deadline's verdict first lets the bytes already waiting in
 *   the kernel be read (issue 7 item 11): after an event-loop stall the timer phase runs before the
 *   poll phase, and a reply that came in during the stall would otherwise be called a timeout.
 * - The inter-frame silence (3.5 characters, §2.5.1.1) is kept before every send.
 *
 * ## Why a good value is never another request's answer (issue 7 item 1)
 *
 * A read reply carries the unit, the function and a byte count: nothing ties it to the registers
 * asked for. A frame that passes every check can still be (a) a late reply to an earlier request of
 * the same unit, function and length, or (b) a copy of an earlier frame (a repeater's echo). A quiet
 * gap after a timeout cannot tell these apart: a late reply may come after any gap. So instead we
 * keep track of which replies may still be on their way, and accept a frame as good only when it
 * cannot be one of them. We assume of the line only that
 *   A1. a slave answers each request at most once, in the order it received them (it is a
 *       half-duplex device that handles one request at a time);
 *   A2. a copy of a frame (an echo) arrives within `recoveryGapMs` of the original (so
 *       `recoveryGapMs: 0` turns the echo guard R4 off: only for lines known to have no repeater);
 *   A3. the CRC catches corrupted frames;
 *   A4. no reply comes later than LATE_REPLY_HORIZON_MS after its request.
 * Rules:
 *   R1. Per unit, a FIFO of "outstanding" reads: requests that got no reply we could prove was
 *       theirs (timed out, answered by a frame of the wrong length, by surplus bytes, or by an
 *       exception that may have been an earlier request's). Entry: the reply length it would have.
 *   R2. A read whose reply length is outstanding for its unit is not sent. A probe goes first: a
 *       read of the same table, a few registers more or fewer, whose reply length does not occur
 *       in the FIFO up to the read's last entry. A clean frame of the probe's length answers the
 *       probe or an earlier request of that length, so by A1 every entry up to the first of that
 *       length is done: they are retired (all of them when the length was not outstanding), the
 *       read's length with them. Only then is the read sent. A probe may repeat an outstanding
 *       length that lies after the read's entries: without that, a device that stayed silent for
 *       as many polls as there are probe lengths would be locked out until A4's horizon.
 *   R3. A read's frame is good only if unit, function and byte count are those expected and no
 *       byte came after it in the same exchange; before it, only whole clean frames of lengths in
 *       the FIFO (the late replies we expect, skipped). Being of a length that no earlier request
 *       of the unit can still produce (R2), it is not a late reply (a). A clean good frame empties
 *       the unit's FIFO (A1 again).
 *   R4. A read of the unit with the same reply length as a frame received less than
 *       `recoveryGapMs` ago is held until that gap has passed (A2): an echo then comes while
 *       nothing is in flight, not into this read's buffer (b). The same request repeated waits
 *       too: the echo would carry its registers, but if it took the echo, its own reply would
 *       still be owed and could answer a later read of other registers. (So a unit is read at
 *       most once per `recoveryGapMs` per reply length; `recoveryGapMs: 0` lifts that where no
 *       repeater can echo.) A frame taken while one of its kind (length, or exception of its
 *       function) came less than `recoveryGapMs` ago may still be an echo: the read joins the FIFO.
 *   R5. Bytes that arrive while nothing is in flight (after a complete frame, before the next
 *       request) make the line dirty: they are counted, flushed, and the next request fails with
 *       E_MODBUS_LINE_DIRTY without being sent, so the device's error counter moves and the
 *       operator sees why. When they begin with a whole clean frame of another unit, that unit is
 *       to blame, not the next request's: its next request fails instead, and this one goes out
 *       after a flush and a recovery gap (a few times at most, so chatter cannot hold the line).
 *   R6. An exception frame is accepted as an error in any case (never as a value), but while reads
 *       are outstanding it may be an earlier request's, so it retires only the oldest entry
 *       (whichever request it answered, those before it are done, by A1) and the read joins the FIFO.
 *       An exception of the unit and function less than `recoveryGapMs` after another may be its
 *       echo (it fits any read of that function): it retires nothing and the read joins the FIFO.
 * A good value is therefore one whose frame is, by A1–A4, the reply to the request that asked for it.
 * Writes (FC05/06/15/16) echo what they wrote and are checked against the request instead.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../clock.js';
import type { SerialBusDef } from '../config/model.js';
import { ModbusExceptionError, RackguardError } from '../errors.js';
import { crcOk, withCrc } from '../modbus/crc.js';
import { rtuResponseFrameLength } from '../modbus/pdu.js';
import type { LineEvents, ModbusLine } from './line.js';
import { SerialQueue } from './line.js';
import { SerialLink, type PortOpener } from './serial-link.js';

/** A4: replies later than this after their request are assumed never to come. */
export const LATE_REPLY_HORIZON_MS = 60_000;
/** Bytes of dirt kept to tell whose frame it was (the longest RTU frame is 256 bytes). */
const DIRTY_KEEP = 256;
/** Times a request waits out another unit's dirt before it takes the blame itself (R5). */
const MAX_DIRT_WAITS = 3;
/** Memory bound on a unit's outstanding FIFO: at the bound the unit is not asked until entries expire (A4). */
const MAX_OUTSTANDING = 256;

type Outcome = { pdu: Buffer } | { err: Error; recover: boolean };

interface InFlight {
  unitId: number;
  pdu: Buffer;
  fc: number;
  /** Exact reply length (address + PDU + CRC) for reads, undefined for other functions. */
  readLen: number | undefined;
  key: string;
  buf: Buffer;
  sentAt: number;
  writtenAt: number | undefined;
  done: (o: Outcome) => void;
  timer: TimerHandle | undefined;
}

interface UnitStep {
  /** R1: reply lengths of reads whose reply may still come, oldest first. */
  outstanding: Array<{ len: number; at: number }>;
  /**
   * R4: when a frame of a length was last received, per request that got it ('?' = unknown).
   * Exception frames are kept under the negated function code: their echo fits any read of it.
   */
  recent: Map<number, Map<string, number>>;
}

type BusFields = Pick<SerialBusDef, 'id' | 'path' | 'baudRate' | 'parity' | 'dataBits' | 'stopBits' | 'interFrameGapMs' | 'recoveryGapMs' | 'reopenInitialMs' | 'reopenMaxMs'>;

export class RtuLine extends EventEmitter<LineEvents> implements ModbusLine {
  readonly id: string;
  readonly name: string;
  /** See ModbusLine.lastExchangeMs. */
  lastExchangeMs = Number.NaN;
  /** Bytes that no request accounted for (late replies, echoes, noise). */
  discardedBytes = 0;
  /** Probes sent to bring a unit back in step (R2). */
  probes = 0;
  private readonly link: SerialLink;
  private readonly queue = new SerialQueue();
  private readonly units = new Map<number, UnitStep>();
  private inFlight: InFlight | undefined;
  /** Monotonic time before which nothing may be sent. */
  private quietUntil = 0;
  private needsFlush = false;
  /** R5: bytes received with nothing in flight since the last send. */
  private dirtyBytes = 0;
  /** The first bytes of the dirt (up to DIRTY_KEEP), to name its sender and show it. */
  private dirtySample: Buffer | undefined;
  /** R5: units whose frames made the line dirty, with what to tell their next request. */
  private readonly blame = new Map<number, string>();
  private stopped = true;
  /** Bumped by stop(): requests queued before it never reach the wire after a restart. */
  private generation = 0;
  /** The silence before the next send, so stop() can end it rather than leave a timer behind. */
  private quietTimer: TimerHandle | undefined;
  private quietWake: (() => void) | undefined;

  constructor(
    private readonly bus: BusFields,
    private readonly deps: { clock: Clock; logger: Logger; opener?: PortOpener },
  ) {
    super();
    this.id = bus.id;
    this.name = `line:${bus.id}`;
    this.link = new SerialLink(bus, { ...deps, reopenInitialMs: bus.reopenInitialMs, reopenMaxMs: bus.reopenMaxMs });
    this.link.on('data', (chunk) => this.onData(chunk));
    this.link.on('open', () => {
      // A fresh port: whatever the old one carried is gone, but not what a slave may still send.
      this.needsFlush = true;
      this.emit('open');
    });
    this.link.on('close', (reason) => {
      this.failInFlight(new RackguardError('E_PORT_CLOSED', `${this.bus.path}: port lost (${reason})`, { retryable: true }));
      this.emit('close', reason);
    });
  }

  get isOpen(): boolean {
    return this.link.isOpen;
  }

  get portOpens(): number {
    return this.link.opens;
  }

  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    await this.link.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    this.deps.clock.clearTimeout(this.quietTimer);
    this.quietTimer = undefined;
    const wake = this.quietWake;
    this.quietWake = undefined;
    wake?.();
    this.failInFlight(new RackguardError('E_STOPPED', `${this.bus.path}: line stopped`));
    await this.link.stop();
  }

  request(unitId: number, pdu: Buffer, timeoutMs: number): Promise<Buffer> {
    if (this.stopped) return Promise.reject(new RackguardError('E_STOPPED', `${this.bus.path}: line stopped`));
    if (!this.link.isOpen) return Promise.reject(new RackguardError('E_PORT_CLOSED', `${this.bus.path}: port is not open`, { retryable: true }));
    const gen = this.generation;
    return this.queue.run(() => this.transact(unitId, pdu, timeoutMs, gen));
  }

  private unit(unitId: number): UnitStep {
    let u = this.units.get(unitId);
    if (!u) {
      u = { outstanding: [], recent: new Map() };
      this.units.set(unitId, u);
    }
    return u;
  }

  private isOutstanding(u: UnitStep, len: number): boolean {
    const horizon = this.deps.clock.monoMs() - LATE_REPLY_HORIZON_MS;
    while (u.outstanding.length > 0 && u.outstanding[0]!.at < horizon) u.outstanding.shift();
    return u.outstanding.some((o) => o.len === len);
  }

  private addOutstanding(u: UnitStep, len: number): void {
    // Never drop an entry to bound memory: a dropped entry is a late reply we would accept. The
    // bound is kept by not sending (transact), so this grows by at most the request in flight.
    u.outstanding.push({ len, at: this.deps.clock.monoMs() });
  }

  /**
   * R2: whether a probe of reply length `len` could not prove the read of `readLen` in step:
   * `len` occurs in the FIFO at or before the read's last entry.
   */
  private probeBlocked(u: UnitStep, len: number, readLen: number): boolean {
    let last = -1;
    u.outstanding.forEach((o, i) => {
      if (o.len === readLen) last = i;
    });
    for (let i = 0; i <= last; i++) if (u.outstanding[i]!.len === len) return true;
    return false;
  }

  private checkLive(gen: number): void {
    if (this.stopped || gen !== this.generation) throw new RackguardError('E_STOPPED', `${this.bus.path}: line stopped`);
    if (!this.link.isOpen) throw new RackguardError('E_PORT_CLOSED', `${this.bus.path}: port is not open`, { retryable: true });
  }

  private async transact(unitId: number, pdu: Buffer, timeoutMs: number, gen: number): Promise<Buffer> {
    const where = `${this.bus.path} unit ${unitId}`;
    const readLen = expectedReadLength(pdu);
    const u = this.unit(unitId);
    if (readLen !== undefined) this.isOutstanding(u, readLen); // prunes expired entries (A4)
    if (readLen !== undefined && u.outstanding.length >= MAX_OUTSTANDING) {
      throw new RackguardError('E_MODBUS_LINE_DIRTY', `${where}: ${u.outstanding.length} replies may still come; not asked again until they are past the ${LATE_REPLY_HORIZON_MS} ms horizon`, { retryable: true });
    }
    if (readLen !== undefined && this.isOutstanding(u, readLen)) {
      // R2: bring the unit back in step before asking anything a late reply could answer.
      const probe = probePdu(pdu, (len) => this.probeBlocked(u, len, readLen));
      if (!probe) {
        throw new RackguardError('E_MODBUS_LINE_DIRTY', `${where}: earlier replies may still come and no probe read is left to prove the line in step`, { retryable: true });
      }
      this.probes++;
      try {
        await this.exchange(unitId, probe, timeoutMs, gen);
      } catch (err) {
        const e = err instanceof RackguardError ? err : new RackguardError('E_MODBUS_BAD_FRAME', String(err), { cause: err });
        if (e.code === 'E_STOPPED' || e.code === 'E_PORT_CLOSED') throw e;
        // A failed probe may still have retired the entry in the way: an exception (R6) or an
        // earlier reply of that length in its buffer (R1). Otherwise the read waits for next time.
        if (this.isOutstanding(u, readLen)) {
          const code = e.code === 'E_MODBUS_TIMEOUT' ? e.code : 'E_MODBUS_LINE_DIRTY';
          throw new RackguardError(code, `${e.message} (in a probe before the read: earlier replies may still come)`, { cause: e, retryable: true });
        }
      }
      // Even a probe that got a value may not have proved the read in step (a frame that may
      // have been an echo retires nothing): the read goes out only once its length is clear.
      if (this.isOutstanding(u, readLen)) {
        throw new RackguardError('E_MODBUS_LINE_DIRTY', `${where}: earlier replies may still come (a probe before the read could not prove the line in step)`, { retryable: true });
      }
    }
    return this.exchange(unitId, pdu, timeoutMs, gen);
  }

  /** One request on the wire: the silences before it, the send, and its verdict. */
  private async exchange(unitId: number, pdu: Buffer, timeoutMs: number, gen: number): Promise<Buffer> {
    const { clock } = this.deps;
    const readLen = expectedReadLength(pdu);
    const key = pdu.toString('hex');
    for (let dirtWaits = 0; ; dirtWaits++) {
      for (;;) {
        const guard = readLen === undefined ? 0 : this.echoGuardUntil(this.unit(unitId), readLen);
        const wait = Math.max(this.quietUntil, guard) - clock.monoMs();
        if (wait <= 0) break;
        await new Promise<void>((r) => {
          this.quietWake = r;
          this.quietTimer = clock.setTimeout(r, wait);
        });
        this.quietTimer = undefined;
        this.quietWake = undefined;
        this.checkLive(gen);
      }
      this.checkLive(gen);
      if (this.needsFlush || this.dirtyBytes > 0) {
        this.needsFlush = false;
        try {
          await this.link.flushInput();
        } catch (err) {
          this.needsFlush = true; // the input was not cleared: clear it before the next request too
          throw err;
        }
        this.checkLive(gen);
      }
      if (this.dirtyBytes === 0) break;
      // R5. The flush above discarded the rest; the next request goes out after a recovery gap.
      const n = this.dirtyBytes;
      const shown = `${this.dirtySample?.subarray(0, 16).toString('hex') ?? ''}${n > 16 ? '…' : ''}`;
      const sender = this.dirtySample && frameSender(this.dirtySample);
      this.dirtyBytes = 0;
      this.dirtySample = undefined;
      this.quietUntil = clock.monoMs() + this.recoveryGapMs();
      this.needsFlush = true;
      if (sender !== undefined && sender !== unitId && dirtWaits < MAX_DIRT_WAITS) {
        this.blame.set(sender, `${this.bus.path} unit ${sender}: request not sent: a frame of this unit (${n} bytes: ${shown}) arrived while no request was waiting: a late reply or an echo`);
        continue;
      }
      throw new RackguardError(
        'E_MODBUS_LINE_DIRTY',
        `${this.bus.path} unit ${unitId}: request not sent: ${n} unexpected bytes arrived while no request was waiting (${shown}): a late reply, an echo or noise`,
        { retryable: true },
      );
    }
    const blamed = this.blame.get(unitId);
    if (blamed !== undefined) {
      this.blame.delete(unitId);
      throw new RackguardError('E_MODBUS_LINE_DIRTY', blamed, { retryable: true });
    }
    const frame = withCrc(Buffer.concat([Buffer.from([unitId]), pdu]));
    const outcome = await new Promise<Outcome>((done) => {
      const req: InFlight = { unitId, pdu, fc: pdu[0]!, readLen, key, buf: Buffer.alloc(0), sentAt: clock.monoMs(), writtenAt: undefined, done, timer: undefined };
      this.inFlight = req;
      req.timer = clock.setTimeout(() => {
        // The verdict waits until the bytes already received have been read (issue 7 item 11).
        clock.afterPendingIo(() => {
          if (this.inFlight !== req) return;
          if (req.readLen !== undefined) this.addOutstanding(this.unit(unitId), req.readLen);
          const got = req.buf.length > 0 ? ` (${req.buf.length} bytes of a reply)` : '';
          this.settle(req, { err: new RackguardError('E_MODBUS_TIMEOUT', `${this.bus.path} unit ${unitId}: no complete reply within ${timeoutMs} ms${got}`, { retryable: true }), recover: true });
        });
      }, timeoutMs);
      this.link.write(frame).then(
        () => {
          req.writtenAt ??= clock.monoMs();
        },
        (err: Error) => {
          if (this.inFlight === req) this.settle(req, { err, recover: true });
        },
      );
    });
    if ('err' in outcome) throw outcome.err;
    return outcome.pdu;
  }

  private recoveryGapMs(): number {
    return Math.max(this.bus.recoveryGapMs, this.bus.interFrameGapMs);
  }

  /** R4: the earliest time a read of `len` bytes may be sent. */
  private echoGuardUntil(u: UnitStep, len: number): number {
    const seen = u.recent.get(len);
    if (!seen) return 0;
    const now = this.deps.clock.monoMs();
    const gap = this.bus.recoveryGapMs;
    let until = 0;
    for (const [k, at] of seen) {
      if (at + gap <= now) seen.delete(k);
      else until = Math.max(until, at + gap);
    }
    return until;
  }

  private seenWithinGap(u: UnitStep, len: number): boolean {
    const now = this.deps.clock.monoMs();
    for (const at of u.recent.get(len)?.values() ?? []) if (at + this.bus.recoveryGapMs > now) return true;
    return false;
  }

  private noteFrame(unitId: number, len: number, key: string): void {
    const u = this.unit(unitId);
    let seen = u.recent.get(len);
    if (!seen) u.recent.set(len, (seen = new Map()));
    seen.set(key, this.deps.clock.monoMs());
  }

  private onData(chunk: Buffer): void {
    const req = this.inFlight;
    if (!req) {
      // R5: nobody is waiting. Keep the line quiet a little longer so the tail of a frame cannot run
      // into our next request's reply, and fail that request instead of sending it.
      this.discardedBytes += chunk.length;
      this.dirtyBytes += chunk.length;
      if ((this.dirtySample?.length ?? 0) < DIRTY_KEEP) {
        const more = chunk.subarray(0, DIRTY_KEEP - (this.dirtySample?.length ?? 0));
        this.dirtySample = this.dirtySample ? Buffer.concat([this.dirtySample, more]) : Buffer.from(more);
      }
      this.quietUntil = Math.max(this.quietUntil, this.deps.clock.monoMs() + this.bus.interFrameGapMs);
      return;
    }
    req.buf = req.buf.length === 0 ? chunk : Buffer.concat([req.buf, chunk]);
    for (;;) {
      if (req.buf.length === 0) return;
      // Another unit's reply (a late one, say) ahead of ours: skip it whole, as R5 does between
      // requests, so a slow unit does not fail its neighbours' reads. It cannot pass for ours: the
      // bytes after it are framed afresh, unit first.
      const other = this.otherUnitFrame(req);
      if (other === 'wait') return;
      if (other !== undefined) {
        const n = rtuResponseFrameLength(req.buf, req.buf[1]! & 0x7f)!;
        this.discardedBytes += n;
        this.blame.set(other, `${this.bus.path} unit ${other}: request not sent: a frame of this unit (${req.buf.subarray(0, Math.min(n, 16)).toString('hex')}${n > 16 ? '…' : ''}) came in during unit ${req.unitId}'s request: a late reply or an echo`);
        req.buf = req.buf.subarray(n);
        continue;
      }
      // Leading junk or another unit's frame: no need to wait for the rest of it.
      if (req.buf[0] !== req.unitId || (req.buf.length > 1 && (req.buf[1]! & 0x7f) !== req.fc)) {
        const what = req.buf[0] !== req.unitId ? `a reply starting with byte ${req.buf[0]}` : `a reply with function ${req.buf[1]}`;
        this.discardedBytes += req.buf.length;
        if (req.readLen !== undefined) this.addOutstanding(this.unit(req.unitId), req.readLen);
        this.settle(req, { err: new RackguardError('E_MODBUS_BAD_FRAME', `${this.bus.path} unit ${req.unitId}: ${what}, expected unit ${req.unitId} function ${req.fc}`, { retryable: true }), recover: true });
        return;
      }
      const need = rtuResponseFrameLength(req.buf, req.fc);
      if (need === undefined || req.buf.length < need) return;
      if (!this.skipLateReply(req, need)) break;
    }
    this.verdict(req, rtuResponseFrameLength(req.buf, req.fc)!);
  }

  /**
   * Whether the buffer starts with another unit's whole clean read reply or exception (its unit),
   * may still (`'wait'`), or does not (undefined: judged as junk at once).
   */
  private otherUnitFrame(req: InFlight): number | 'wait' | undefined {
    const b = req.buf;
    const unit = b[0]!;
    if (unit === req.unitId || unit < 1 || unit > 247) return undefined;
    if (b.length < 2) return 'wait';
    const fc = b[1]! & 0x7f;
    if (fc < 1 || fc > 4) return undefined;
    const need = rtuResponseFrameLength(b, fc);
    if (need === undefined || b.length < need) return 'wait';
    return crcOk(b.subarray(0, need)) ? unit : undefined;
  }

  /**
   * R1: a clean frame of this unit and function whose length is an outstanding read's, ahead of
   * this request's reply: the late reply we were expecting. Drop it and keep reading; by A1 the
   * replies it leaves outstanding are those after it. Without this a slave that answers a request
   * late stays one reply behind for good, each request getting the previous one's reply.
   */
  private skipLateReply(req: InFlight, need: number): boolean {
    if (req.readLen === undefined || need === req.readLen) return false;
    const frame = req.buf.subarray(0, need);
    if (frame[0] !== req.unitId || frame[1] !== req.fc || !crcOk(frame)) return false;
    const u = this.unit(req.unitId);
    const i = u.outstanding.findIndex((o) => o.len === need);
    if (i < 0) return false;
    // Unless it may be the echo of a recent frame of that length (A2): then it retires nothing.
    if (!this.seenWithinGap(u, need)) u.outstanding.splice(0, i + 1);
    this.noteFrame(req.unitId, need, '?');
    this.discardedBytes += need;
    req.buf = req.buf.subarray(need);
    return true;
  }

  private verdict(req: InFlight, need: number): void {
    const frame = req.buf.subarray(0, need);
    const where = `${this.bus.path} unit ${req.unitId}`;
    const u = this.unit(req.unitId);
    const fail = (err: RackguardError): void => {
      // R1: whatever this frame was, the request's own reply may still come.
      if (req.readLen !== undefined) this.addOutstanding(u, req.readLen);
      this.settle(req, { err, recover: true });
    };
    if (!crcOk(frame)) {
      fail(new RackguardError('E_MODBUS_CRC', `${where}: CRC error in reply`, { retryable: true }));
      return;
    }
    const fromUnit = frame[0]!; // unit and function were checked as the bytes came in
    if (req.buf.length > need) {
      // R3: bytes after the frame in the same exchange. The frame may be an earlier reply and the
      // surplus this request's own: do not trust it.
      this.discardedBytes += req.buf.length - need;
      this.noteFrame(fromUnit, need, '?');
      fail(new RackguardError('E_MODBUS_LINE_DIRTY', `${where}: ${req.buf.length - need} bytes after a complete reply: an echo or a late reply`, { retryable: true }));
      return;
    }
    if (frame[1]! & 0x80) {
      // R6: an exception is an error either way; while reads are outstanding it may be an earlier
      // one's, and shortly after another exception it may be that one's echo.
      const err = new ModbusExceptionError(frame[2]!, where);
      const maybeEcho = this.seenWithinGap(u, -req.fc);
      this.noteFrame(fromUnit, -req.fc, req.key);
      if (maybeEcho) {
        fail(err);
      } else if (u.outstanding.length > 0) {
        u.outstanding.shift();
        fail(err);
      } else {
        this.settle(req, { err, recover: false });
      }
      return;
    }
    if (req.readLen !== undefined && need !== req.readLen) {
      // A length no request of ours is waiting for (late ones were skipped above): not trusted.
      this.noteFrame(fromUnit, need, '?');
      fail(new RackguardError('E_MODBUS_BAD_FRAME', `${where}: reply carries ${need - 5} data bytes, expected ${req.readLen - 5}`, { retryable: true }));
      return;
    }
    if (req.readLen !== undefined && this.isOutstanding(u, req.readLen)) {
      // R2: only a probe goes out while its length is outstanding. This frame answers it or an
      // earlier request of that length: either way (A1) every entry up to the first of that length
      // is done, unless the frame may be an echo (A2). Its own reply may still come (fail()).
      if (!this.seenWithinGap(u, need)) u.outstanding.splice(0, u.outstanding.findIndex((o) => o.len === need) + 1);
      this.noteFrame(fromUnit, need, '?');
      fail(new RackguardError('E_MODBUS_LINE_DIRTY', `${where}: a reply that may be an earlier request's of the same length`, { retryable: true }));
      return;
    }
    const pdu = Buffer.from(frame.subarray(1, need - 2));
    if (req.readLen === undefined && !writeEchoOk(req.pdu, pdu)) {
      fail(new RackguardError('E_MODBUS_BAD_FRAME', `${where}: reply ${pdu.toString('hex')} does not echo the write ${req.pdu.toString('hex')}`, { retryable: true }));
      return;
    }
    const maybeEcho = req.readLen !== undefined && this.seenWithinGap(u, need);
    if (maybeEcho) {
      // R4: the same request repeated inside the echo window: this frame carries its registers,
      // but may be the echo of the last one, so its own reply is still owed.
      this.addOutstanding(u, req.readLen!);
    } else {
      // R3: a clean reply of a length nobody else can still send: ours, and everything before it is done.
      u.outstanding.length = 0;
    }
    if (req.readLen !== undefined) this.noteFrame(fromUnit, need, req.key);
    const now = this.deps.clock.monoMs();
    this.lastExchangeMs = now - (req.writtenAt ?? req.sentAt);
    this.settle(req, { pdu });
  }

  /** Ends the request. `recover` keeps the line silent for recoveryGapMs and flushes before the next send. */
  private settle(req: InFlight, outcome: Outcome): void {
    this.deps.clock.clearTimeout(req.timer);
    this.inFlight = undefined;
    const now = this.deps.clock.monoMs();
    const recover = 'err' in outcome && outcome.recover;
    this.quietUntil = now + (recover ? this.recoveryGapMs() : this.bus.interFrameGapMs);
    if (recover) this.needsFlush = true;
    req.done(outcome);
  }

  private failInFlight(err: Error): void {
    const req = this.inFlight;
    if (!req) return;
    if (req.readLen !== undefined) this.addOutstanding(this.unit(req.unitId), req.readLen);
    this.settle(req, { err, recover: true });
  }
}

/** Exact RTU reply length (address + PDU + CRC) of a read request, or undefined for other functions. */
export function expectedReadLength(pdu: Buffer): number | undefined {
  const fc = pdu[0];
  if (pdu.length !== 5 || fc === undefined || fc < 1 || fc > 4) return undefined;
  const qty = pdu.readUInt16BE(3);
  return 5 + (fc <= 2 ? Math.ceil(qty / 8) : qty * 2);
}

/**
 * R2: a read of the same table, near the same registers, whose reply length `taken` rejects.
 * Fewer registers first (a sub-range is as readable as the range), then more, ending on the same
 * last register or starting on the same first one.
 */
export function probePdu(pdu: Buffer, taken: (len: number) => boolean): Buffer | undefined {
  const fc = pdu[0]!;
  const addr = pdu.readUInt16BE(1);
  const qty = pdu.readUInt16BE(3);
  const bits = fc <= 2;
  const step = bits ? 8 : 1;
  const max = bits ? 2000 : 125;
  const candidates: Array<[number, number]> = [];
  for (let k = 1; k <= 4; k++) {
    const less = qty - k * step;
    if (less >= 1) candidates.push([addr, less]);
    const more = qty + k * step;
    if (more <= max) {
      if (addr + more <= 0x10000) candidates.push([addr, more]);
      if (addr - k * step >= 0) candidates.push([addr - k * step, more]);
    }
  }
  for (const [a, q] of candidates) {
    const probe = Buffer.from([fc, a >> 8, a & 0xff, q >> 8, q & 0xff]);
    if (!taken(expectedReadLength(probe)!)) return probe;
  }
  return undefined;
}

/** The unit of a whole clean reply frame at the start of `buf`, if there is one. */
function frameSender(buf: Buffer): number | undefined {
  const unit = buf[0];
  const fc = buf[1];
  if (unit === undefined || fc === undefined || unit < 1 || unit > 247) return undefined;
  const need = rtuResponseFrameLength(buf, fc & 0x7f);
  if (need === undefined || buf.length < need || !crcOk(buf.subarray(0, need))) return undefined;
  return unit;
}

/** FC05/06 echo the request; FC15/16 echo its address and quantity. Others are not checked. */
function writeEchoOk(request: Buffer, reply: Buffer): boolean {
  const fc = request[0];
  if (fc === 5 || fc === 6) return reply.equals(request);
  if (fc === 15 || fc === 16) return reply.subarray(0, 5).equals(request.subarray(0, 5));
  return true;
}
