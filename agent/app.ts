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
import { Detector } from './detection/detector.js';
import { TraceRecorder } from './detection/trace.js';
import type { DetectorEvent, ZoneStatus } from './detection/types.js';
import { outputContextFromConfig } from './outputs/context.js';
import type { InfluxSink } from './outputs/influx.js';
import type { MqttSink } from './outputs/mqtt.js';
import type { Outbox, OutboxEntry } from './outputs/outbox.js';


export interface AgentDeps {
  logger: Logger;
  /** Write every sample to this trace file (`rackguard run --record`). */
  recordFile?: string;
  clock?: Clock;
  /** Opens serial ports; defaults to npm serialport. */
  opener?: PortOpener;
}

export interface AgentEvents {
  /** One batch per device poll (or stream line): a sample for every point of that device. */
  samples: [samples: Sample[]];
  deviceState: [health: DeviceHealth, previous: DeviceState];
  /** Zone level changes and quorum events from the detector. */
  detection: [event: DetectorEvent];
}

export interface Agent extends EventEmitter<AgentEvents> {
  start(): Promise<void>;
  stop(): Promise<void>;
  health(): DeviceHealth[];
  /** Current level of every zone, with its evidence. */
  zones(): ZoneStatus[];
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
  private tickTimer: TimerHandle | undefined;
  private started = false;
  private starting: Promise<void> | undefined;
  private readonly detector: Detector;
  private readonly recorder: TraceRecorder | undefined;
  private outbox: Outbox | undefined;
  private readonly sinks: Array<{ name: 'mqtt' | 'influx'; sink: MqttSink | InfluxSink }> = [];

  constructor(
    private readonly config: Config,
    private readonly deps: AgentDeps,
  ) {
    super();
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger;
    this.detector = new Detector(config);
    this.recorder = deps.recordFile
      ? new TraceRecorder(deps.recordFile, { clock: this.clock, logger: this.log.child({ component: 'recorder' }), flushTimeoutMs: (config.stopTimeoutS * 1000) / 2 })
      : undefined;
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
          onDeviceState: (h, prev) => {
            this.append([{ type: 'event', event: { kind: 'device_state', deviceId: h.deviceId, state: h.state, previous: prev, ts: this.clock.wallMs(), ...(h.lastError ? { reason: h.lastError } : {}) } }]);
            this.emit('deviceState', h, prev);
          },
        }),
      );
    }
  }

  get readsPerCycle(): number {
    return this.pollers.reduce((n, p) => n + p.readsPerCycle, 0);
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.starting = this.startParts();
    await this.starting;
  }

  /** Start-up proper. It re-checks `started` after every await, so a stop() during start-up wins. */
  private async startParts(): Promise<void> {
    if (this.recorder) {
      // Never blocks and never rejects: a trace that cannot be written is reported by the recorder.
      await this.recorder.start();
      if (!this.started) return;
    }
    // The outbox first: nothing is read before there is somewhere durable to put it. A damaged
    // file is moved aside and reported; the agent never refuses to start because of its buffer.
    // The output modules (SQLite, MQTT, InfluxDB clients) load only when configured: tens of MB of
    // RSS a gateway without them does not need.
    const outputs = this.config.outputs;
    if (outputs) {
      const logger = this.log.child({ component: 'outputs' });
      const { Outbox } = await import('./outputs/outbox.js');
      if (!this.started) return;
      this.outbox = new Outbox(outputs.outbox, { clock: this.clock, onWarning: (msg, detail) => logger.warn(detail, msg) });
      const context = outputContextFromConfig(this.config);
      if (outputs.mqtt) {
        const { MqttSink } = await import('./outputs/mqtt.js');
        if (!this.started) return;
        this.sinks.push({ name: 'mqtt', sink: new MqttSink(outputs.mqtt, { outbox: this.outbox, context, logger: logger.child({ sink: 'mqtt' }), clock: this.clock }) });
      }
      if (outputs.influx) {
        const { InfluxSink } = await import('./outputs/influx.js');
        if (!this.started) return;
        this.sinks.push({ name: 'influx', sink: new InfluxSink(outputs.influx, { outbox: this.outbox, context, logger: logger.child({ sink: 'influx' }), clock: this.clock }) });
      }
      const report = this.outbox.open();
      if (report.recovered) this.log.error({ movedTo: report.recovered.movedTo, reason: report.recovered.reason }, 'outbox was unreadable: moved aside, started a new one');
      this.log.info({ path: this.config.outputs?.outbox.path, backlog: report.rows }, 'outbox open');
      for (const { sink } of this.sinks) await sink.start();
      if (!this.started) return;
    }
    const devices = this.config.buses.reduce((n, b) => n + (b.type === 'serial-stream' ? 1 : b.devices.length), 0);
    this.log.info({ site: this.config.site, gateway: this.config.gateway, buses: this.config.buses.length, devices, points: this.config.points.size, readsPerCycle: this.readsPerCycle }, 'rackguard starting');
    for (const l of this.lines) l.start();
    for (const p of this.pollers) p.start();
    for (const s of this.streams) s.start();
    this.scheduleHealth();
    this.scheduleTick();
  }

  /** Safe at any stage; each part in its own try/catch, in reverse start order. */
  async stop(): Promise<void> {
    this.started = false;
    // A start-up still under way finishes (bailing out at its next step) before parts are stopped.
    try {
      await this.starting;
    } catch {
      // a failed start-up is reported by start(); stop what it did create
    }
    this.clock.clearTimeout(this.healthTimer);
    this.clock.clearTimeout(this.tickTimer);
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
    try {
      await this.recorder?.stop();
    } catch (err) {
      this.log.error({ err }, 'error while closing the trace');
    }
    // Sinks after acquisition (their last chance to drain, and MQTT's clean `offline`), the outbox last.
    for (const { sink } of [...this.sinks].reverse()) {
      try {
        await sink.stop();
      } catch (err) {
        this.log.error({ err }, 'error while stopping a sink');
      }
    }
    try {
      this.outbox?.close();
    } catch (err) {
      this.log.error({ err }, 'error while closing the outbox');
    }
  }

  /**
   * One durable append per poll cycle (a device's samples plus the events they caused), before any
   * sink sends anything. A failed append (disk full, I/O error) is logged and acquisition goes on:
   * detection and logs must not stop because the buffer cannot grow.
   */
  private append(entries: OutboxEntry[]): void {
    if (!this.outbox?.isOpen || entries.length === 0) return;
    try {
      this.outbox.append(entries);
    } catch (err) {
      this.log.error({ err, records: entries.length }, 'outbox append failed');
    }
  }

  zones(): ZoneStatus[] {
    return this.detector.status();
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
    this.recorder?.write(samples);
    const events = this.detector.ingest(samples);
    const entries: OutboxEntry[] = samples.map((sample) => ({ type: 'sample', sample }));
    for (const event of events) entries.push({ type: 'event', event });
    this.append(entries);
    this.emit('samples', samples);
    this.publish(events);
  }

  /** Logs and emits detector events (already in the outbox). */
  private publish(events: DetectorEvent[]): void {
    for (const e of events) {
      const level = e.kind === 'zone_blind' ? 'warn' : e.level === 'normal' ? 'info' : e.level === 'warning' ? 'warn' : 'error';
      const sensors = e.evidence.sensors.map((s) => ({ point: s.pointId, tempC: s.tempC, rateShort: s.rateShortCPerMin, rateLong: s.rateLongCPerMin, status: s.status }));
      this.log[level](
        { zone: e.zone, event: e.kind, from: e.kind === 'zone_level' ? e.from : undefined, level: e.level, etaCriticalS: e.evidence.etaCriticalS, sensors },
        e.kind === 'zone_level' ? `zone ${e.zone}: ${e.from} → ${e.level}: ${e.reason}` : `zone ${e.zone}: ${e.reason}`,
      );
      this.emit('detection', e);
    }
  }

  /** Time-based detection (dwell, clear delays, stale sensors) moves even when no sample arrives. */
  private scheduleTick(): void {
    this.tickTimer = this.clock.setTimeout(() => {
      if (!this.started) return;
      const events = this.detector.tick(this.clock.monoMs(), this.clock.wallMs());
      this.append(events.map((event) => ({ type: 'event', event })));
      this.publish(events);
      this.scheduleTick();
    }, 1000);
  }

  private scheduleHealth(): void {
    this.healthTimer = this.clock.setTimeout(() => {
      if (!this.started) return;
      for (const h of this.health()) this.log.info({ device: h.deviceId, state: h.state, counters: roundCounters(h.counters), lastError: h.lastError }, 'device health');
      // Each sink's depth (records behind) and lag (age of the oldest unacknowledged one).
      for (const { name, sink } of this.sinks) {
        const st = sink.stats();
        this.log[st.depth > 0 && st.lagMs > 60_000 ? 'warn' : 'info']({ sink: name, ...st }, 'sink health');
      }
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
