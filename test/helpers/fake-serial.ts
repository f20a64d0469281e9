/**
 * A serial port for the `opener` seam of SerialLink: it records what the agent does to it (writes,
 * flushes, closes, with the virtual time of each) and lets a test deliver bytes when it chooses. For
 * deterministic tests on VirtualClock; the real-pty tests cover the real port.
 */
import type { PortLike, PortOpener, SerialSettings } from '../../agent/acquisition/serial-link.js';
import type { Clock } from '../../agent/clock.js';

export interface PortEvent {
  kind: 'write' | 'flush' | 'close';
  at: number;
  bytes?: Buffer;
}

export class FakePort implements PortLike {
  isOpen = true;
  readonly events: PortEvent[] = [];
  private listeners: { data: Array<(b: Buffer) => void>; close: Array<(e?: Error | null) => void>; error: Array<(e: Error) => void> } = { data: [], close: [], error: [] };

  constructor(private readonly clock: Clock) {}

  write(data: Buffer, cb: (err?: Error | null) => void): void {
    this.events.push({ kind: 'write', at: this.clock.monoMs(), bytes: Buffer.from(data) });
    queueMicrotask(() => cb(null));
  }

  /** A wedged adapter: flush() does not call back until releaseFlushes(). */
  flushHangs = false;
  private readonly heldFlushes: Array<(err?: Error | null) => void> = [];

  flush(cb: (err?: Error | null) => void): void {
    this.events.push({ kind: 'flush', at: this.clock.monoMs() });
    if (this.flushHangs) this.heldFlushes.push(cb);
    else queueMicrotask(() => cb(null));
  }

  /** The wedged flushes return at last (the driver recovered, or the adapter was replugged). */
  releaseFlushes(): void {
    this.flushHangs = false;
    for (const cb of this.heldFlushes.splice(0)) cb(null);
  }

  close(cb: (err?: Error | null) => void): void {
    this.isOpen = false;
    this.events.push({ kind: 'close', at: this.clock.monoMs() });
    queueMicrotask(() => cb(null));
  }

  on(event: 'data' | 'close' | 'error', fn: never): this {
    (this.listeners[event] as unknown[]).push(fn);
    return this;
  }

  removeAllListeners(): this {
    this.listeners = { data: [], close: [], error: [] };
    return this;
  }

  /** Number of 'data' listeners: a restart must not add a second one. */
  get dataListeners(): number {
    return this.listeners.data.length;
  }

  /** Delivers bytes as if they had been read from the line. */
  receive(bytes: Buffer | number[]): void {
    const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
    for (const fn of this.listeners.data) fn(b);
  }

  /** The port goes away, as an unplugged USB adapter does. */
  lose(reason = 'unplugged'): void {
    this.isOpen = false;
    for (const fn of [...this.listeners.close]) fn(new Error(reason));
  }

  writes(): Buffer[] {
    return this.events.filter((e) => e.kind === 'write').map((e) => e.bytes!);
  }
}

/** An opener that hands out FakePorts, failing the first `failFirst` opens. */
export function fakeOpener(clock: Clock, opts: { failFirst?: number } = {}): PortOpener & { ports: FakePort[]; attempts: SerialSettings[] } {
  let failures = opts.failFirst ?? 0;
  const ports: FakePort[] = [];
  const attempts: SerialSettings[] = [];
  const open = (s: SerialSettings): Promise<PortLike> => {
    attempts.push(s);
    if (failures > 0) {
      failures--;
      return Promise.reject(new Error(`${s.path}: No such file or directory`));
    }
    const p = new FakePort(clock);
    ports.push(p);
    return Promise.resolve(p);
  };
  return Object.assign(open, { ports, attempts });
}

/** Lets promise chains and microtasks run (no timers: virtual time does not move). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}
