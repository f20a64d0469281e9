/**
 * Typed errors with stable codes. Every error that crosses a component boundary is one of these, so
 * callers branch on `code` and `retryable`, never on message text. (modbus-serial's own error objects
 * are not `instanceof Error`; see its issues #224 and #405. We never let them escape raw.)
 */
export type ErrorCode =
  | 'E_CONFIG_INVALID'
  /** A valid configuration that a SIGHUP reload cannot apply (the outbox, the HTTP listener): restart instead. */
  | 'E_RELOAD_NEEDS_RESTART'
  | 'E_CONFIG_READ'
  | 'E_MODBUS_TIMEOUT'
  | 'E_MODBUS_CRC'
  | 'E_MODBUS_EXCEPTION'
  | 'E_MODBUS_BAD_FRAME'
  /** Bytes no request accounts for (a late reply, an echo, noise): the exchange is not trusted. */
  | 'E_MODBUS_LINE_DIRTY'
  | 'E_PORT_CLOSED'
  | 'E_PORT_OPEN'
  | 'E_STOPPED'
  | 'E_TRACE_INVALID'
  | 'E_SCENARIO_INVALID'
  | 'E_OUTPUT_FILE'
  | 'E_OUTBOX_OPEN'
  | 'E_OUTBOX_WRITE'
  | 'E_OUTBOX_CORRUPT'
  | 'E_SECRET_READ'
  | 'E_MQTT_TIMEOUT'
  | 'E_MQTT_DISCONNECTED'
  | 'E_MQTT_REJECTED'
  | 'E_INFLUX_WRITE'
  | 'E_INFLUX_REJECTED'
  /** A host agent's or gateway's command-sequence state file cannot be read or written. */
  | 'E_HOST_STATE'
  /** The HTTP endpoint cannot listen on its address and port (in use, address not on this host). */
  | 'E_HTTP_BIND';

export class RackguardError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'RackguardError';
    this.code = code;
    this.retryable = opts.retryable ?? false;
  }
}

/** Modbus exception codes (Modbus Application Protocol v1.1b3, section 7). */
export const MODBUS_EXCEPTION_NAMES: Record<number, string> = {
  1: 'illegal function',
  2: 'illegal data address',
  3: 'illegal data value',
  4: 'server device failure',
  5: 'acknowledge',
  6: 'server device busy',
  8: 'memory parity error',
  10: 'gateway path unavailable',
  11: 'gateway target device failed to respond',
};

export class ModbusExceptionError extends RackguardError {
  readonly exceptionCode: number;
  constructor(exceptionCode: number, where: string) {
    const name = MODBUS_EXCEPTION_NAMES[exceptionCode] ?? 'unknown exception';
    super('E_MODBUS_EXCEPTION', `${where}: Modbus exception ${exceptionCode} (${name})`, { retryable: true });
    this.exceptionCode = exceptionCode;
  }
}

/** Wraps anything thrown into a RackguardError without losing the original as `cause`. */
export function asError(err: unknown): Error {
  if (err instanceof Error) return err;
  const msg = typeof err === 'object' && err && 'message' in err ? String((err as { message: unknown }).message) : String(err);
  return new Error(msg, { cause: err });
}
