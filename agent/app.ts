/**
 * The agent as a library: `createAgent(config, deps)` returns a component with start/stop. Only
 * agent/main.ts touches argv, signals and exit codes.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import type { Config, DeviceDef } from './config/model.js';
import type { ModbusLine } from './acquisition/line.js';
import { BusPoller } from './acquisition/poller.js';
import { RtuLine } from './acquisition/rtu-line.js';
import type { PortOpener } from './acquisition/serial-link.js';
import { StreamSource } from './acquisition/stream-source.js';
import { TcpLine } from './acquisition/tcp-line.js';
import type { DeviceHealth, DeviceState, Sample } from './acquisition/types.js';

export interface AgentDeps {
  logger: Logger;
  clock?: Clock;
  /** Opens serial ports; defaults to npm serialport. */
  opener?: PortOpener;
}

export interface AgentEvents {
  /** One batch per device poll (or stream line): a sample for every point of that device. */
  samples: [samples: Sample[]];
  deviceState: [health: DeviceHealth, previous: DeviceState];
}

export interface Agent extends EventEmitter<AgentEvents> {
  start(): void;
  stop(): Promise<void>;
  health(): DeviceHealth[];
  /** Read requests per full poll cycle, after batching. */
  readonly readsPerCycle: number;
}

class AgentImpl extends EventEmitter<AgentEvents> implements Agent {
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly lines: ModbusLine[] = [];
  private readonly pollers: BusPoller[] = [];
  private readonly streams: StreamSource[] = [];
  private healthTimer: TimerHandle | undefined;
  private started = false;

  constructor(
    private readonly config: Config,
    deps: AgentDeps,
  ) {
    super();
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger;
    const onSamples = (samples: Sample[]): void => this.onSamples(samples);
    for (const bus of config.buses) {
      const logger = this.log.child({ bus: bus.id });
      if (bus.type === 'serial-stream') {
        this.streams.push(new StreamSource(bus, { clock: this.clock, logger, opener: deps.opener, onSamples }));
        continue;
      }
      const line: ModbusLine = bus.type === 'serial' ? new RtuLine(bus, { clock: this.clock, logger, opener: deps.opener }) : new TcpLine(bus, { clock: this.clock, logger });
      this.lines.push(line);
      this.pollers.push(
        new BusPoller(bus.devices, line, {
          clock: this.clock,
          logger,
          onSamples,
          onDeviceState: (h, prev) => this.emit('deviceState', h, prev),
        }),
      );
    }
  }

  get readsPerCycle(): number {
    return this.pollers.reduce((n, p) => n + p.readsPerCycle, 0);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    const devices = this.config.buses.reduce((n, b) => n + (b.type === 'serial-stream' ? 1 : b.devices.length), 0);
    this.log.info({ site: this.config.site, gateway: this.config.gateway, buses: this.config.buses.length, devices, points: this.config.points.size, readsPerCycle: this.readsPerCycle }, 'rackguard starting');
    for (const l of this.lines) l.start();
    for (const p of this.pollers) p.start();
    for (const s of this.streams) s.start();
    this.scheduleHealth();
  }

  /** Safe at any stage; each part in its own try/catch, in reverse start order. */
  async stop(): Promise<void> {
    this.started = false;
    this.clock.clearTimeout(this.healthTimer);
    const pollersDone = this.pollers.map((p) => p.stop());
    const parts: Array<() => Promise<void>> = [...this.streams.map((s) => () => s.stop()), ...this.lines.map((l) => () => l.stop())];
    for (const stop of parts) {
      try {
        await stop();
      } catch (err) {
        this.log.error({ err }, 'error while stopping');
      }
    }
    await Promise.allSettled(pollersDone);
  }

  health(): DeviceHealth[] {
    return this.pollers.flatMap((p) => p.health());
  }

  private onSamples(samples: Sample[]): void {
    if (this.config.logging.samples && samples.length > 0 && this.log.isLevelEnabled('info')) {
      const values: Record<string, number | null> = {};
      const problems: Record<string, string> = {};
      for (const s of samples) {
        const name = s.pointId.slice(s.deviceId.length + 1);
        values[name] = s.value;
        if (s.quality !== 'good') problems[name] = `${s.quality}${s.reason ? `: ${s.reason}` : ''}`;
      }
      const first = samples[0]!;
      if (Object.keys(problems).length > 0) this.log.info({ device: first.deviceId, values, problems }, 'samples');
      else this.log.info({ device: first.deviceId, values }, 'samples');
    }
    this.emit('samples', samples);
  }

  private scheduleHealth(): void {
    this.healthTimer = this.clock.setTimeout(() => {
      if (!this.started) return;
      for (const h of this.health()) this.log.info({ device: h.deviceId, state: h.state, counters: roundCounters(h.counters), lastError: h.lastError }, 'device health');
      this.scheduleHealth();
    }, this.config.logging.healthIntervalS * 1000);
  }
}

function roundCounters(c: DeviceHealth['counters']): DeviceHealth['counters'] {
  return { ...c, latencyLastMs: round1(c.latencyLastMs), latencyAvgMs: round1(c.latencyAvgMs), latencyMaxMs: round1(c.latencyMaxMs) };
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

export function createAgent(config: Config, deps: AgentDeps): Agent {
  return new AgentImpl(config, deps);
}

export type { DeviceDef };
