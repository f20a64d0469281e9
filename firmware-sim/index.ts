/**
 * firmware-sim as a library: the simulated rack of an agent config, served on an RTU serial port
 * (every device of the config's serial buses) and a Modbus TCP server (every device of its tcp buses).
 * `main.ts` is the thin CLI around `startSimulator`.
 */
import { pino, type Logger } from 'pino';
import { systemClock, type Clock } from '../agent/clock.js';
import type { Config, SerialBusDef, TcpBusDef } from '../agent/config/model.js';
import { SimRack } from './rack.js';
import { RtuSlave } from './rtu-slave.js';
import { ModbusTcpServer } from './tcp-server.js';
import type { Scenario } from './scenario.js';

export { SimRack } from './rack.js';
export type { DeviceCounters, HandleResult, SimRackOptions, Transport } from './rack.js';
export { RtuSlave } from './rtu-slave.js';
export type { RtuSlaveOptions, RtuSlaveStats } from './rtu-slave.js';
export { ModbusTcpServer } from './tcp-server.js';
export type { ModbusTcpServerOptions } from './tcp-server.js';
export { RoomModel, resolveRoomParams } from './thermal.js';
export type { ChillerState, RoomEvent, RoomParams, RoomParamsInput } from './thermal.js';
export { loadScenarioFile, parseScenario, ScenarioError } from './scenario.js';
export type { DeviceFault, Scenario, ScenarioAction, ScenarioEvent, SensorFault } from './scenario.js';

export interface SimulatorOptions {
  config: Config;
  scenario?: Scenario;
  /** Serial path for the RTU slave; default the path of the config's (first) serial bus. */
  serialPath?: string;
  /** TCP port; default the port of the config's (first) tcp bus. 0 = ephemeral. */
  tcpPort?: number;
  /** Default 127.0.0.1. */
  tcpHost?: string;
  /** Simulated seconds per real second. Default 1. */
  timeScale?: number;
  /** Overrides the scenario's seed. */
  seed?: number;
  clock?: Clock;
  /** Hold each RTU reply as long as a real line at the bus's baud rate would. Default false. */
  emulateBaud?: boolean;
  /** Device turnaround added to each emulated RTU reply, ms. Default 0. */
  turnaroundMs?: number;
  logger?: Logger;
  /** Called when the serial port closes by itself (pty or adapter gone); the RTU side then stops. */
  onSerialClose?: (err: Error | undefined) => void;
  /** Aborts start-up. */
  signal?: AbortSignal;
}

export interface Simulator {
  rack: SimRack;
  /** Bound TCP port, when the config has tcp devices. */
  tcpPort: number | undefined;
  /** Serial path served, when the config has serial devices. */
  serialPath: string | undefined;
  /** The RTU slave on serialPath (its stats and events), when the config has serial devices. */
  rtu: RtuSlave | undefined;
  stop(): Promise<void>;
}

/**
 * Builds the rack and starts its transports. On a failed start everything already started is stopped
 * before the error is thrown.
 */
export async function startSimulator(opts: SimulatorOptions): Promise<Simulator> {
  const logger = opts.logger ?? pino({ level: 'silent' });
  const rack = new SimRack({
    config: opts.config,
    ...(opts.scenario ? { scenario: opts.scenario } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
    ...(opts.timeScale !== undefined ? { timeScale: opts.timeScale } : {}),
    ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
    onEvent: (event, simS) => logger.info({ event, simS }, 'scenario event'),
  });
  for (const w of rack.warnings) logger.warn(w);

  const serialBuses = opts.config.buses.filter((b): b is SerialBusDef => b.type === 'serial');
  const tcpBuses = opts.config.buses.filter((b): b is TcpBusDef => b.type === 'tcp');
  if (serialBuses.length > 1) logger.warn({ buses: serialBuses.map((b) => b.id) }, 'several serial buses: all their devices are served on one port');
  if (tcpBuses.length > 1) logger.warn({ buses: tcpBuses.map((b) => b.id) }, 'several tcp buses: all their devices are served on one TCP server');

  const stops: Array<() => Promise<void>> = [];
  const stop = async (): Promise<void> => {
    for (const s of stops.splice(0).reverse()) {
      try {
        await s();
      } catch (err) {
        logger.error({ err }, 'simulator: error while stopping');
      }
    }
  };

  let serialPath: string | undefined;
  let tcpPort: number | undefined;
  let rtu: RtuSlave | undefined;
  try {
    const line = serialBuses[0];
    if (line && rack.devices('rtu').length > 0) {
      serialPath = opts.serialPath ?? line.path;
      const slave = new RtuSlave({
        path: serialPath,
        rack,
        baudRate: line.baudRate,
        dataBits: line.dataBits,
        parity: line.parity,
        stopBits: line.stopBits,
        emulateBaud: opts.emulateBaud ?? false,
        turnaroundMs: opts.turnaroundMs ?? 0,
        logger,
      });
      slave.on('close', (err) => opts.onSerialClose?.(err));
      stops.push(() => slave.stop());
      await slave.start(opts.signal);
      rtu = slave;
    }
    const net = tcpBuses[0];
    if (net && rack.devices('tcp').length > 0) {
      const server = new ModbusTcpServer({ rack, host: opts.tcpHost ?? '127.0.0.1', port: opts.tcpPort ?? net.port, logger });
      stops.push(() => server.stop());
      await server.start(opts.signal);
      tcpPort = server.port;
    }
  } catch (err) {
    await stop();
    throw err;
  }
  scheduleTimeline(rack, opts.clock ?? systemClock, logger, stops);
  return { rack, tcpPort, serialPath, rtu, stop };
}

/**
 * Requests drive the rack lazily; this applies (and logs) each scenario event when it falls due even
 * if nobody is polling, and logs the end of the scenario's duration. Timers come from the rack's clock.
 */
function scheduleTimeline(rack: SimRack, clock: Clock, logger: Logger, stops: Array<() => Promise<void>>): void {
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  let endTimer: ReturnType<Clock['setTimeout']> | undefined;
  const delayMs = (atS: number): number => Math.max(0, ((atS - rack.simTimeS()) / rack.timeScale) * 1000);
  const next = (): void => {
    const at = rack.nextEventAtS();
    if (at === undefined) return;
    // +1 ms: the timer may fire a hair early by the clock's own rounding.
    timer = clock.setTimeout(() => {
      rack.sync();
      next();
    }, delayMs(at) + 1);
  };
  next();
  const durationS = rack.scenario?.durationS;
  if (durationS !== undefined) {
    endTimer = clock.setTimeout(() => logger.info({ scenario: rack.scenario?.name, durationS }, 'scenario duration reached'), delayMs(durationS) + 1);
  }
  stops.push(async () => {
    clock.clearTimeout(timer);
    clock.clearTimeout(endTimer);
  });
}
