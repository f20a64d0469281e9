/**
 * Polls the devices of one Modbus line on their own schedules.
 *
 * The line carries one request at a time, so devices take turns. What keeps one bad device from
 * hurting the others:
 * - a device whose request times out (or whose port is gone) skips the rest of its reads for that
 *   cycle, so a silent unit costs the line at most one timeout per attempt;
 * - a device whose every read failed backs off exponentially (backoffInitialMs … backoffMaxMs) and
 *   is tried again alone, while the others keep their cadence;
 * - a lost port is not the devices' fault: no backoff, and all devices are polled as soon as the
 *   port is back;
 * - a device that answers every read with a Modbus exception is not offline: it is reported in state
 *   'exceptions', with each register and exception code, and polled on its cadence (an answer costs
 *   the line little, and the fix is usually a point map change the operator wants to see take effect).
 */
import type { Component } from '../component.js';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../clock.js';
import type { DeviceDef } from '../config/model.js';
import { MODBUS_EXCEPTION_NAMES, ModbusExceptionError, RackguardError } from '../errors.js';
import { readRequestPdu, readResponsePduLength, type Table } from '../modbus/pdu.js';
import { Backoff } from './backoff.js';
import type { ModbusLine } from './line.js';
import { planReads, type PlannedRead } from './planner.js';
import { PointTracker, samplesFromReply, type Stamp } from './samples.js';
import { newCounters, type DeviceCounters, type DeviceHealth, type DeviceState, type Sample } from './types.js';

/** Consecutive failed polls after which a device is reported offline. */
const OFFLINE_AFTER_FAILURES = 3;

/**
 * Exceptions a gateway raises for the device behind it: "path unavailable" and "target device failed
 * to respond" (Modbus Application Protocol v1.1b3, §7). The device did not answer: these count as
 * failures (failing, then offline), not as a device answering with exceptions.
 */
const GATEWAY_EXCEPTIONS = new Set([10, 11]);

const TABLE_NAMES: Record<Table, string> = { input: 'input register', holding: 'holding register', coil: 'coil', discrete: 'discrete input' };

/** `input register 1 (×2)`: the read as an operator finds it in the point map. */
function describeRead(read: PlannedRead): string {
  const span = read.quantity > 1 ? ` (×${read.quantity})` : '';
  return `${TABLE_NAMES[read.table]} ${read.address}${span}`;
}

/** `input register 1 (×2): exception 2 (illegal data address)`: what an operator checks in the point map. */
function describeException(read: PlannedRead, code: number): string {
  return `${describeRead(read)}: exception ${code} (${MODBUS_EXCEPTION_NAMES[code] ?? 'unknown exception'})`;
}

export interface PollerDeps {
  clock: Clock;
  logger: Logger;
  /** Called once per device poll with a sample for every point of the device. */
  onSamples: (samples: Sample[], device: DeviceDef) => void;
  onDeviceState?: (health: DeviceHealth, previous: DeviceState) => void;
  /** Each valid reply, with the latency the line measured (NaN when it cannot tell): the metrics' histogram. */
  onResponse?: (device: DeviceDef, latencyMs: number) => void;
}

class DeviceRuntime {
  readonly reads: PlannedRead[];
  readonly trackers = new Map<string, PointTracker>();
  readonly backoff: Backoff;
  readonly counters: DeviceCounters = newCounters();
  nextDue = 0;
  state: DeviceState = 'unknown';
  consecutiveFailures = 0;
  lastError: string | undefined;
  private latencySum = 0;
  private latencyCount = 0;

  constructor(readonly def: DeviceDef) {
    this.reads = planReads(def.points, def);
    for (const p of def.points) this.trackers.set(p.id, new PointTracker(p));
    this.backoff = new Backoff(def.backoffInitialMs, def.backoffMaxMs);
  }

  /**
   * A successful response, with the latency the line measured for it. A line that cannot tell
   * (NaN) counts the response and leaves the latency figures alone: measuring around the request
   * here would count time queued behind other requests and the line's recovery silence.
   */
  recordResponse(latencyMs: number): void {
    const c = this.counters;
    c.responses++;
    if (!Number.isFinite(latencyMs)) return;
    this.latencyCount++;
    this.latencySum += latencyMs;
    c.latencyLastMs = latencyMs;
    c.latencyAvgMs = this.latencySum / this.latencyCount;
    c.latencyMaxMs = Math.max(c.latencyMaxMs, latencyMs);
  }

  health(): DeviceHealth {
    const h: DeviceHealth = { deviceId: this.def.id, busId: this.def.busId, state: this.state, consecutiveFailures: this.consecutiveFailures, counters: { ...this.counters } };
    if (this.lastError !== undefined) h.lastError = this.lastError;
    return h;
  }
}

export class BusPoller implements Component {
  readonly name: string;
  private readonly devices: DeviceRuntime[];
  /**
   * The current run, undefined while stopped. Each loop and each poll holds the run it belongs to,
   * so a loop left over from before a stop() (still awaiting a reply when start() came again) ends
   * at its next check instead of polling alongside the new one.
   */
  private run: object | undefined;
  private loopDone: Promise<void> = Promise.resolve();
  private wakeTimer: TimerHandle | undefined;
  private wakeFn: (() => void) | undefined;
  private readonly onOpen = (): void => {
    // The port is back: poll everyone now rather than after their backoff.
    const now = this.deps.clock.monoMs();
    for (const d of this.devices) {
      d.nextDue = Math.min(d.nextDue, now);
      d.backoff.reset();
    }
    this.wake();
  };

  constructor(
    devices: readonly DeviceDef[],
    private readonly line: ModbusLine,
    private readonly deps: PollerDeps,
  ) {
    this.devices = devices.map((d) => new DeviceRuntime(d));
    this.name = `poller:${line.id}`;
  }

  /** Number of read requests one full cycle takes (after batching). */
  get readsPerCycle(): number {
    return this.devices.reduce((n, d) => n + d.reads.length, 0);
  }

  async start(): Promise<void> {
    if (this.run) return;
    const run = {};
    this.run = run;
    // Before the port is open, the first poll waits for the 'open' event (or one interval, so a
    // port that never opens still shows up as comm_error samples) instead of failing at once.
    const now = this.deps.clock.monoMs();
    for (const d of this.devices) d.nextDue = this.line.isOpen ? now : now + d.def.pollIntervalMs;
    this.line.on('open', this.onOpen);
    this.loopDone = this.loop(run);
  }

  async stop(): Promise<void> {
    this.run = undefined;
    this.line.off('open', this.onOpen);
    this.wake();
    await this.loopDone;
  }

  health(): DeviceHealth[] {
    return this.devices.map((d) => d.health());
  }

  private wake(): void {
    this.deps.clock.clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    const fn = this.wakeFn;
    this.wakeFn = undefined;
    fn?.();
  }

  private async loop(run: object): Promise<void> {
    const { clock, logger } = this.deps;
    while (this.run === run) {
      let next: DeviceRuntime | undefined;
      for (const d of this.devices) if (!next || d.nextDue < next.nextDue) next = d;
      if (!next) return;
      const wait = next.nextDue - clock.monoMs();
      if (wait > 0) {
        await new Promise<void>((resolve) => {
          this.wakeFn = resolve;
          this.wakeTimer = clock.setTimeout(() => this.wake(), wait);
        });
        continue;
      }
      // Let I/O callbacks run between polls: a request that fails at once (port closed) settles in
      // a microtask, and a loop of those would otherwise starve the event loop.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (this.run !== run) return;
      try {
        await this.pollDevice(next, run);
      } catch (err) {
        // A bug, not a device problem: keep polling the others, say so loudly.
        logger.error({ err, device: next.def.id }, 'poll failed unexpectedly');
        next.nextDue = clock.monoMs() + next.def.pollIntervalMs;
      }
    }
  }

  private stamp(): Stamp {
    return { ts: this.deps.clock.wallMs(), mono: this.deps.clock.monoMs() };
  }

  private async pollDevice(d: DeviceRuntime, run: object): Promise<void> {
    const { clock } = this.deps;
    const def = d.def;
    const samples: Sample[] = [];
    let anyOk = false;
    let portDown = false;
    /** Device exceptions of this poll, described; a read that failed any other way clears `allExceptions`. */
    const exceptions: string[] = [];
    let allExceptions = true;
    let abortReason: string | undefined;
    for (const read of d.reads) {
      if (abortReason !== undefined || this.run !== run) {
        const at = this.stamp();
        for (const it of read.items) samples.push(d.trackers.get(it.point.id)!.failed(abortReason ?? 'E_STOPPED: agent stopping', at));
        continue;
      }
      d.counters.requests++;
      try {
        const pdu = await this.line.request(def.unitId, readRequestPdu(read.table, read.address, read.quantity), def.timeoutMs);
        if (pdu.length !== readResponsePduLength(read.table, read.quantity)) {
          throw new RackguardError('E_MODBUS_BAD_FRAME', `${this.line.id} unit ${def.unitId} ${describeRead(read)}: reply carries ${pdu.length - 2} data bytes, expected ${readResponsePduLength(read.table, read.quantity) - 2}`, { retryable: true });
        }
        d.recordResponse(this.line.lastExchangeMs);
        this.deps.onResponse?.(def, this.line.lastExchangeMs);
        anyOk = true;
        samples.push(...samplesFromReply(read, pdu, d.trackers, this.stamp()));
      } catch (err) {
        const e = err instanceof RackguardError ? err : new RackguardError('E_MODBUS_BAD_FRAME', String(err), { cause: err });
        this.count(d, e);
        const reason = `${e.code}: ${e.message}`;
        d.lastError = reason;
        if (e instanceof ModbusExceptionError && !GATEWAY_EXCEPTIONS.has(e.exceptionCode)) exceptions.push(describeException(read, e.exceptionCode));
        else allExceptions = false;
        const at = this.stamp();
        for (const it of read.items) samples.push(d.trackers.get(it.point.id)!.failed(reason, at));
        if (e.code === 'E_PORT_CLOSED' || e.code === 'E_STOPPED') {
          portDown = true;
          abortReason = reason;
        } else if (e.code === 'E_MODBUS_TIMEOUT') {
          abortReason = `${e.code}: skipped, device did not answer an earlier read this cycle`;
        }
      }
    }
    // Stopping is not a device failure: a request cut short by stop() must not publish comm_error
    // samples or a retained "offline" for a healthy device.
    if (this.run !== run) return;
    const now = clock.monoMs();
    const prev = d.state;
    if (anyOk) {
      d.consecutiveFailures = 0;
      d.backoff.reset();
      d.state = 'online';
      d.lastError = undefined;
      d.nextDue = nextOnCadence(d.nextDue, def.pollIntervalMs, now);
    } else if (portDown) {
      d.state = 'offline';
      d.nextDue = nextOnCadence(d.nextDue, def.pollIntervalMs, now);
    } else if (allExceptions && exceptions.length > 0) {
      // It answers: not a comms failure, so no backoff and no count towards offline.
      d.consecutiveFailures = 0;
      d.backoff.reset();
      d.state = 'exceptions';
      d.lastError = exceptions.join('; ');
      d.nextDue = nextOnCadence(d.nextDue, def.pollIntervalMs, now);
    } else {
      d.consecutiveFailures++;
      d.state = d.consecutiveFailures >= OFFLINE_AFTER_FAILURES ? 'offline' : 'failing';
      d.nextDue = now + d.backoff.next();
    }
    this.deps.onSamples(samples, def);
    if (d.state !== prev) {
      const h = d.health();
      const level = d.state === 'online' ? 'info' : 'warn';
      this.deps.logger[level]({ device: def.id, unitId: def.unitId, from: prev, to: d.state, lastError: d.lastError }, `device ${d.state}`);
      this.deps.onDeviceState?.(h, prev);
    }
  }

  private count(d: DeviceRuntime, e: RackguardError): void {
    const c = d.counters;
    if (e instanceof ModbusExceptionError) c.exceptions++;
    else if (e.code === 'E_MODBUS_TIMEOUT') c.timeouts++;
    else if (e.code === 'E_MODBUS_CRC') c.crcErrors++;
    else if (e.code === 'E_PORT_CLOSED') c.portErrors++;
    else if (e.code !== 'E_STOPPED') c.badFrames++;
  }
}

/** The next slot on the device's cadence after `now`, skipping missed slots instead of bursting. */
function nextOnCadence(lastDue: number, interval: number, now: number): number {
  if (interval <= 0) return now; // continuous polling (benchmarks only; the schema requires ≥ 1 ms)
  let next = lastDue + interval;
  if (next <= now) next += Math.ceil((now - next) / interval + 1e-9) * interval;
  return next;
}
