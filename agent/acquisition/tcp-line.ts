/**
 * Modbus TCP client for one connection (Modbus Messaging on TCP/IP Implementation Guide v1.0b).
 *
 * Replies are matched by MBAP transaction id, so a late reply to a timed-out request is recognised
 * and dropped; ids that timed out are not reused on the connection when the 16-bit counter wraps.
 * A frame whose MBAP header contradicts its PDU (protocol id, length, byte count) puts the stream
 * out of step: the connection is dropped rather than resynchronised by guesswork, since bytes left
 * over from a lying header can form a frame with the next id.
 *
 * One request at a time per connection: many chiller controllers and RTU gateways serve a single
 * outstanding request and silently drop the rest. A lost connection (reset, close) is reopened
 * with backoff, and so is a silent one, but not for a dead unit behind a gateway while its
 * neighbours answer on the same connection. The backoff is reset only by a good transaction, not
 * by a connect: a server that accepts and then talks nonsense (or nothing) would otherwise be
 * redialled at the initial delay forever (issue 7, item 9).
 */
import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../clock.js';
import type { TcpBusDef } from '../config/model.js';
import { ModbusExceptionError, RackguardError } from '../errors.js';
import { Backoff } from './backoff.js';
import type { LineEvents, ModbusLine } from './line.js';
import { SerialQueue } from './line.js';

/**
 * Consecutive unanswered requests after which the connection is dropped and reopened, provided
 * the streak shows the connection itself silent (see timeoutsSayConnectionDead).
 */
const RECONNECT_AFTER_TIMEOUTS = 5;

/**
 * Timed-out transaction ids remembered per connection, so that the 16-bit counter, once it wraps,
 * skips them: a late reply can arrive any time while the connection lives. Oldest forgotten first.
 */
const MAX_STALE_TIDS = 1024;

/**
 * The part of a `net.Socket` the line uses: the seam for deterministic tests (a scripted socket on
 * VirtualClock), in the style of the serial `opener`. It emits 'connect' once connected; 'close'
 * follows every end, including destroy().
 */
export interface TcpSocketLike {
  readonly destroyed: boolean;
  write(data: Buffer): unknown;
  destroy(err?: Error): unknown;
  on(event: 'connect', fn: () => void): unknown;
  on(event: 'data', fn: (chunk: Buffer) => void): unknown;
  on(event: 'error', fn: (err: Error) => void): unknown;
  on(event: 'close', fn: () => void): unknown;
  once(event: 'close', fn: () => void): unknown;
}

/** Starts a connection to `host:port` and returns the socket at once (it connects in the background). */
export type TcpConnector = (target: { host: string; port: number }) => TcpSocketLike;

export const connectTcp: TcpConnector = ({ host, port }) => {
  const s = new Socket();
  s.setNoDelay(true);
  // A gateway that vanishes without a reset would otherwise hold a dead socket until the kernel's
  // retransmission timeout (many minutes); keepalive probes and the timeout streak end it sooner.
  s.setKeepAlive(true, 10_000);
  s.connect(port, host);
  return s;
};

interface InFlight {
  tid: number;
  unitId: number;
  fc: number;
  resolve: (pdu: Buffer) => void;
  reject: (err: Error) => void;
  timer: TimerHandle | undefined;
  /** Monotonic time the request was written, for lastExchangeMs. */
  sentAt: number;
  /** Replies that matched no request while this one waited, and the last one's transaction id. */
  strays: number;
  strayTid: number;
}

export class TcpLine extends EventEmitter<LineEvents> implements ModbusLine {
  readonly id: string;
  readonly name: string;
  /** See ModbusLine.lastExchangeMs. */
  lastExchangeMs = Number.NaN;
  private socket: TcpSocketLike | undefined;
  private connected = false;
  private stopped = true;
  private rx: Buffer = Buffer.alloc(0);
  private tid = 0;
  /** Transaction ids of requests that timed out on this connection and were not answered since. */
  private readonly staleTids = new Set<number>();
  private inFlight: InFlight | undefined;
  private readonly queue = new SerialQueue();
  private readonly backoff: Backoff;
  private reopenTimer: TimerHandle | undefined;
  opens = 0;
  private timeoutStreak = 0;
  /** Units that answered (well-formed reply or exception) on the current connection. */
  private readonly unitsAnswered = new Set<number>();
  /** Units that timed out in the current streak. */
  private readonly streakUnits = new Set<number>();
  /** Replies whose transaction id matched nothing (late replies). */
  unmatchedReplies = 0;

  constructor(
    private readonly bus: Pick<TcpBusDef, 'id' | 'host' | 'port' | 'connectTimeoutMs' | 'reopenInitialMs' | 'reopenMaxMs'>,
    private readonly deps: { clock: Clock; logger: Logger; connect?: TcpConnector },
  ) {
    super();
    this.id = bus.id;
    this.name = `line:${bus.id}`;
    this.backoff = new Backoff(bus.reopenInitialMs, bus.reopenMaxMs);
  }

  private get where(): string {
    return `${this.bus.host}:${this.bus.port}`;
  }

  get isOpen(): boolean {
    return this.connected;
  }

  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.deps.clock.clearTimeout(this.reopenTimer);
    this.reopenTimer = undefined;
    this.failInFlight(new RackguardError('E_STOPPED', `${this.where}: line stopped`));
    const s = this.socket;
    this.socket = undefined;
    this.connected = false;
    if (s && !s.destroyed) {
      await new Promise<void>((resolve) => {
        s.once('close', () => resolve());
        s.destroy();
      });
    }
  }

  request(unitId: number, pdu: Buffer, timeoutMs: number): Promise<Buffer> {
    if (this.stopped) return Promise.reject(new RackguardError('E_STOPPED', `${this.where}: line stopped`));
    if (!this.connected) return Promise.reject(new RackguardError('E_PORT_CLOSED', `${this.where}: not connected`, { retryable: true }));
    return this.queue.run(
      () =>
        new Promise<Buffer>((resolve, reject) => {
          const s = this.socket;
          if (this.stopped) {
            reject(new RackguardError('E_STOPPED', `${this.where}: line stopped`));
            return;
          }
          if (!this.connected || !s) {
            reject(new RackguardError('E_PORT_CLOSED', `${this.where}: not connected`, { retryable: true }));
            return;
          }
          this.tid = this.nextTid();
          const req: InFlight = { tid: this.tid, unitId, fc: pdu[0]!, resolve, reject, timer: undefined, sentAt: this.deps.clock.monoMs(), strays: 0, strayTid: 0 };
          this.inFlight = req;
          req.timer = this.deps.clock.setTimeout(() => {
            // The verdict waits until the bytes already received have been read (issue 7 item 11):
            // after an event-loop stall the timer runs before the poll phase that reads the reply.
            this.deps.clock.afterPendingIo(() => {
              if (this.inFlight !== req) return;
              this.rememberStale(req.tid);
              // A device that replies with a transaction id of its own looks silent: say what came.
              const strays =
                req.strays === 0
                  ? ''
                  : ` (${req.strays === 1 ? 'a reply' : `${req.strays} replies`} with transaction id ${req.strayTid} matched no request, expected ${req.tid}: a late reply, or a server that does not echo the transaction id)`;
              this.settle(new RackguardError('E_MODBUS_TIMEOUT', `${this.where} unit ${unitId}: no reply within ${timeoutMs} ms${strays}`, { retryable: true }));
              // Several silent requests in a row on one connection: assume it is dead and reconnect.
              this.timeoutStreak++;
              this.streakUnits.add(unitId);
              if (this.timeoutsSayConnectionDead()) this.drop(`${this.timeoutStreak} requests in a row unanswered`);
            });
          }, timeoutMs);
          const mbap = Buffer.alloc(7);
          mbap.writeUInt16BE(req.tid, 0);
          mbap.writeUInt16BE(0, 2);
          mbap.writeUInt16BE(pdu.length + 1, 4);
          mbap[6] = unitId;
          s.write(Buffer.concat([mbap, pdu]));
        }),
    );
  }

  private connect(): void {
    const { logger, clock } = this.deps;
    this.reopenTimer = undefined;
    this.rx = Buffer.alloc(0);
    // A reply travels on the connection its request went out on: a new one owes nothing late.
    this.staleTids.clear();
    let s: TcpSocketLike;
    try {
      s = (this.deps.connect ?? connectTcp)({ host: this.bus.host, port: this.bus.port });
    } catch (err) {
      // net throws synchronously on some bad targets: retry like any failed connect, never crash.
      this.scheduleReconnect(err instanceof Error ? err.message : String(err));
      return;
    }
    this.socket = s;
    const connectTimer = clock.setTimeout(() => s.destroy(new Error(`connect timed out after ${this.bus.connectTimeoutMs} ms`)), this.bus.connectTimeoutMs);
    s.on('connect', () => {
      clock.clearTimeout(connectTimer);
      if (this.socket !== s) return;
      this.connected = true;
      this.timeoutStreak = 0;
      this.streakUnits.clear();
      this.unitsAnswered.clear();
      this.opens++;
      // No backoff reset here: only a good transaction proves the peer speaks Modbus TCP (settle()).
      logger.info({ address: this.where, opens: this.opens }, 'modbus tcp connected');
      this.emit('open');
    });
    // Listeners stay on a socket after it is replaced (stop, reconnect): each checks it is still current.
    s.on('data', (chunk) => {
      if (this.socket === s) this.onData(chunk);
    });
    let lastErr = '';
    s.on('error', (err) => {
      lastErr = err.message;
    });
    s.on('close', () => {
      clock.clearTimeout(connectTimer);
      if (this.socket !== s) return;
      const wasConnected = this.connected;
      this.connected = false;
      this.socket = undefined;
      const reason = lastErr || 'connection closed';
      this.failInFlight(new RackguardError('E_PORT_CLOSED', `${this.where}: ${reason}`, { retryable: true }));
      if (wasConnected) this.emit('close', reason);
      this.scheduleReconnect(reason);
    });
  }

  private scheduleReconnect(reason: string): void {
    if (this.stopped) return;
    const delay = this.backoff.next();
    this.deps.logger.warn({ address: this.where, retryInMs: delay }, `modbus tcp unavailable (${reason})`);
    this.reopenTimer = this.deps.clock.setTimeout(() => {
      if (!this.stopped && this.socket === undefined) this.connect();
    }, delay);
  }

  private onData(chunk: Buffer): void {
    this.rx = this.rx.length === 0 ? chunk : Buffer.concat([this.rx, chunk]);
    while (this.rx.length >= 7) {
      const protocol = this.rx.readUInt16BE(2);
      const len = this.rx.readUInt16BE(4);
      if (len < 2 || len > 254 || protocol !== 0) {
        // Not Modbus TCP: the stream is out of step and cannot be resynchronised. Start over.
        this.drop(`malformed MBAP header (protocol id ${protocol}, length ${len})`);
        return;
      }
      if (this.rx.length < 6 + len) return;
      const tid = this.rx.readUInt16BE(0);
      const unit = this.rx[6]!;
      const pdu = Buffer.from(this.rx.subarray(7, 6 + len));
      this.rx = this.rx.subarray(6 + len);
      const req = this.inFlight;
      const where = `${this.where} unit ${req?.unitId ?? unit}`;
      const outOfStep = framingProblem(pdu);
      if (outOfStep !== undefined) {
        // The MBAP length and the PDU's own structure disagree: the header lied, so where this
        // frame ends, and where the next one starts, is unknown. Bytes left over from a lying
        // header can complete into a frame with the next request's transaction id and a wrong
        // value. No later byte on this connection can be trusted: fail and reconnect (whatever the
        // frame's transaction id; a late reply lies about framing as much as a current one).
        const reason = `reply out of step, ${outOfStep} (transaction ${tid})`;
        if (req && req.tid === tid) this.settle(new RackguardError('E_MODBUS_BAD_FRAME', `${where}: ${reason}`, { retryable: true }));
        this.drop(reason);
        return;
      }
      if (!req || req.tid !== tid) {
        // A stale id stays remembered even now: a server that answered late may answer twice.
        this.unmatchedReplies++;
        if (req) {
          req.strays++;
          req.strayTid = tid;
        }
        continue;
      }
      if (unit !== req.unitId || (pdu[0]! & 0x7f) !== req.fc) {
        this.settle(new RackguardError('E_MODBUS_BAD_FRAME', `${where}: reply for unit ${unit} function ${pdu[0]}`, { retryable: true }));
      } else if (pdu[0]! & 0x80) {
        this.settle(new ModbusExceptionError(pdu[1]!, where));
      } else {
        this.lastExchangeMs = this.deps.clock.monoMs() - req.sentAt;
        this.settle(pdu);
      }
    }
  }

  private settle(result: Buffer | Error): void {
    const req = this.inFlight;
    if (!req) return;
    if (!(result instanceof Error) || result instanceof ModbusExceptionError) {
      // A well-formed reply to our request (an exception is one too): the connection is in step.
      this.timeoutStreak = 0;
      this.streakUnits.clear();
      this.unitsAnswered.add(req.unitId);
      this.backoff.reset();
    }
    this.deps.clock.clearTimeout(req.timer);
    this.inFlight = undefined;
    if (result instanceof Error) req.reject(result);
    else req.resolve(result);
  }

  /**
   * Whether the timeouts in a row mean the connection is dead rather than one unit behind a
   * gateway. A dead unit times out forever; dropping the connection for it fails every request
   * of its live neighbours while the line reconnects, again and again (a healthy device went
   * offline every other poll). So the streak counts against the connection only when a unit that
   * answered on this connection is part of it, or when none has answered yet.
   */
  private timeoutsSayConnectionDead(): boolean {
    if (this.timeoutStreak < RECONNECT_AFTER_TIMEOUTS) return false;
    if (this.unitsAnswered.size === 0) return true;
    for (const u of this.streakUnits) if (this.unitsAnswered.has(u)) return true;
    return false;
  }

  /**
   * The next transaction id, skipping ids whose late reply may still come: after 65,536 requests
   * the counter wraps, and a reply to a timed-out request with the same id, unit, function and
   * length would otherwise be taken for the new request's answer.
   */
  private nextTid(): number {
    let tid = this.tid;
    do tid = (tid + 1) & 0xffff;
    while (this.staleTids.has(tid));
    return tid;
  }

  private rememberStale(tid: number): void {
    this.staleTids.add(tid);
    if (this.staleTids.size > MAX_STALE_TIDS) this.staleTids.delete(this.staleTids.values().next().value!);
  }

  private failInFlight(err: Error): void {
    this.settle(err);
  }

  /**
   * Ends the current connection because its byte stream can no longer be trusted. The line counts
   * as closed at once, not when the socket's 'close' comes a loop turn later: a request queued
   * meanwhile must fail as E_PORT_CLOSED rather than be written to a socket being torn down.
   */
  private drop(reason: string): void {
    const s = this.socket;
    if (!s) return;
    if (this.connected) {
      this.connected = false;
      this.emit('close', reason);
    }
    s.destroy(new Error(reason));
  }
}

/**
 * Why a reply PDU's structure contradicts the length its MBAP header gave it, or undefined when
 * it does not (or cannot be checked: a function code whose reply layout the line does not know).
 * Modbus Application Protocol v1.1b3 §6.1–6.4 (read replies: function, byte count, data) and §7
 * (exception replies: function | 0x80, exception code).
 */
function framingProblem(pdu: Buffer): string | undefined {
  const fc = pdu[0]!;
  if (fc & 0x80) return pdu.length === 2 ? undefined : `exception reply of ${pdu.length} bytes, expected 2`;
  if (fc >= 1 && fc <= 4 && (pdu.length < 2 || pdu.length !== 2 + pdu[1]!)) {
    return `function ${fc} byte count ${pdu[1] ?? 'missing'} in a PDU with ${Math.max(0, pdu.length - 2)} data bytes`;
  }
  return undefined;
}
