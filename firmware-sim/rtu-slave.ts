/**
 * Modbus RTU slave on a serial port (a real adapter, or one end of a socat pty pair), answering for every
 * unit the SimRack serves on 'rtu'.
 *
 * Requests are framed by LENGTH (`rtuRequestFrameLength`), not by an inter-byte silence timer:
 * modbus-serial's ServerSerial waits 30 ms of silence per frame, which caps it near 30 requests/s, and a
 * pty delivers bytes with no timing at all. A silence timer is only used to drop a stuck partial frame.
 *
 * Optional baud emulation: a pty is instant, so each reply is held back until the moment it would have
 * finished arriving on a real line (request + reply bytes, 3.5 character times of silence, the device's
 * turnaround), computed as a target on the monotonic clock so that the errors of timers do not add up.
 */
import { EventEmitter } from 'node:events';
import { SerialPort } from 'serialport';
import type { Logger } from 'pino';
import { crcOk, withCrc } from '../agent/modbus/crc.js';
import { rtuRequestFrameLength } from '../agent/modbus/pdu.js';
import { RackguardError, asError } from '../agent/errors.js';
import type { SimRack } from './rack.js';

export interface RtuSlaveOptions {
  /** Serial device path (for a test, one end of a socat pty pair). */
  path: string;
  rack: SimRack;
  /** Line settings; they matter for baud emulation only (a pty ignores them). Defaults 9600 8N1. */
  baudRate?: number;
  dataBits?: 7 | 8;
  parity?: 'none' | 'even' | 'odd';
  stopBits?: 1 | 2;
  /** Delay replies as a real line at baudRate would. Default false (answer at once). */
  emulateBaud?: boolean;
  /** Device processing time added before each reply when emulating the baud rate, ms. Default 0. */
  turnaroundMs?: number;
  /** A partial frame followed by this much silence is dropped (resync), ms. Default 50. */
  resyncMs?: number;
  logger?: Logger;
}

export interface RtuSlaveStats {
  frames: number;
  crcErrors: number;
  /** Bytes dropped to resynchronise (bad CRC, unknown function, stuck partial frame). */
  droppedBytes: number;
  broadcastsIgnored: number;
  replies: number;
}

type RtuSlaveEvents = {
  /** The port closed without stop() (for example the pty or USB adapter went away). */
  close: [err: Error | undefined];
  /** A request frame was taken off the line (good CRC), before it is answered or ignored. */
  frame: [frame: Buffer];
  /**
   * Bytes were dropped to resynchronise: a frame with a bad CRC (everything received so far goes), or
   * a partial frame followed by resyncMs of silence. Lets a test await what the slave did with bytes
   * that get no answer, instead of sleeping and looking for the absence of a reply.
   */
  dropped: [bytes: number, why: 'crc' | 'resync'];
};

interface Job {
  cancel(): void;
}

export class RtuSlave extends EventEmitter<RtuSlaveEvents> {
  readonly stats: RtuSlaveStats = { frames: 0, crcErrors: 0, droppedBytes: 0, broadcastsIgnored: 0, replies: 0 };
  private readonly opts: RtuSlaveOptions;
  private port: SerialPort | undefined;
  private opening: Promise<void> | undefined;
  private stopped = false;
  private buf: Buffer = Buffer.alloc(0);
  private resyncTimer: NodeJS.Timeout | undefined;
  private readonly jobs = new Set<Job>();
  /** When the emulated line is next free (end of the last reply), monotonic ms. */
  private lineFreeAtMs = 0;

  constructor(opts: RtuSlaveOptions) {
    super();
    this.opts = opts;
  }

  get path(): string {
    return this.opts.path;
  }

  /** Time to send one character on the emulated line, ms. */
  get charMs(): number {
    const o = this.opts;
    const bitsPerChar = 1 + (o.dataBits ?? 8) + ((o.parity ?? 'none') === 'none' ? 0 : 1) + (o.stopBits ?? 1);
    return (bitsPerChar * 1000) / (o.baudRate ?? 9600);
  }

  /** Opens the port. Rejects (E_PORT_OPEN) when it cannot be opened or `signal` aborts first. */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.stopped) throw new Error('RtuSlave: start after stop');
    const port = new SerialPort({ path: this.opts.path, baudRate: this.opts.baudRate ?? 9600, autoOpen: false });
    this.port = port;
    port.on('data', (chunk: Buffer) => this.onData(chunk));
    // Without an 'error' listener a stream error would crash the process.
    port.on('error', (err) => this.opts.logger?.warn({ err, path: this.opts.path }, 'serial port error'));
    port.on('close', (err?: Error | null) => this.onClose(err ?? undefined));
    this.opening = new Promise<void>((resolve, reject) => {
      port.open((err) => (err ? reject(err) : resolve()));
    });
    const aborted = new Promise<never>((_, reject) => {
      if (signal?.aborted) reject(signal.reason);
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
    try {
      await Promise.race([this.opening, aborted]);
    } catch (err) {
      throw new RackguardError('E_PORT_OPEN', `${this.opts.path}: cannot open serial port: ${asError(err).message}`, { cause: err });
    }
  }

  /** Closes the port and cancels pending replies. Safe at any stage, and twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clearPending();
    const port = this.port;
    if (!port) return;
    try {
      await this.opening;
    } catch {
      // never opened: nothing to close
    }
    if (!port.isOpen) return;
    await new Promise<void>((resolve) => port.close(() => resolve()));
  }

  private clearPending(): void {
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    this.resyncTimer = undefined;
    for (const j of this.jobs) j.cancel();
    this.jobs.clear();
    this.buf = Buffer.alloc(0);
  }

  private onClose(err: Error | undefined): void {
    this.clearPending();
    if (this.stopped) return;
    this.stopped = true;
    this.opts.logger?.warn({ err, path: this.opts.path }, 'serial port closed');
    this.emit('close', err);
  }

  private drop(n: number, why: 'crc' | 'resync'): void {
    this.stats.droppedBytes += n;
    this.emit('dropped', n, why);
  }

  private onData(chunk: Buffer): void {
    if (this.stopped) return;
    const arrivalMs = performance.now();
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      const need = rtuRequestFrameLength(this.buf);
      if (need === undefined) break;
      let frame: Buffer;
      if (need === -1) {
        // A function whose request length we cannot know: take the buffer as one frame if its CRC
        // checks (then the rack answers "illegal function"), else wait for more bytes or the resync.
        if (this.buf.length < 4 || !crcOk(this.buf)) break;
        frame = this.buf;
      } else {
        if (this.buf.length < need) break;
        frame = this.buf.subarray(0, need);
        if (!crcOk(frame)) {
          // Lost sync (noise, a truncated frame before this one): drop everything received so far.
          this.stats.crcErrors++;
          const n = this.buf.length;
          this.buf = Buffer.alloc(0);
          this.drop(n, 'crc');
          break;
        }
      }
      this.buf = this.buf.subarray(frame.length);
      this.onFrame(frame, arrivalMs);
    }
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    this.resyncTimer = undefined;
    if (this.buf.length > 0) {
      this.resyncTimer = setTimeout(() => {
        this.resyncTimer = undefined;
        const n = this.buf.length;
        this.buf = Buffer.alloc(0);
        this.drop(n, 'resync');
      }, this.opts.resyncMs ?? 50);
    }
  }

  private onFrame(frame: Buffer, arrivalMs: number): void {
    this.stats.frames++;
    this.emit('frame', frame);
    const unitId = frame[0]!;
    // Broadcast (unit 0): reads are meaningless and writes get no reply; we serve neither.
    if (unitId === 0) {
      this.stats.broadcastsIgnored++;
      return;
    }
    const pdu = frame.subarray(1, frame.length - 2);
    const result = this.opts.rack.handle('rtu', unitId, pdu);
    const requestBytes = frame.length;
    if (!result.reply) {
      if (this.opts.emulateBaud) this.lineFreeAtMs = Math.max(arrivalMs, this.lineFreeAtMs) + requestBytes * this.charMs;
      return;
    }
    const out = withCrc(Buffer.concat([Buffer.from([unitId]), result.reply]));
    if (result.fault === 'crc') out.writeUInt16LE(out.readUInt16LE(out.length - 2) ^ 0xffff, out.length - 2);
    let targetMs = arrivalMs;
    if (this.opts.emulateBaud) {
      const charMs = this.charMs;
      const gapMs = (this.opts.baudRate ?? 9600) > 19200 ? 1.75 : 3.5 * charMs;
      targetMs = Math.max(arrivalMs, this.lineFreeAtMs) + (requestBytes + out.length) * charMs + gapMs + (this.opts.turnaroundMs ?? 0);
      this.lineFreeAtMs = targetMs;
    }
    if (result.fault === 'late') targetMs += result.delayMs ?? 0;
    this.sendAt(targetMs, out);
  }

  /** Writes `frame` at monotonic time `targetMs`: a coarse timer, then setImmediate for the last ms. */
  private sendAt(targetMs: number, frame: Buffer): void {
    const write = (): void => {
      if (this.stopped || !this.port?.isOpen) return;
      this.stats.replies++;
      this.port.write(frame);
    };
    if (targetMs <= performance.now()) {
      write();
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    let immediate: NodeJS.Immediate | undefined;
    const job: Job = {
      cancel: () => {
        if (timer) clearTimeout(timer);
        if (immediate) clearImmediate(immediate);
      },
    };
    this.jobs.add(job);
    const tick = (): void => {
      timer = undefined;
      immediate = undefined;
      const left = targetMs - performance.now();
      if (left <= 0) {
        this.jobs.delete(job);
        write();
      } else if (left > 2) {
        timer = setTimeout(tick, left - 1.5);
      } else {
        immediate = setImmediate(tick);
      }
    };
    tick();
  }
}
