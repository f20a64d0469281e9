/**
 * A serial port that reopens itself. On Linux an unplugged USB adapter shows up only as a `close`
 * event (with an error); a closed socat pty the same. We reopen with backoff, forever, so nobody has
 * to restart the process after replugging an adapter. Configure /dev/serial/by-id/… paths: the
 * replugged adapter may come back as another ttyUSBn, but its by-id link follows it.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { SerialPort } from 'serialport';
import type { Clock, TimerHandle } from '../clock.js';
import type { Component } from '../component.js';
import { RackguardError } from '../errors.js';
import { Backoff } from './backoff.js';

export interface SerialSettings {
  path: string;
  baudRate: number;
  parity: 'none' | 'even' | 'odd';
  dataBits: 7 | 8;
  stopBits: 1 | 2;
}

/** The part of a serialport `SerialPort` we use; tests and benchmarks may pass anything shaped so. */
export interface PortLike {
  readonly isOpen: boolean;
  write(data: Buffer, cb: (err?: Error | null) => void): unknown;
  flush(cb: (err?: Error | null) => void): void;
  close(cb: (err?: Error | null) => void): void;
  on(event: 'data', fn: (chunk: Buffer) => void): unknown;
  on(event: 'close', fn: (err?: Error | null) => void): unknown;
  on(event: 'error', fn: (err: Error) => void): unknown;
  removeAllListeners(): unknown;
}

/** How long an input flush may take before the adapter is taken for wedged. */
export const FLUSH_DEADLINE_MS = 2000;

export type PortOpener = (s: SerialSettings) => Promise<PortLike>;

export const openSerialPort: PortOpener = (s) =>
  new Promise((resolve, reject) => {
    const port = new SerialPort({ path: s.path, baudRate: s.baudRate, parity: s.parity, dataBits: s.dataBits, stopBits: s.stopBits, autoOpen: false });
    port.open((err) => (err ? reject(err) : resolve(port as unknown as PortLike)));
  });

export interface SerialLinkEvents {
  open: [];
  close: [reason: string];
  data: [chunk: Buffer];
}

export class SerialLink extends EventEmitter<SerialLinkEvents> implements Component {
  readonly name: string;
  private port: PortLike | undefined;
  private stopped = true;
  /** Bumped by stop(): an open that was under way when stop() came must not adopt its port. */
  private generation = 0;
  private reopenTimer: TimerHandle | undefined;
  private readonly backoff: Backoff;
  /** Flushes given up on by their deadline that have not called back yet. */
  private abandonedFlushes = 0;
  /** Times the port was (re)opened, for health and tests. */
  opens = 0;
  lastError: string | undefined;

  constructor(
    private readonly settings: SerialSettings,
    private readonly deps: { clock: Clock; logger: Logger; opener?: PortOpener; reopenInitialMs: number; reopenMaxMs: number },
  ) {
    super();
    this.name = `serial:${settings.path}`;
    this.backoff = new Backoff(deps.reopenInitialMs, deps.reopenMaxMs);
  }

  get isOpen(): boolean {
    return this.port !== undefined;
  }

  get path(): string {
    return this.settings.path;
  }

  /**
   * Opens the port in the background: a port that will not open is retried with backoff and
   * reported, never waited for. Idempotent while started.
   */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    this.backoff.reset();
    void this.open(this.generation);
  }

  /** Closes the port and cancels any reopen. Safe before start, during an open, and twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    this.deps.clock.clearTimeout(this.reopenTimer);
    this.reopenTimer = undefined;
    const port = this.port;
    this.port = undefined;
    if (port) {
      port.removeAllListeners();
      port.on('error', () => {});
      await new Promise<void>((resolve) => port.close(() => resolve()));
    }
  }

  write(data: Buffer): Promise<void> {
    const port = this.port;
    if (!port) return Promise.reject(new RackguardError('E_PORT_CLOSED', `${this.settings.path}: port is not open`, { retryable: true }));
    return new Promise((resolve, reject) =>
      port.write(data, (err) => (err ? reject(new RackguardError('E_PORT_CLOSED', `${this.settings.path}: write failed: ${err.message}`, { cause: err, retryable: true })) : resolve())),
    );
  }

  /**
   * Discards bytes the OS has received but we have not read yet. tcflush() returns at once on a
   * working adapter; one that never calls back means a wedged USB adapter or driver, and the bus loop
   * must not wait on it forever: after `deadlineMs` the port is dropped (closed in the background and
   * reopened with backoff) and this rejects with E_PORT_CLOSED.
   */
  flushInput(deadlineMs = FLUSH_DEADLINE_MS): Promise<void> {
    const port = this.port;
    if (!port) return Promise.resolve();
    const { clock } = this.deps;
    return new Promise((resolve, reject) => {
      let done = false;
      const timer = clock.setTimeout(() => {
        // As for a request's deadline: after a stalled loop, the callback may be waiting to be read.
        clock.afterPendingIo(() => {
          if (done) return;
          done = true;
          // The flush holds a thread of libuv's pool until it returns; the port is not reopened before
          // it does (a truly wedged adapter would otherwise take one more thread per reopen, and with
          // them DNS lookups and file I/O of the whole process).
          this.abandonedFlushes++;
          const why = `input flush did not complete within ${deadlineMs} ms`;
          this.drop(port, why);
          reject(new RackguardError('E_PORT_CLOSED', `${this.settings.path}: ${why}; reopening the port once it returns`, { retryable: true }));
        });
      }, deadlineMs);
      port.flush(() => {
        clock.clearTimeout(timer);
        if (done) {
          this.abandonedFlushes--;
          return;
        }
        done = true;
        resolve();
      });
    });
  }

  /** Gives up on `port` (still the current one): closes it in the background and schedules a reopen. */
  private drop(port: PortLike, reason: string): void {
    if (this.port !== port) return;
    this.port = undefined;
    port.removeAllListeners();
    port.on('error', () => {});
    try {
      port.close(() => {});
    } catch {
      // already closed, or the driver refuses: the handle is abandoned either way
    }
    this.lastError = reason;
    this.deps.logger.warn({ path: this.settings.path, reason }, 'serial port dropped');
    this.emit('close', reason);
    this.scheduleReopen(reason);
  }

  private async open(gen: number): Promise<void> {
    const { logger } = this.deps;
    let port: PortLike;
    try {
      port = await (this.deps.opener ?? openSerialPort)(this.settings);
    } catch (err) {
      if (gen !== this.generation) return;
      this.lastError = (err as Error).message;
      this.scheduleReopen(`open failed: ${this.lastError}`);
      return;
    }
    // Stopped meanwhile (perhaps started again): this open belongs to the old run; close its handle.
    if (this.stopped || gen !== this.generation || this.port) {
      port.close(() => {});
      return;
    }
    this.port = port;
    this.opens++;
    this.backoff.reset();
    port.on('data', (chunk) => this.emit('data', chunk));
    port.on('error', (err) => {
      this.lastError = err.message;
      logger.warn({ path: this.settings.path, err: err.message }, 'serial port error');
    });
    port.on('close', (err) => {
      if (this.port !== port) return;
      this.port = undefined;
      port.removeAllListeners();
      port.on('error', () => {});
      const reason = err ? err.message : 'closed';
      this.lastError = reason;
      this.emit('close', reason);
      this.scheduleReopen(`port lost: ${reason}`);
    });
    logger.info({ path: this.settings.path, baudRate: this.settings.baudRate, opens: this.opens }, 'serial port open');
    this.emit('open');
  }

  private scheduleReopen(why: string): void {
    if (this.stopped) return;
    const delay = this.backoff.next();
    this.deps.logger.warn({ path: this.settings.path, retryInMs: delay }, `serial port unavailable (${why})`);
    const gen = this.generation;
    this.reopenTimer = this.deps.clock.setTimeout(() => {
      this.reopenTimer = undefined;
      if (this.stopped || gen !== this.generation) return;
      if (this.abandonedFlushes > 0) this.scheduleReopen('an abandoned input flush has not returned yet (wedged adapter)');
      else void this.open(gen);
    }, delay);
  }
}
