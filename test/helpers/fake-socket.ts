/**
 * A scripted Modbus TCP peer for TcpLine's `connect` seam: the test plays the server (accept, send
 * bytes, hang up) on VirtualClock, so framing, matching and reconnects are tested deterministically.
 * Events follow net.Socket's order: destroy() emits 'error' (if given) and then 'close' on the next
 * tick, never synchronously.
 */
import { EventEmitter } from 'node:events';
import type { TcpConnector, TcpSocketLike } from '../../agent/acquisition/tcp-line.js';

export class FakeSocket extends EventEmitter implements TcpSocketLike {
  destroyed = false;
  /** Why the line destroyed it, if it did. */
  destroyError: Error | undefined;
  readonly written: Buffer[] = [];

  write(data: Buffer): boolean {
    if (this.destroyed) return false;
    this.written.push(Buffer.from(data));
    return true;
  }

  destroy(err?: Error): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.destroyError = err;
    process.nextTick(() => {
      if (err) this.emit('error', err);
      this.emit('close');
    });
    return this;
  }

  /** Server side: the connection is established. */
  accept(): void {
    this.emit('connect');
  }

  /** Server side: bytes arrive at the client. */
  send(data: Buffer): void {
    if (!this.destroyed) this.emit('data', data);
  }

  /** Server side: the peer resets the connection. */
  reset(): void {
    this.destroy(new Error('read ECONNRESET'));
  }

  /** The transaction id of the n-th request written (MBAP bytes 0–1). */
  tidOf(n: number): number {
    return this.written[n]!.readUInt16BE(0);
  }
}

/** A connector that records every socket it hands out. */
export function fakeConnector(): { connect: TcpConnector; sockets: FakeSocket[] } {
  const sockets: FakeSocket[] = [];
  return {
    sockets,
    connect: () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s;
    },
  };
}

/** An MBAP frame: transaction id, protocol 0, length, unit, PDU. */
export function mbap(tid: number, unit: number, pdu: Buffer | number[]): Buffer {
  const body = Buffer.from(pdu);
  const h = Buffer.alloc(7);
  h.writeUInt16BE(tid, 0);
  h.writeUInt16BE(0, 2);
  h.writeUInt16BE(body.length + 1, 4);
  h[6] = unit;
  return Buffer.concat([h, body]);
}

/** Lets pending I/O callbacks, ticks and promise continuations run (no time passes on VirtualClock). */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
