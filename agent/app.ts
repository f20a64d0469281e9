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
import type { Component } from './component.js';
import { consumerFactories, type ConsumerDeps, type OutboxConsumer } from './outputs/consumers.js';
import { outputContextFromConfig } from './outputs/context.js';
import type { ActionEvent } from './outputs/events.js';
import type { Outbox, OutboxDeps, OutboxEntry, OutboxStats } from './outputs/outbox.js';
import type { AgentView, OutputsStats, Readiness, SinkFigures } from './observe/state.js';
import { ClockWatch, formatStep, type ClockStep } from './service/clock-watch.js';
import { stallBoundMs, type SourceProgress } from './service/progress.js';
import { RackguardError } from './errors.js';

/** Stable text of a part of the config, for "did it change?" (Maps as entry lists). */
function configKey(value: unknown): string {
  return JSON.stringify(value ?? null, (_k, v: unknown) => (v instanceof Map ? [...v] : v));
}


export interface AgentDeps {
  logger: Logger;
  /** Write every sample to this trace file (`rackguard run --record`). */
  recordFile?: string;
  clock?: Clock;
  /** Opens serial ports; defaults to npm serialport. */
  opener?: PortOpener;
  /** Seams of the outbox: a slow commit (`beforeCommit`), the free space it sees (`freeBytes`). */
  outbox?: Pick<OutboxDeps, 'beforeCommit' | 'freeBytes'>;
  /** `rackguard run --dry-run`: actions are recorded as `dry-run`, never run (whatever actions.dryRun says). */
  actionsDryRun?: boolean;
  /** Parts the embedder adds (HTTP status, notify …): started last, stopped first, like every other part. */
  parts?: readonly Component[];
}

export interface AgentEvents {
  /** One batch per device poll (or stream line): a sample for every point of that device. */
  samples: [samples: Sample[]];
  deviceState: [health: DeviceHealth, previous: DeviceState];
  /** Zone level changes and quorum events from the detector. */
  detection: [event: DetectorEvent];
  /** Each valid Modbus reply and its latency as the line measured it (NaN when it cannot tell). */
  response: [deviceId: string, busId: string, latencyMs: number];
  /** An action record (attempt, result, inhibition, shutdown step), already appended to the outbox. */
  action: [event: ActionEvent];
}

export interface Agent extends EventEmitter<AgentEvents> {
  /** Starts every part in order; a part that throws stops those already started, and start() rejects (retry is fine). */
  start(): Promise<void>;
  /** Stops the started parts in reverse order, each on its own, within config.stopTimeoutS overall. Safe at any stage. */
  stop(): Promise<void>;
  health(): DeviceHealth[];
  /** Current level of every zone, with its evidence. */
  zones(): ZoneStatus[];
  /** The outbox's figures (commits, pending, state …); undefined without `outputs:`. */
  outboxStats(): OutboxStats | undefined;
  /** The outbox's figures and each sink's depth and lag, for the HTTP endpoint. */
  outputsStats(): OutputsStats;
  /** Ready when acquisition is started and the outbox is open (or there is no outbox); else why not. */
  readiness(): Readiness;
  /** Each acquisition source's completed poll cycles and the time of its last one (the watchdog's measure). */
  progress(): SourceProgress[];
  /**
   * Applies a new, valid configuration to the running agent (SIGHUP) without losing buffered data or
   * detector state: the outbox stays open, sinks restart only when their section or the output context
   * changed, the detector adopts the config keeping unchanged zones and sensors, and acquisition is
   * rebuilt. Rejects with E_RELOAD_NEEDS_RESTART, changing nothing, for what a reload cannot apply.
   * Resolves with a summary of the changes, one phrase each.
   */
  reload(config: Config): Promise<string[]>;
  /** Records that a reload was refused (log lines are the caller's): an event in the outbox for the sinks. */
  reportReloadFailure(source: string, problems: string[]): void;
  /** Names of the parts in start order (after the first start). */
  readonly parts: readonly string[];
  /** Read requests per full poll cycle, after batching. */
  readonly readsPerCycle: number;
}

/** A bus is its line and its poller: the poller's stop (which waits for its request) runs alongside the line's. */
class BusPart implements Component {
  readonly name: string;
  constructor(
    private readonly line: ModbusLine,
    private readonly poller: BusPoller,
  ) {
    this.name = `bus:${line.id}`;
  }

  async start(): Promise<void> {
    await this.line.start();
    try {
      await this.poller.start();
    } catch (err) {
      await this.line.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    // The poller waits for its request in flight; stopping the line ends that request at once.
    const pollerDone = this.poller.stop();
    try {
      await this.line.stop();
    } finally {
      await pollerDone;
    }
  }
}

/** An acquisition part whose progress clock starts when it starts (not when it was built). */
class TrackedPart implements Component {
  readonly name: string;
  constructor(
    private readonly inner: Component,
    private readonly progress: SourceProgress,
    private readonly clock: Clock,
  ) {
    this.name = inner.name;
  }

  async start(): Promise<void> {
    this.progress.lastMono = this.clock.monoMs();
    await this.inner.start();
  }

  stop(): Promise<void> {
    return this.inner.stop();
  }
}

/** Races `p` against the time left; true when it settled in time. */
function within(p: Promise<void>, ms: number, clock: Clock): Promise<boolean> {
  let timer: TimerHandle | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = clock.setTimeout(() => resolve(false), Math.max(0, ms));
  });
  return Promise.race([p.then(() => true), timeout]).finally(() => clock.clearTimeout(timer));
}

class AgentImpl extends EventEmitter<AgentEvents> implements Agent {
  private readonly clock: Clock;
  private readonly log: Logger;
  private pollers: BusPoller[] = [];
  private acquisition: Component[] = [];
  private sources: SourceProgress[] = [];
  private readonly detector: Detector;
  private recorder: TraceRecorder | undefined;
  private outbox: Outbox | undefined;
  private readonly consumers: Array<{ name: string; consumer: OutboxConsumer }> = [];
  /** Consumer deps kept for a reload that restarts a sink. */
  private consumerDeps: ConsumerDeps | undefined;
  /** The action engine (with `actions:`), told when a reload rebuilds zones. */
  private engine: import('./actions/engine.js').ActionEngine | undefined;
  /** Wall-clock steps and whether the clock is synchronised (a Pi without an RTC). */
  private readonly clockWatch: ClockWatch;
  /** Every part, in start order; built once (outputs load lazily), reused by every start(). */
  private list: Component[] | undefined;
  private readonly running: Component[] = [];
  private running_ = false;
  private starting: Promise<void> | undefined;
  private stopRequested = false;

  constructor(
    private config: Config,
    private readonly deps: AgentDeps,
  ) {
    super();
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger;
    this.detector = new Detector(config);
    this.clockWatch = new ClockWatch(
      { syncedFile: config.clock?.syncedFile, stepThresholdMs: config.clock?.stepThresholdMs },
      { clock: this.clock, logger: this.log.child({ component: 'clock' }), onStep: (step) => this.outbox?.isOpen && this.outbox.redate(step) },
    );
    this.clockWatch.on('step', (step, redated) => this.onClockStep(step, redated));
    this.buildAcquisition(config);
  }

  /** Lines, pollers and stream sources for `config`, each counting its completed cycles. Starts nothing. */
  private buildAcquisition(config: Config): void {
    this.pollers = [];
    this.acquisition = [];
    this.sources = [];
    for (const bus of config.buses) {
      const logger = this.log.child({ bus: bus.id });
      const progress: SourceProgress = { name: `${bus.type === 'serial-stream' ? 'stream' : 'bus'}:${bus.id}`, cycles: 0, lastMono: this.clock.monoMs(), stallAfterMs: 0 };
      const onSamples = (samples: Sample[]): void => {
        progress.cycles++;
        progress.lastMono = this.clock.monoMs();
        this.onSamples(samples);
      };
      this.sources.push(progress);
      if (bus.type === 'serial-stream') {
        progress.stallAfterMs = stallBoundMs(bus, 0);
        this.acquisition.push(new TrackedPart(new StreamSource(bus, { clock: this.clock, logger, opener: this.deps.opener, onSamples }), progress, this.clock));
        continue;
      }
      const line: ModbusLine = bus.type === 'serial' ? new RtuLine(bus, { clock: this.clock, logger, opener: this.deps.opener }) : new TcpLine(bus, { clock: this.clock, logger });
      const poller = new BusPoller(bus.devices, line, {
        clock: this.clock,
        logger,
        onSamples,
        onDeviceState: (h, prev) => {
          this.append([{ type: 'event', event: { kind: 'device_state', deviceId: h.deviceId, state: h.state, previous: prev, ts: this.clock.wallMs(), ...(h.lastError ? { reason: h.lastError } : {}) } }]);
          this.emit('deviceState', h, prev);
        },
        onResponse: (dev, ms) => this.emit('response', dev.id, dev.busId, ms),
      });
      progress.stallAfterMs = stallBoundMs(bus, poller.readsPerCycle);
      this.pollers.push(poller);
      this.acquisition.push(new TrackedPart(new BusPart(line, poller), progress, this.clock));
    }
  }

  progress(): SourceProgress[] {
    return this.sources.map((s) => ({ ...s }));
  }

  get readsPerCycle(): number {
    return this.pollers.reduce((n, p) => n + p.readsPerCycle, 0);
  }

  get parts(): readonly string[] {
    return (this.list ?? []).map((p) => p.name);
  }

  /**
   * The list, in start order: the HTTP endpoint; the clock watch; the recorder; the outbox (nothing is read before there is somewhere to
   * put it, and it never refuses to start); its consumers; acquisition; the detector's clock.
   */
  private async build(): Promise<Component[]> {
    const list: Component[] = [];
    if (this.config.http) {
      // First: /healthz answers and /readyz says what is still starting; stopped last. Loaded lazily
      // (prom-client is RSS a gateway without `http:` does not need).
      const { HttpServer } = await import('./observe/http-server.js');
      const sensorPoints = this.config.zones.flatMap((z) => z.sensors);
      list.push(new HttpServer(this.config.http, { view: this.view(), sensorPoints, clock: this.clock, logger: this.log.child({ component: 'http' }) }));
    }
    // Before the outbox, the action engine and acquisition: records, the resume of an incident after a
    // restart and the first samples must already know whether the wall clock can be trusted.
    list.push(this.clockWatch);
    const recordFile = this.deps.recordFile;
    if (recordFile) {
      // Never blocks and never rejects: a trace that cannot be written is reported by the recorder.
      // Its flush at stop gets half the stop deadline, so the outbox and sinks keep theirs.
      const recorder = new TraceRecorder(recordFile, { clock: this.clock, logger: this.log.child({ component: 'recorder' }), flushTimeoutMs: (this.config.stopTimeoutS * 1000) / 2 });
      this.recorder = recorder;
      list.push(recorder);
    }
    if (this.config.outputs) {
      const logger = this.log.child({ component: 'outputs' });
      const { Outbox } = await import('./outputs/outbox.js');
      const outbox = new Outbox(this.config.outputs.outbox, { clock: this.clock, logger: logger.child({ part: 'outbox' }), clockSynced: () => this.clockWatch.synced, ...this.deps.outbox });
      this.outbox = outbox;
      list.push(outbox);
      const deps: ConsumerDeps = { outbox, context: outputContextFromConfig(this.config), logger, clock: this.clock, clockSync: this.clockWatch };
      this.consumerDeps = deps;
      for (const factory of consumerFactories) {
        const consumer = await factory.create(this.config, deps);
        if (consumer) {
          this.consumers.push({ name: consumer.name.replace(/^sink:/, ''), consumer });
          list.push(consumer);
        }
      }
    }
    if (this.config.actions) {
      // After the outbox (its records go there) and before acquisition (it hears every detector event);
      // stopped before the outbox, so its last records are still written. Loaded lazily.
      const { ActionEngine } = await import('./actions/engine.js');
      const engine = new ActionEngine(this.config.actions, {
        clock: this.clock,
        logger: this.log.child({ component: 'actions' }),
        site: this.config.site,
        gateway: this.config.gateway,
        zones: this.config.zones,
        record: (event) => {
          this.append([{ type: 'event', event }]);
          this.emit('action', event);
        },
        ...(this.deps.actionsDryRun ? { dryRun: true } : {}),
        ...(this.config.outputs?.mqtt ? { mqtt: this.config.outputs.mqtt } : {}),
        zoneStatus: (zone) => this.detector.status().find((z) => z.zone === zone),
        // Evidence only (timesyncd or a step): judges a downtime across a reboot (service/boot.ts).
        clockSynced: () => this.clockWatch.knownSynced,
      });
      this.on('detection', (e) => engine.onDetection(e));
      this.engine = engine;
      list.push(engine);
    }
    list.push({
      name: 'announce',
      start: async () => {
        const devices = this.config.buses.reduce((n, b) => n + (b.type === 'serial-stream' ? 1 : b.devices.length), 0);
        this.log.info({ site: this.config.site, gateway: this.config.gateway, buses: this.config.buses.length, devices, points: this.config.points.size, readsPerCycle: this.readsPerCycle }, 'rackguard starting');
      },
      stop: async () => undefined,
    });
    list.push(...this.acquisition);
    list.push(this.timers());
    list.push(...(this.deps.parts ?? []));
    return list;
  }

  async start(): Promise<void> {
    if (this.running_) return this.starting;
    this.running_ = true;
    this.stopRequested = false;
    this.starting = this.startParts();
    try {
      await this.starting;
    } catch (err) {
      this.running_ = false;
      throw err;
    }
  }

  /** Starts the list in order. It checks for a stop() after every await, so a stop during start-up wins. */
  private async startParts(): Promise<void> {
    this.list ??= await this.build();
    for (const part of this.list) {
      if (this.stopRequested) break;
      try {
        await part.start();
        this.running.push(part);
      } catch (err) {
        this.log.error({ err, part: part.name }, `${part.name} failed to start; stopping what started`);
        await this.stopParts(this.clock.monoMs() + this.config.stopTimeoutS * 1000);
        throw err;
      }
    }
    // A stop() that gave up waiting for a slow part's start has already stopped the rest: this one too.
    if (this.stopRequested && !this.running_) await this.stopParts(this.clock.monoMs() + this.config.stopTimeoutS * 1000);
  }

  /** Safe at any stage: stops what started, in reverse order, each on its own, under one deadline. */
  async stop(): Promise<void> {
    const deadline = this.clock.monoMs() + this.config.stopTimeoutS * 1000;
    this.stopRequested = true;
    if (this.starting) {
      // A part still starting (a port, a file) is waited for within the same deadline, not forever.
      const settled = this.starting.then(
        () => undefined,
        () => undefined, // a failed start-up is reported by start() and stopped what it started
      );
      if (!(await within(settled, deadline - this.clock.monoMs(), this.clock))) {
        this.log.error({ stopTimeoutS: this.config.stopTimeoutS }, 'start-up did not finish within the stop deadline; stopping what started');
      }
    }
    this.running_ = false;
    await this.stopParts(deadline);
  }

  private async stopParts(deadline: number): Promise<void> {
    while (this.running.length > 0) {
      const part = this.running.pop()!;
      let done: Promise<void>;
      try {
        // Called even when the deadline has passed: its synchronous part (a timer cleared, a file
        // closed) still runs; only the waiting is cut.
        done = part.stop().catch((err: unknown) => {
          this.log.error({ err, part: part.name }, `error while stopping ${part.name}`);
        });
      } catch (err) {
        this.log.error({ err, part: part.name }, `error while stopping ${part.name}`);
        continue;
      }
      if (!(await within(done, deadline - this.clock.monoMs(), this.clock))) {
        this.log.error({ part: part.name, stopTimeoutS: this.config.stopTimeoutS }, `${part.name} did not stop within the stop deadline; going on without it`);
      }
    }
  }

  /**
   * Hands entries to the outbox (it commits them in groups, and keeps them in memory when its file
   * cannot be written): acquisition and detection never stop because the buffer cannot grow.
   */
  private append(entries: OutboxEntry[]): void {
    if (!this.outbox?.isOpen || entries.length === 0) return;
    try {
      this.outbox.append(entries);
    } catch (err) {
      this.log.error({ err, records: entries.length }, 'outbox append failed');
    }
  }

  async reload(config: Config): Promise<string[]> {
    const old = this.config;
    const refused: string[] = [];
    if (Boolean(old.outputs) !== Boolean(config.outputs)) refused.push(`outputs: ${config.outputs ? 'added' : 'removed'}`);
    else if (configKey(old.outputs?.outbox) !== configKey(config.outputs?.outbox)) refused.push('outputs.outbox changed (a reload never closes the outbox)');
    if (configKey(old.http) !== configKey(config.http)) refused.push('http changed');
    // The engine is not rebuilt by a reload: rebuilding it would abort a shutdown sequence or a hook in
    // flight. A changed policy, dryRun or inhibit that a reload silently ignored would let an operator
    // believe, say, that dry run is on: refused, so the operator restarts on purpose.
    if (configKey(old.actions) !== configKey(config.actions)) refused.push('actions changed (the action engine is never rebuilt under a running incident)');
    if (refused.length > 0) {
      throw new RackguardError('E_RELOAD_NEEDS_RESTART', `cannot apply by a reload, restart the agent instead: ${refused.join('; ')}`);
    }
    if (!this.running_ || this.stopRequested) throw new RackguardError('E_RELOAD_NEEDS_RESTART', 'the agent is not running');
    await this.starting;
    const changes: string[] = [];
    const acqChanged = configKey(old.buses) !== configKey(config.buses);

    this.config = config;
    const detection = this.detector.adopt(config);
    // Rebuilt zones start normal and emit nothing until they change: the engine must not wait for ever
    // for the `normal` event of an incident opened before the reload.
    this.engine?.adoptZones(config.zones, detection.newZones);
    if (acqChanged) await this.rebuildAcquisition(config);
    if (this.stopRequested) throw new RackguardError('E_RELOAD_NEEDS_RESTART', 'the agent stopped during the reload');
    changes.push(acqChanged ? `acquisition rebuilt (${config.buses.length} buses, ${this.readsPerCycle} reads per cycle)` : 'acquisition unchanged (buses as before: not restarted)');
    changes.push(`detector: ${detection.keptZones.length} zones kept${detection.keptZones.length ? ` (${detection.keptZones.join(', ')})` : ''}, ${detection.newZones.length} new or changed${detection.newZones.length ? ` (${detection.newZones.join(', ')})` : ''}`);

    // Sinks: restart only those whose section, or the context they publish with, changed. Their cursors
    // live in the outbox, so a restarted sink resumes where it was.
    if (this.consumerDeps) {
      const list = this.list ?? [];
      const contextChanged = configKey(outputContextFromConfig(old)) !== configKey(outputContextFromConfig(config)) || old.stopTimeoutS !== config.stopTimeoutS;
      const deps: ConsumerDeps = { ...this.consumerDeps, context: outputContextFromConfig(config) };
      this.consumerDeps = deps;
      for (const factory of consumerFactories) {
        const section = factory.section.split('.')[1] as 'mqtt' | 'influx';
        const changed = contextChanged || configKey(old.outputs?.[section]) !== configKey(config.outputs?.[section]);
        if (!changed || this.stopRequested) continue;
        const name = factory.section.replace(/^outputs\./, '');
        const i = this.consumers.findIndex((c) => c.name === name);
        const prev = i >= 0 ? this.consumers[i]!.consumer : undefined;
        // Neither before nor after: nothing to restart (the context changed, but no such sink exists).
        if (!prev && !config.outputs?.[section]) continue;
        if (prev) {
          try {
            await prev.stop();
          } catch (err) {
            this.log.error({ err, part: prev.name }, `error while stopping ${prev.name} for a reload`);
          }
        }
        const next = await factory.create(config, deps);
        const replace = (arr: Component[]): void => {
          const j = prev ? arr.indexOf(prev) : -1;
          if (j >= 0) {
            if (next) arr.splice(j, 1, next);
            else arr.splice(j, 1);
          } else if (next) arr.splice(arr.findIndex((p) => p.name === 'announce'), 0, next);
        };
        replace(list);
        if (next) {
          await next.start();
          replace(this.running);
          if (i >= 0) this.consumers.splice(i, 1, { name, consumer: next });
          else this.consumers.push({ name, consumer: next });
        } else {
          const j = prev ? this.running.indexOf(prev) : -1;
          if (j >= 0) this.running.splice(j, 1);
          if (i >= 0) this.consumers.splice(i, 1);
        }
        changes.push(`sink ${name} ${!prev ? 'added' : next ? 'restarted' : 'removed'}`);
      }
    }
    for (const key of ['logging', 'stopTimeoutS', 'site', 'gateway'] as const) {
      if (configKey(old[key]) !== configKey(config[key])) changes.push(`${key} changed`);
    }
    return changes;
  }

  /**
   * Stops the old lines, pollers and stream sources, then builds and starts the new ones in their place
   * in the list (so stop() later finds them in order). Samples pause for the time this takes; the
   * devices' health starts afresh (state unknown until their first poll).
   */
  private async rebuildAcquisition(config: Config): Promise<void> {
    const oldParts = this.acquisition;
    for (const part of [...oldParts].reverse()) {
      try {
        await part.stop();
      } catch (err) {
        this.log.error({ err, part: part.name }, `error while stopping ${part.name} for a reload`);
      }
    }
    const list = this.list ?? [];
    const at = list.indexOf(oldParts[0]!);
    const runAt = this.running.indexOf(oldParts[0]!);
    this.buildAcquisition(config);
    if (oldParts.length > 0 && at >= 0) list.splice(at, oldParts.length, ...this.acquisition);
    else list.splice(list.findIndex((p) => p.name === 'timers'), 0, ...this.acquisition);
    const running = this.running.filter((p) => !oldParts.includes(p));
    const started: Component[] = [];
    for (const part of this.acquisition) {
      if (this.stopRequested) break;
      try {
        await part.start();
        started.push(part);
      } catch (err) {
        // A port that cannot open is retried in the background by the line; a throw here is a bug.
        this.log.error({ err, part: part.name }, `${part.name} failed to start after a reload`);
      }
    }
    if (this.stopRequested) {
      // A stop() came during the reload and has stopped what it found: these too.
      for (const part of started.reverse()) await part.stop().catch((err: unknown) => this.log.error({ err, part: part.name }, `error while stopping ${part.name}`));
      return;
    }
    running.splice(runAt >= 0 ? runAt : running.findIndex((p) => p.name === 'timers'), 0, ...started);
    this.running.splice(0, this.running.length, ...running);
  }

  reportReloadFailure(source: string, problems: string[]): void {
    this.append([
      {
        type: 'event',
        event: { kind: 'output', code: 'config_reload_failed', severity: 'error', message: `${source}: configuration reload refused (${problems.length} problem${problems.length === 1 ? '' : 's'}); running on the previous configuration`, ts: this.clock.wallMs(), detail: { source, problems } },
      },
    ]);
  }

  outboxStats(): OutboxStats | undefined {
    return this.outbox?.isOpen ? this.outbox.stats() : undefined;
  }

  zones(): ZoneStatus[] {
    return this.detector.status();
  }

  outputsStats(): OutputsStats {
    const sinks: Record<string, SinkFigures> = {};
    for (const { name, consumer } of this.consumers) {
      try {
        sinks[name] = consumer.stats();
      } catch {
        // A stopped sink has no figures (its outbox cursor is gone): leave it out.
      }
    }
    return { outbox: this.outboxStats(), sinks };
  }

  readiness(): Readiness {
    const reasons: string[] = [];
    if (!this.running_ || this.stopRequested) reasons.push(this.stopRequested ? 'stopping' : 'not started');
    if (!this.acquisition.every((p) => this.running.includes(p))) reasons.push('acquisition not started');
    if (this.config.outputs) {
      const state = this.outbox?.isOpen ? this.outbox.stats().state : 'stopped';
      if (state !== 'open') reasons.push(`outbox ${state}`);
    }
    return { ready: reasons.length === 0, reasons };
  }

  /** What the HTTP endpoint may see and hear of the agent. */
  private view(): AgentView {
    return {
      site: this.config.site,
      gateway: this.config.gateway,
      zones: () => this.zones(),
      health: () => this.health(),
      outputsStats: () => this.outputsStats(),
      readiness: () => this.readiness(),
      subscribe: (l) => {
        const deviceState = (h: DeviceHealth, prev: DeviceState): void => l.deviceState(h, prev);
        this.on('samples', l.samples).on('detection', l.detection).on('deviceState', deviceState).on('response', l.response).on('action', l.action);
        return () => void this.off('samples', l.samples).off('detection', l.detection).off('deviceState', deviceState).off('response', l.response).off('action', l.action);
      },
    };
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
    // Unsynchronised: marked, and re-dated with the outbox when the step comes. Synchronised: a sample
    // stamped before a step that was detected while its poll was still going is moved here (the outbox
    // was re-dated without it).
    const unsynced = !this.clockWatch.synced;
    const entries: OutboxEntry[] = samples.map((sample) => {
      if (unsynced) {
        sample.clockUnsynced = true;
        return { type: 'sample', sample };
      }
      const ts = this.clockWatch.rebase(sample.ts, sample.mono);
      if (ts === sample.ts) return { type: 'sample', sample };
      const clockRedatedMs = ts - sample.ts;
      sample.ts = ts;
      return { type: 'sample', sample, clockRedatedMs };
    });
    this.recorder?.write(samples);
    const events = this.detector.ingest(samples);
    for (const event of events) entries.push({ type: 'event', event });
    this.append(entries);
    this.emit('samples', samples);
    this.publish(events);
  }

  /** A wall-clock step (the outbox is re-dated by now): one event; rates and dwell run on monotonic time. */
  private onClockStep(step: ClockStep, redated: number): void {
    const message = `wall clock stepped by ${formatStep(step.stepMs)} (${new Date(step.oldWallMs).toISOString()} -> ${new Date(step.newWallMs).toISOString()})`;
    this.append([{ type: 'event', event: { kind: 'clock_step', ts: step.newWallMs, stepMs: step.stepMs, oldWallMs: step.oldWallMs, newWallMs: step.newWallMs, redated, message } }]);
  }

  /** Logs and emits detector events (already in the outbox). */
  private publish(events: DetectorEvent[]): void {
    for (const e of events) {
      const level = e.kind === 'zone_blind' ? 'warn' : e.level === 'normal' ? 'info' : e.level === 'warning' ? 'warn' : 'error';
      const sensors = e.evidence.sensors.map((s) => ({ point: s.pointId, tempC: s.tempC, rateShort: s.rateShortCPerMin, rateLong: s.rateLongCPerMin, status: s.status }));
      this.log[level](
        // `zoneLevel`, not `level`: pino's own numeric `level` would collide and JSON parsers keep one.
        { zone: e.zone, event: e.kind, from: e.kind === 'zone_level' ? e.from : undefined, zoneLevel: e.level, etaCriticalS: e.evidence.etaCriticalS, sensors },
        e.kind === 'zone_level' ? `zone ${e.zone}: ${e.from} → ${e.level}: ${e.reason}` : `zone ${e.zone}: ${e.reason}`,
      );
      this.emit('detection', e);
    }
  }

  /** Time-based detection (dwell, clear delays, stale sensors) and the health log, as one part. */
  private timers(): Component {
    let tickTimer: TimerHandle | undefined;
    let healthTimer: TimerHandle | undefined;
    let on = false;
    const tick = (): void => {
      tickTimer = this.clock.setTimeout(() => {
        if (!on) return;
        const events = this.detector.tick(this.clock.monoMs(), this.clock.wallMs());
        this.append(events.map((event) => ({ type: 'event', event })));
        this.publish(events);
        tick();
      }, 1000);
    };
    const health = (): void => {
      healthTimer = this.clock.setTimeout(() => {
        if (!on) return;
        this.logHealth();
        health();
      }, this.config.logging.healthIntervalS * 1000);
    };
    return {
      name: 'timers',
      start: async () => {
        if (on) return;
        on = true;
        tick();
        health();
      },
      stop: async () => {
        on = false;
        this.clock.clearTimeout(tickTimer);
        this.clock.clearTimeout(healthTimer);
      },
    };
  }

  private logHealth(): void {
    for (const h of this.health()) this.log.info({ device: h.deviceId, state: h.state, counters: roundCounters(h.counters), lastError: h.lastError }, 'device health');
    // Each consumer's depth (records behind) and lag (age of the oldest unacknowledged one).
    for (const { name, consumer } of this.consumers) {
      try {
        const st = consumer.stats();
        this.log[st.depth > 0 && st.lagMs > 60_000 ? 'warn' : 'info']({ sink: name, ...st }, 'sink health');
      } catch (err) {
        this.log.warn({ sink: name, err: (err as Error).message }, 'sink health unavailable');
      }
    }
    if (this.outbox?.isOpen) {
      try {
        const { sinks: _sinks, ...st } = this.outbox.stats();
        this.log[st.state === 'open' ? 'info' : 'error'](st, 'outbox health');
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'outbox health unavailable');
      }
    }
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
