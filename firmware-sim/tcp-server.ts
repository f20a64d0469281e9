/**
 * Modbus TCP server answering for every unit the SimRack serves on 'tcp' (Modbus Messaging on TCP/IP
 * Implementation Guide v1.0b §3.1: MBAP header = transaction id, protocol id 0, length, unit id).
 * Any number of connections; requests on one connection are answered in order, transaction ids echoed.
 *
 * Faults: silent → no reply. 'crc' has no meaning on TCP (TCP checksums drop corrupted segments and
 * retransmit them, so an application never sees a bad frame): it is served as silent, which is what a
 * corrupting gateway in front of the device looks like to the client. late → the reply after delayMs.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { RackguardError, asError } from '../agent/errors.js';
import type { SimRack } from './rack.js';

export interface ModbusTcpServerOptions {
  rack: SimRack;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: an ephemeral port, read it back from `port` after start(). */
  port?: number;
  logger?: Logger;
}

export interface ModbusTcpServerStats {
  connections: number;
  requests: number;
  replies: number;
  /** Connections closed because of a malformed MBAP header. */
  protocolErrors: number;
}

const MBAP_LENGTH = 7;

export class ModbusTcpServer {
  readonly stats: ModbusTcpServerStats = { connections: 0, requests: 0, replies: 0, protocolErrors: 0 };
  private readonly opts: ModbusTcpServerOptions;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private boundPort: number | undefined;
  private stopped = false;

  constructor(opts: ModbusTcpServerOptions) {
    this.opts = opts;
  }

  /** The bound port (after start()). */
  get port(): number {
    if (this.boundPort === undefined) throw new Error('ModbusTcpServer: not listening');
    return this.boundPort;
  }

  get host(): string {
    return this.opts.host ?? '127.0.0.1';
  }

  async start(signal?: AbortSignal): Promise<void> {
    if (this.stopped) throw new Error('ModbusTcpServer: start after stop');
    const server = createServer((socket) => this.onConnection(socket));
    this.server = server;
    try {
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => reject(signal?.reason);
        if (signal?.aborted) return onAbort();
        signal?.addEventListener('abort', onAbort, { once: true });
        server.once('error', reject);
        server.listen({ host: this.host, port: this.opts.port ?? 0, exclusive: true }, () => {
          signal?.removeEventListener('abort', onAbort);
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      throw new RackguardError('E_PORT_OPEN', `cannot listen on ${this.host}:${this.opts.port ?? 0}: ${asError(err).message}`, { cause: err });
    }
    server.on('error', (err) => this.opts.logger?.error({ err }, 'modbus tcp server error'));
    this.boundPort = (server.address() as AddressInfo).port;
  }

  /** Closes the listener and every connection, cancels late replies. Safe at any stage, and twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    const server = this.server;
    this.server = undefined;
    if (!server?.listening) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private onConnection(socket: Socket): void {
    if (this.stopped) {
      socket.destroy();
      return;
    }
    this.stats.connections++;
    this.sockets.add(socket);
    socket.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    socket.on('error', (err) => this.opts.logger?.debug({ err }, 'modbus tcp connection error'));
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= MBAP_LENGTH) {
        const protocolId = buf.readUInt16BE(2);
        const length = buf.readUInt16BE(4);
        // Length counts the unit id and the PDU; a PDU is 1–253 bytes (§4.1 of the application protocol).
        if (protocolId !== 0 || length < 2 || length > 254) {
          this.stats.protocolErrors++;
          this.opts.logger?.warn({ protocolId, length, remote: socket.remoteAddress }, 'malformed MBAP header; closing connection');
          socket.destroy();
          return;
        }
        if (buf.length < 6 + length) break;
        const header = buf.subarray(0, MBAP_LENGTH);
        const pdu = buf.subarray(MBAP_LENGTH, 6 + length);
        buf = buf.subarray(6 + length);
        this.onRequest(socket, Buffer.from(header), Buffer.from(pdu));
      }
    });
  }

  private onRequest(socket: Socket, header: Buffer, pdu: Buffer): void {
    this.stats.requests++;
    const unitId = header[6]!;
    const result = this.opts.rack.handle('tcp', unitId, pdu);
    if (!result.reply || result.fault === 'crc') return;
    const out = Buffer.alloc(MBAP_LENGTH + result.reply.length);
    header.copy(out, 0, 0, 4); // transaction id and protocol id, echoed
    out.writeUInt16BE(result.reply.length + 1, 4);
    out[6] = unitId;
    result.reply.copy(out, MBAP_LENGTH);
    const send = (): void => {
      if (this.stopped || socket.destroyed) return;
      this.stats.replies++;
      socket.write(out);
    };
    if (result.fault === 'late' && (result.delayMs ?? 0) > 0) {
      const t = setTimeout(() => {
        this.timers.delete(t);
        send();
      }, result.delayMs);
      this.timers.add(t);
    } else {
      send();
    }
  }
}
