/**
 * A Modbus line: something that carries one request at a time to a unit and returns the reply PDU,
 * within a deadline the agent enforces itself. RTU (serial) and TCP implement it, one file each.
 */
import type { EventEmitter } from 'node:events';
import type { Component } from '../component.js';

export interface LineEvents {
  /** The port or connection (re)opened: devices that were failing because of it may be polled now. */
  open: [];
  close: [reason: string];
}

export interface ModbusLine extends EventEmitter<LineEvents>, Component {
  readonly id: string;
  readonly isOpen: boolean;
  /**
   * Latency of the last successful exchange, ms: from the end of the request's transmission to the
   * complete reply. It leaves out time queued behind other requests and the recovery silence, which
   * are the line's doing, not the device's. NaN before the first reply.
   */
  readonly lastExchangeMs: number;
  /**
   * Sends `pdu` to `unitId` and resolves with the reply PDU (function code first). Rejects with a
   * RackguardError: E_MODBUS_TIMEOUT, E_MODBUS_CRC, E_MODBUS_BAD_FRAME, E_MODBUS_EXCEPTION
   * (ModbusExceptionError), E_PORT_CLOSED or E_STOPPED. Never hangs past `timeoutMs` once sent.
   */
  request(unitId: number, pdu: Buffer, timeoutMs: number): Promise<Buffer>;
}

/** Single-worker FIFO: at most one job runs at a time. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private pending = 0;

  get depth(): number {
    return this.pending;
  }

  run<T>(job: () => Promise<T>): Promise<T> {
    this.pending++;
    const result = this.tail.then(job, job);
    this.tail = result.then(
      () => this.pending--,
      () => this.pending--,
    );
    return result;
  }
}
