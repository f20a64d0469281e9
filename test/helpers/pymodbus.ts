import { fileURLToPath } from 'node:url';
import { spawnAndWait, type SpawnedProcess } from './proc.js';

/**
 * Debian's python3-pymodbus lives in the system interpreter; the python3 first on PATH may be another one
 * (pyenv) without it.
 */
export const SYSTEM_PYTHON = '/usr/bin/python3';

export const PYMODBUS_RTU_SERVER = fileURLToPath(new URL('../fixtures/pymodbus_rtu_server.py', import.meta.url));

/**
 * Initial values of one unit, keyed by 0-based protocol address (what the master puts on the wire).
 * Registers take -32768..65535 (negatives stored as two's complement); coils/discrete inputs 0/1/booleans.
 * Unlisted addresses read 0.
 */
export interface UnitTables {
  input?: Record<number, number>;
  holding?: Record<number, number>;
  coil?: Record<number, boolean | 0 | 1>;
  discrete?: Record<number, boolean | 0 | 1>;
}

export interface PymodbusServerOptions {
  /** Serial device to serve on, e.g. one end of a pty pair. */
  port: string;
  /** Baud rate, default 9600 (not enforced on a pty). */
  baud?: number;
  /** Unit id -> initial values; `{}` for an all-zero unit. Other unit ids get no answer. */
  units: Record<number, UnitTables>;
  /**
   * When set, the server reopens its port this many seconds after losing it (pty unplugged), printing
   * DISCONNECTED then READY again. Default: the port stays closed.
   */
  reconnectDelayS?: number;
  /** Deadline for READY, in ms. Default 15000. */
  timeoutMs?: number;
  /** Log pymodbus traffic to stderr (collected in `process.lines`). */
  debug?: boolean;
}

export interface PymodbusServer {
  /** The server process; `waitForLine(/^READY$/, …, mark)` awaits a reconnect. */
  readonly process: SpawnedProcess;
  /** SIGTERM, await exit (SIGKILL after a grace period). */
  stop(): Promise<void>;
}

/** Starts test/fixtures/pymodbus_rtu_server.py and resolves once it prints READY (port open, serving). */
export async function startPymodbusServer(opts: PymodbusServerOptions): Promise<PymodbusServer> {
  const args = [
    PYMODBUS_RTU_SERVER,
    '--port',
    opts.port,
    '--baud',
    String(opts.baud ?? 9600),
    '--spec',
    JSON.stringify(opts.units),
  ];
  for (const unit of Object.keys(opts.units)) args.push('--unit', unit);
  if (opts.reconnectDelayS !== undefined) args.push('--reconnect-delay', String(opts.reconnectDelayS));
  if (opts.debug) args.push('--debug');

  const proc = await spawnAndWait(SYSTEM_PYTHON, args, {
    readyLine: /^READY$/,
    timeoutMs: opts.timeoutMs ?? 15_000,
    env: { PYTHONUNBUFFERED: '1' },
  });
  return {
    process: proc,
    async stop() {
      await proc.stop();
    },
  };
}

export const PYMODBUS_TCP_SERVER = fileURLToPath(new URL('../fixtures/pymodbus_tcp_server.py', import.meta.url));

/** Register tables of a unit, plus an optional size that limits every table (reads beyond: exception 2). */
export type TcpUnitTables = UnitTables & { size?: number };

export interface PymodbusTcpServer extends PymodbusServer {
  /** The loopback port the server bound (the kernel picked it: no race with other tests). */
  readonly port: number;
}

/**
 * Starts test/fixtures/pymodbus_tcp_server.py on 127.0.0.1 and a free port, and resolves once it
 * listens. Requests to units not in `units` get no answer (pymodbus 3.0's framer drops them).
 */
export async function startPymodbusTcpServer(opts: { units: Record<number, TcpUnitTables>; timeoutMs?: number; debug?: boolean }): Promise<PymodbusTcpServer> {
  const args = [PYMODBUS_TCP_SERVER, '--host', '127.0.0.1', '--port', '0', '--spec', JSON.stringify(opts.units)];
  if (opts.debug) args.push('--debug');
  const proc = await spawnAndWait(SYSTEM_PYTHON, args, {
    readyLine: /^READY \d+$/,
    timeoutMs: opts.timeoutMs ?? 15_000,
    env: { PYTHONUNBUFFERED: '1' },
  });
  return {
    process: proc,
    port: Number(proc.readyLine.split(' ')[1]),
    async stop() {
      await proc.stop();
    },
  };
}
