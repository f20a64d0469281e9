/**
 * Modbus RTU master on one serial line (Modbus over Serial Line v1.02).
 *
 * - One request in flight per line: RS-485 is half-duplex and replies to FC03/FC04 do not echo the
 *   address, so overlapping requests corrupt each other (a known modbus-serial failure).
 * - Replies are framed by their expected length, not by a silence timer, so we finish as soon as
 *   the last byte is in.
 * - Every request has our own deadline. After a timeout or a bad frame we discard whatever arrives
 *   and keep the line silent for `recoveryGapMs`, then flush the OS buffer before the next send, so
 *   a late reply is never taken as the answer to the next request.
 * - The inter-frame silence (3.5 characters, §2.5.1.1) is kept before every send.
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

interface InFlight {
  unitId: number;
  fc: number;
  buf: Buffer;
  resolve: (pdu: Buffer) => void;
  reject: (err: Error) => void;
  timer: TimerHandle | undefined;
}

export class RtuLine extends EventEmitter<LineEvents> implements ModbusLine {
  readonly id: string;
  readonly name: string;
  /** See ModbusLine.lastExchangeMs. */
  lastExchangeMs = Number.NaN;
  private readonly link: SerialLink;
  private readonly queue = new SerialQueue();
  private inFlight: InFlight | undefined;
  /** Monotonic time before which nothing may be sent. */
  private quietUntil = 0;
  private stopped = true;
  /** Bytes that arrived with no request waiting (late replies, noise). */
  discardedBytes = 0;

  constructor(
    private readonly bus: Pick<SerialBusDef, 'id' | 'path' | 'baudRate' | 'parity' | 'dataBits' | 'stopBits' | 'interFrameGapMs' | 'recoveryGapMs' | 'reopenInitialMs' | 'reopenMaxMs'>,
    private readonly deps: { clock: Clock; logger: Logger; opener?: PortOpener },
  ) {
    super();
    this.id = bus.id;
    this.name = `line:${bus.id}`;
    this.link = new SerialLink(bus, { ...deps, reopenInitialMs: bus.reopenInitialMs, reopenMaxMs: bus.reopenMaxMs });
    this.link.on('data', (chunk) => this.onData(chunk));
    this.link.on('open', () => this.emit('open'));
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
    this.stopped = false;
    this.link.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.deps.clock.clearTimeout(this.quietTimer);
    this.quietWake?.();
    this.failInFlight(new RackguardError('E_STOPPED', `${this.bus.path}: line stopped`));
    await this.link.stop();
  }

  request(unitId: number, pdu: Buffer, timeoutMs: number): Promise<Buffer> {
    if (this.stopped) return Promise.reject(new RackguardError('E_STOPPED', `${this.bus.path}: line stopped`));
    if (!this.link.isOpen) return Promise.reject(new RackguardError('E_PORT_CLOSED', `${this.bus.path}: port is not open`, { retryable: true }));
    return this.queue.run(() => this.transact(unitId, pdu, timeoutMs));
  }

  private async transact(unitId: number, pdu: Buffer, timeoutMs: number): Promise<Buffer> {
    const { clock } = this.deps;
    const wait = this.quietUntil - clock.monoMs();
    if (wait > 0) {
      await new Promise<void>((r) => {
        this.quietWake = r;
        this.quietTimer = clock.setTimeout(r, wait);
      });
      this.quietTimer = undefined;
      this.quietWake = undefined;
    }
    if (this.stopped) throw new RackguardError('E_STOPPED', `${this.bus.path}: line stopped`);
    if (!this.link.isOpen) throw new RackguardError('E_PORT_CLOSED', `${this.bus.path}: port is not open`, { retryable: true });
    if (this.needsFlush) {
      this.needsFlush = false;
      await this.link.flushInput();
    }
    const frame = withCrc(Buffer.concat([Buffer.from([unitId]), pdu]));
    return new Promise<Buffer>((resolve, reject) => {
      const req: InFlight = { unitId, fc: pdu[0]!, buf: Buffer.alloc(0), resolve, reject, timer: undefined };
      this.inFlight = req;
      req.timer = clock.setTimeout(() => {
        if (this.inFlight !== req) return;
        this.settle(req, new RackguardError('E_MODBUS_TIMEOUT', `${this.bus.path} unit ${unitId}: no complete reply within ${timeoutMs} ms`, { retryable: true }), true);
      }, timeoutMs);
      this.link.write(frame).catch((err: Error) => {
        if (this.inFlight === req) this.settle(req, err, true);
      });
    });
  }

  private needsFlush = false;
  /** The silence before the next send, so stop() can end it rather than leave a timer behind. */
  private quietTimer: TimerHandle | undefined;
  private quietWake: (() => void) | undefined;

  private onData(chunk: Buffer): void {
    const req = this.inFlight;
    if (!req) {
      // Nobody is waiting: a late reply or line noise. Drop it and keep the line quiet a little
      // longer, so the tail of a late frame cannot run into our next request's reply.
      this.discardedBytes += chunk.length;
      this.quietUntil = Math.max(this.quietUntil, this.deps.clock.monoMs() + this.bus.interFrameGapMs);
      return;
    }
    req.buf = req.buf.length === 0 ? chunk : Buffer.concat([req.buf, chunk]);
    const need = rtuResponseFrameLength(req.buf, req.fc);
    if (need === undefined || req.buf.length < need) return;
    const frame = req.buf.subarray(0, need);
    if (req.buf.length > need) this.discardedBytes += req.buf.length - need;
    const where = `${this.bus.path} unit ${req.unitId}`;
    if (!crcOk(frame)) {
      this.settle(req, new RackguardError('E_MODBUS_CRC', `${where}: CRC error in reply`, { retryable: true }), true);
    } else if (frame[0] !== req.unitId) {
      this.settle(req, new RackguardError('E_MODBUS_BAD_FRAME', `${where}: reply from unit ${frame[0]}`, { retryable: true }), true);
    } else if ((frame[1]! & 0x7f) !== req.fc) {
      this.settle(req, new RackguardError('E_MODBUS_BAD_FRAME', `${where}: reply has function ${frame[1]}, expected ${req.fc}`, { retryable: true }), true);
    } else if (frame[1]! & 0x80) {
      this.settle(req, new ModbusExceptionError(frame[2]!, where), false);
    } else {
      this.settle(req, Buffer.from(frame.subarray(1, need - 2)), false);
    }
  }

  /** Ends the request. `recover` keeps the line silent for recoveryGapMs and flushes before the next send. */
  private settle(req: InFlight, result: Buffer | Error, recover: boolean): void {
    this.deps.clock.clearTimeout(req.timer);
    this.inFlight = undefined;
    const now = this.deps.clock.monoMs();
    this.quietUntil = now + (recover ? Math.max(this.bus.recoveryGapMs, this.bus.interFrameGapMs) : this.bus.interFrameGapMs);
    if (recover) this.needsFlush = true;
    if (result instanceof Error) req.reject(result);
    else req.resolve(result);
  }

  private failInFlight(err: Error): void {
    const req = this.inFlight;
    if (req) this.settle(req, err, true);
  }
}
