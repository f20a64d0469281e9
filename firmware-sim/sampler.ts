/**
 * The simulated rack polled on virtual time, synchronously: every device on its own cadence, each
 * planned read answered by SimRack.handle() and decoded by the agent's own code (planner,
 * samplesFromReply, PointTracker). No ports, no timers: a week of a rack takes seconds. Used by
 * drills, trace generation and the detection benchmark.
 *
 * What it does not model: the line's timing (requests take no time) and the poller's backoff (a
 * failing device is asked again on its cadence). Both are acquisition concerns, tested for real
 * elsewhere; detection only needs the samples.
 */
import { VirtualClock } from '../agent/clock.js';
import type { Config, DeviceDef } from '../agent/config/model.js';
import { ModbusExceptionError, RackguardError } from '../agent/errors.js';
import { planReads, type PlannedRead } from '../agent/acquisition/planner.js';
import { PointTracker, samplesFromReply } from '../agent/acquisition/samples.js';
import type { Sample } from '../agent/acquisition/types.js';
import { readRequestPdu, readResponsePduLength } from '../agent/modbus/pdu.js';
import { mulberry32 } from './thermal.js';
import { SimRack, type Transport } from './rack.js';
import type { Scenario } from './scenario.js';

export interface SamplerOptions {
  config: Config;
  scenario?: Scenario;
  seed?: number;
  /** Wall-clock time of t = 0, ms since the epoch. Default 2026-01-01T00:00:00Z. */
  startWallMs?: number;
  /** Poll interval for every device, ms; default each device's own pollIntervalMs. */
  pollIntervalMs?: number;
  /** Random extra delay of each poll, 0 … jitterMs, for irregular sampling. Default 0. */
  jitterMs?: number;
}

export interface SampleBatch {
  /** Seconds since the start of the run. */
  timeS: number;
  samples: Sample[];
}

interface DevicePoll {
  def: DeviceDef;
  transport: Transport;
  reads: PlannedRead[];
  trackers: Map<string, PointTracker>;
  nextMs: number;
  intervalMs: number;
}

export class VirtualRackSampler {
  readonly rack: SimRack;
  readonly clock: VirtualClock;
  private readonly devices: DevicePoll[] = [];
  private readonly rand: () => number;
  private readonly jitterMs: number;

  constructor(opts: SamplerOptions) {
    this.clock = new VirtualClock({ startMonoMs: 0, startWallMs: opts.startWallMs ?? Date.UTC(2026, 0, 1) });
    const seed = opts.seed ?? opts.scenario?.seed ?? 1;
    this.rack = new SimRack({ config: opts.config, clock: this.clock, seed, ...(opts.scenario ? { scenario: opts.scenario } : {}) });
    this.rand = mulberry32(seed ^ 0x5a5a5a5a);
    this.jitterMs = opts.jitterMs ?? 0;
    for (const bus of opts.config.buses) {
      if (bus.type === 'serial-stream') continue;
      const transport: Transport = bus.type === 'serial' ? 'rtu' : 'tcp';
      for (const def of bus.devices) {
        const trackers = new Map(def.points.map((p) => [p.id, new PointTracker(p)]));
        this.devices.push({ def, transport, reads: planReads(def.points, def), trackers, nextMs: 0, intervalMs: opts.pollIntervalMs ?? def.pollIntervalMs });
      }
    }
  }

  /** Polls every device that falls due up to `untilS`, in time order; yields one batch per device poll. */
  *run(untilS: number): Generator<SampleBatch> {
    const endMs = untilS * 1000;
    for (;;) {
      let next: DevicePoll | undefined;
      for (const d of this.devices) if (!next || d.nextMs < next.nextMs) next = d;
      if (!next || next.nextMs > endMs) return;
      const at = next.nextMs + (this.jitterMs > 0 ? this.rand() * this.jitterMs : 0);
      if (at > this.clock.monoMs()) this.clock.advance(at - this.clock.monoMs());
      next.nextMs += next.intervalMs;
      yield { timeS: this.clock.monoMs() / 1000, samples: this.poll(next) };
    }
  }

  private poll(d: DevicePoll): Sample[] {
    const samples: Sample[] = [];
    const at = { ts: this.clock.wallMs(), mono: this.clock.monoMs() };
    let abort: string | undefined;
    for (const read of d.reads) {
      const err = abort ?? this.request(d, read);
      if (typeof err === 'string') {
        for (const it of read.items) samples.push(d.trackers.get(it.point.id)!.failed(err, at));
        if (err.startsWith('E_MODBUS_TIMEOUT')) abort = `${err} (skipped)`;
      } else {
        samples.push(...samplesFromReply(read, err, d.trackers, at));
      }
    }
    return samples;
  }

  /** The reply PDU, or the failure reason the agent's line would report. */
  private request(d: DevicePoll, read: PlannedRead): Buffer | string {
    const res = this.rack.handle(d.transport, d.def.unitId, readRequestPdu(read.table, read.address, read.quantity));
    const where = `${d.def.busId} unit ${d.def.unitId}`;
    const fail = (e: RackguardError): string => `${e.code}: ${e.message}`;
    if (!res.reply || (res.fault === 'late' && (res.delayMs ?? 0) > d.def.timeoutMs)) {
      return fail(new RackguardError('E_MODBUS_TIMEOUT', `${where}: no complete reply within ${d.def.timeoutMs} ms`));
    }
    if (res.fault === 'crc') return fail(new RackguardError('E_MODBUS_CRC', `${where}: CRC error in reply`));
    if (res.reply[0]! & 0x80) return fail(new ModbusExceptionError(res.reply[1]!, where));
    if (res.reply.length !== readResponsePduLength(read.table, read.quantity)) return fail(new RackguardError('E_MODBUS_BAD_FRAME', `${where}: wrong reply length`));
    return res.reply;
  }
}
