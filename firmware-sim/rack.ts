/**
 * The simulated rack: every Modbus device of the agent's config, served from one RoomModel and a
 * scenario timeline. Transport-free: the RTU slave and the TCP server hand it request PDUs and send what
 * it returns. Register contents come from the config's point definitions through `encodeValue`, so the
 * simulator and the agent agree by construction (the mbpoll interop tests check it independently).
 *
 * Simulated time = timeScale × monotonic seconds since construction, read from the injected Clock.
 */
import type { Clock } from '../agent/clock.js';
import { systemClock } from '../agent/clock.js';
import type { Config, DeviceDef, ModbusPointDef } from '../agent/config/model.js';
import { encodeRawUnsigned, encodeValue, registerCount } from '../agent/acquisition/decode.js';
import { FC, MAX_READ_QUANTITY, exceptionPdu, readResponsePdu, type Table } from '../agent/modbus/pdu.js';
import { RoomModel, type RoomParamsInput } from './thermal.js';
import type { DeviceFault, Scenario, ScenarioAction, ScenarioEvent, SensorFault } from './scenario.js';

export type Transport = 'rtu' | 'tcp';

export interface HandleResult {
  /** Response PDU, or null for no reply at all (unknown unit, silent device). */
  reply: Buffer | null;
  /** 'crc': the RTU transport must corrupt the frame's CRC. 'late': send the reply after delayMs. */
  fault?: 'crc' | 'late';
  delayMs?: number;
}

export interface DeviceCounters {
  requests: number;
  /** Replies handed back (normal or exception, including late and CRC-corrupted ones). */
  replies: number;
  exceptions: number;
  /** Requests left unanswered because of a silent fault. */
  silent: number;
  crc: number;
  late: number;
  writes: number;
}

export interface SimRackOptions {
  config: Config;
  scenario?: Scenario;
  /** Default systemClock. Simulated time starts at the clock's monoMs() when the rack is built. */
  clock?: Clock;
  /** Simulated seconds per monotonic second. Default 1. */
  timeScale?: number;
  /** Overrides the scenario's seed (default 1). */
  seed?: number;
  /** Room parameters merged over the scenario's `room:` block. */
  room?: RoomParamsInput;
  /** Called for every scenario event as it is applied (for logs). */
  onEvent?: (event: ScenarioEvent, simS: number) => void;
}

type Role =
  | { kind: 'inlet'; sensor: string }
  | { kind: 'humidity'; sensor?: string }
  | { kind: 'chiller-running' }
  | { kind: 'chiller-alarm' }
  | { kind: 'chiller-supply' }
  | { kind: 'chiller-return' }
  | { kind: 'energy' }
  | { kind: 'sensor-ok' }
  | { kind: 'constant'; value: number };

interface PointEntry {
  def: ModbusPointDef;
  role: Role;
  width: number;
}

interface DeviceEntry {
  def: DeviceDef;
  transport: Transport;
  byTable: Record<Table, PointEntry[]>;
  /** Holding registers written by FC6/FC16 (served where no point covers the address). */
  written: Map<number, number>;
  counters: DeviceCounters;
}

type HeldSensorFault = SensorFault & { held?: number[]; sinceS?: number };

/** Energy counters start here, kWh, and grow with the IT load. */
const ENERGY_BASE_KWH = 10_000;

function newCounters(): DeviceCounters {
  return { requests: 0, replies: 0, exceptions: 0, silent: 0, crc: 0, late: 0, writes: 0 };
}

export class SimRack {
  readonly config: Config;
  readonly room: RoomModel;
  readonly timeScale: number;
  readonly scenario: Scenario | undefined;
  /** Configuration oddities the simulator worked around (duplicate unit ids across buses, …). */
  readonly warnings: string[] = [];
  private readonly clock: Clock;
  private readonly startMonoMs: number;
  private readonly onEvent: ((event: ScenarioEvent, simS: number) => void) | undefined;
  private readonly units: Record<Transport, Map<number, DeviceEntry>> = { rtu: new Map(), tcp: new Map() };
  private readonly devicesById = new Map<string, DeviceEntry>();
  private readonly pointsById = new Map<string, { entry: PointEntry; device: DeviceEntry }>();
  private readonly deviceFaults = new Map<string, DeviceFault>();
  private readonly sensorFaults = new Map<string, HeldSensorFault>();
  private readonly overrides = new Map<string, number>();
  private readonly lastServed = new Map<string, number[]>();
  private readonly unknownUnit: Record<Transport, number> = { rtu: 0, tcp: 0 };
  private readonly timeline: ScenarioEvent[];
  private nextEvent = 0;

  constructor(opts: SimRackOptions) {
    this.config = opts.config;
    this.scenario = opts.scenario;
    this.clock = opts.clock ?? systemClock;
    this.timeScale = opts.timeScale ?? 1;
    this.onEvent = opts.onEvent;
    this.startMonoMs = this.clock.monoMs();
    this.timeline = [...(opts.scenario?.events ?? [])];
    const sensorIds = this.indexDevices();
    this.room = new RoomModel({ ...(opts.scenario?.room ?? {}), ...(opts.room ?? {}) }, sensorIds, opts.seed ?? opts.scenario?.seed ?? 1);
  }

  /** Simulated seconds since start. */
  simTimeS(): number {
    return ((this.clock.monoMs() - this.startMonoMs) / 1000) * this.timeScale;
  }

  /** Applies the scenario events that are due and advances the room model to now. Returns the sim time. */
  sync(): number {
    const now = this.simTimeS();
    for (let e = this.timeline[this.nextEvent]; e !== undefined && e.at <= now; e = this.timeline[this.nextEvent]) {
      this.nextEvent++;
      this.room.advanceTo(e.at);
      this.apply(e);
      this.onEvent?.(e, e.at);
    }
    this.room.advanceTo(now);
    return now;
  }

  /** Simulated time of the next scenario event not yet applied, s; undefined when none is left. */
  nextEventAtS(): number | undefined {
    return this.timeline[this.nextEvent]?.at;
  }

  /** Devices served on a transport, by unit id. */
  devices(transport: Transport): DeviceDef[] {
    return [...this.units[transport].values()].map((d) => d.def);
  }

  /** Applies an action now (after the events already due), as a scenario event would. */
  applyEvent(action: ScenarioAction): void {
    this.sync();
    this.apply(action);
  }

  /** Sets (or with `{ type: 'none' }` clears) a whole-device fault. */
  setFault(deviceId: string, fault: DeviceFault): void {
    if (!this.devicesById.has(deviceId)) throw new Error(`simulator: unknown device "${deviceId}"`);
    if (fault.type === 'none') this.deviceFaults.delete(deviceId);
    else this.deviceFaults.set(deviceId, fault);
  }

  /** Sets (or clears) a fault of one point: freeze holds its last served value, dead serves its fault value. */
  setSensorFault(pointId: string, fault: SensorFault): void {
    if (!this.pointsById.has(pointId)) throw new Error(`simulator: unknown point "${pointId}"`);
    if (fault.type === 'none') this.sensorFaults.delete(pointId);
    else if (fault.type === 'freeze') this.sensorFaults.set(pointId, { ...fault, ...holdOf(this.lastServed.get(pointId)) });
    else if (fault.type === 'drift') this.sensorFaults.set(pointId, { ...fault, sinceS: this.simTimeS() });
    else this.sensorFaults.set(pointId, { ...fault });
  }

  /** Serves `value` (engineering units) for a point instead of the model's; undefined returns it to the model. */
  setValue(pointId: string, value: number | undefined): void {
    if (!this.pointsById.has(pointId)) throw new Error(`simulator: unknown point "${pointId}"`);
    if (value === undefined) this.overrides.delete(pointId);
    else this.overrides.set(pointId, value);
  }

  /** The engineering value the rack would serve for a point now, before quantisation; null when dead. */
  pointValue(pointId: string): number | null {
    this.sync();
    const hit = this.point(pointId);
    if (this.sensorFaults.get(pointId)?.type === 'dead') return null;
    return this.valueOf(hit.entry);
  }

  /** The registers (or bits) a read would return for a point now, without side effects (a glitch is not consumed). */
  peekRegisters(pointId: string): number[] {
    this.sync();
    return this.registersOf(this.point(pointId), false);
  }

  /** Request counters per device id. */
  counters(): Record<string, DeviceCounters> {
    const out: Record<string, DeviceCounters> = {};
    for (const [id, d] of this.devicesById) out[id] = { ...d.counters };
    return out;
  }

  /** Requests addressed to a unit id nobody serves, per transport. */
  unknownUnitRequests(): Record<Transport, number> {
    return { ...this.unknownUnit };
  }

  /**
   * Serves one request PDU for `unitId`. Unknown unit → no reply (as on a real bus). FC1/2/3/4 reads,
   * FC6/FC16 writes to holding registers (a plain store); any other function → exception 1; a range no
   * point covers → exception 2; a bad quantity → exception 3 (Modbus Application Protocol v1.1b3 §6–7).
   */
  handle(transport: Transport, unitId: number, pdu: Buffer): HandleResult {
    this.sync();
    const dev = this.units[transport].get(unitId);
    if (!dev) {
      this.unknownUnit[transport]++;
      return { reply: null };
    }
    dev.counters.requests++;
    const fault = this.deviceFaults.get(dev.def.id);
    if (fault?.type === 'silent') {
      dev.counters.silent++;
      return { reply: null };
    }
    const fc = (pdu[0] ?? 0) & 0x7f;
    const reply = fault?.type === 'exception' ? exceptionPdu(fc, fault.code) : this.serve(dev, pdu);
    dev.counters.replies++;
    if ((reply[0] ?? 0) & 0x80) dev.counters.exceptions++;
    if (fault?.type === 'crc') {
      dev.counters.crc++;
      return { reply, fault: 'crc' };
    }
    if (fault?.type === 'late') {
      dev.counters.late++;
      return { reply, fault: 'late', delayMs: fault.delayMs };
    }
    return { reply };
  }

  private serve(dev: DeviceEntry, pdu: Buffer): Buffer {
    const fc = pdu[0] ?? 0;
    switch (fc) {
      case FC.readCoils:
      case FC.readDiscreteInputs:
      case FC.readHoldingRegisters:
      case FC.readInputRegisters: {
        const table: Table = fc === FC.readCoils ? 'coil' : fc === FC.readDiscreteInputs ? 'discrete' : fc === FC.readHoldingRegisters ? 'holding' : 'input';
        if (pdu.length !== 5) return exceptionPdu(fc, 3);
        const address = pdu.readUInt16BE(1);
        const quantity = pdu.readUInt16BE(3);
        if (quantity < 1 || quantity > MAX_READ_QUANTITY[table]) return exceptionPdu(fc, 3);
        if (address + quantity > 0x10000) return exceptionPdu(fc, 2);
        const values = this.read(dev, table, address, quantity);
        if (!values) return exceptionPdu(fc, 2);
        return readResponsePdu(fc, values, table === 'coil' || table === 'discrete');
      }
      case FC.writeSingleRegister: {
        if (pdu.length !== 5) return exceptionPdu(fc, 3);
        dev.written.set(pdu.readUInt16BE(1), pdu.readUInt16BE(3));
        dev.counters.writes++;
        return Buffer.from(pdu);
      }
      case FC.writeMultipleRegisters: {
        if (pdu.length < 6) return exceptionPdu(fc, 3);
        const address = pdu.readUInt16BE(1);
        const quantity = pdu.readUInt16BE(3);
        const byteCount = pdu[5]!;
        if (quantity < 1 || quantity > 123 || byteCount !== quantity * 2 || pdu.length !== 6 + byteCount) return exceptionPdu(fc, 3);
        if (address + quantity > 0x10000) return exceptionPdu(fc, 2);
        for (let i = 0; i < quantity; i++) dev.written.set(address + i, pdu.readUInt16BE(6 + i * 2));
        dev.counters.writes++;
        return Buffer.from(pdu.subarray(0, 5));
      }
      default:
        return exceptionPdu(fc, 1);
    }
  }

  /** The values of `quantity` registers (or bits) from `address`, or undefined when none of them is served. */
  private read(dev: DeviceEntry, table: Table, address: number, quantity: number): number[] | undefined {
    const values = new Array<number>(quantity).fill(0);
    let served = false;
    if (table === 'holding') {
      for (let i = 0; i < quantity; i++) {
        const w = dev.written.get(address + i);
        if (w !== undefined) {
          values[i] = w;
          served = true;
        }
      }
    }
    const end = address + quantity;
    const covered = new Set<number>();
    for (const entry of dev.byTable[table]) {
      const a = entry.def.address;
      if (a >= end || a + entry.width <= address) continue;
      served = true;
      const regs = this.registersOf({ entry, device: dev }, true);
      regs.forEach((r, k) => {
        const i = a + k - address;
        if (i < 0 || i >= quantity) return;
        // Bit points share their register: OR them; any other point replaces a written value.
        values[i] = covered.has(i) ? values[i]! | r : r;
        covered.add(i);
      });
    }
    return served ? values : undefined;
  }

  private point(pointId: string): { entry: PointEntry; device: DeviceEntry } {
    const hit = this.pointsById.get(pointId);
    if (!hit) throw new Error(`simulator: unknown point "${pointId}"`);
    return hit;
  }

  /** Registers of one point now. `serve` marks them as served (for freeze) and consumes a glitch. */
  private registersOf(hit: { entry: PointEntry; device: DeviceEntry }, serve: boolean): number[] {
    const { def } = hit.entry;
    const fault = this.sensorFaults.get(def.id);
    if (fault?.type === 'dead') return encodeRawUnsigned(def, def.faultValues[0] ?? 0x7fff);
    if (fault?.type === 'freeze' && fault.held) return [...fault.held];
    let value = this.valueOf(hit.entry);
    if (fault?.type === 'drift') value += (fault.rateCPerMin * (this.simTimeS() - (fault.sinceS ?? 0))) / 60;
    if (fault?.type === 'glitch') {
      value += fault.deltaC;
      if (serve) this.sensorFaults.delete(def.id);
    }
    const regs = encodeValue(def, value);
    if (serve || fault?.type === 'freeze') {
      this.lastServed.set(def.id, regs);
      if (fault?.type === 'freeze') fault.held = regs;
    }
    return regs;
  }

  private valueOf(entry: PointEntry): number {
    const override = this.overrides.get(entry.def.id);
    if (override !== undefined) return override;
    const role = entry.role;
    switch (role.kind) {
      case 'inlet':
        return this.room.inletC(role.sensor);
      case 'humidity':
        return this.room.humidity(role.sensor);
      case 'chiller-running':
        return this.room.chiller().running ? 1 : 0;
      case 'chiller-alarm':
        return this.room.chiller().alarmCode;
      case 'chiller-supply':
        return this.room.chiller().supplyC;
      case 'chiller-return':
        return this.room.chiller().returnC;
      case 'energy':
        return ENERGY_BASE_KWH + (this.room.params.itLoadKw * this.room.timeS) / 3600;
      case 'sensor-ok': {
        const deviceId = entry.def.deviceId;
        for (const [pid, f] of this.sensorFaults) if (f.type === 'dead' && pid.startsWith(`${deviceId}.`)) return 0;
        return 1;
      }
      case 'constant':
        return role.value;
    }
  }

  private apply(action: ScenarioAction): void {
    switch (action.kind) {
      case 'chiller':
        if (action.action === 'trip') this.room.applyEvent({ type: 'chiller-trip', ...(action.alarmCode !== undefined ? { alarmCode: action.alarmCode } : {}) });
        else if (action.action === 'partial') this.room.applyEvent({ type: 'chiller-partial', capacity: action.capacity, reportRunning: action.reportRunning });
        else this.room.applyEvent({ type: 'chiller-restore' });
        break;
      case 'device':
        this.setFault(action.device, action.fault);
        break;
      case 'sensor':
        this.setSensorFault(action.sensor, action.fault);
        break;
      case 'door': {
        const sensors = action.door.flatMap((name) => {
          const dev = this.devicesById.get(name);
          if (dev) return dev.byTable.input.concat(dev.byTable.holding).filter((e) => e.role.kind === 'inlet').map((e) => e.def.id);
          return [name];
        });
        this.room.applyEvent({ type: 'door', sensors, deltaC: action.deltaC, durationS: action.durationS });
        break;
      }
    }
  }

  /** Builds the unit and point maps; returns the inlet sensor ids for the room model. */
  private indexDevices(): string[] {
    const chillerRoles = new Map<string, Role>();
    for (const ch of this.config.chillers) {
      if (ch.running) chillerRoles.set(ch.running, { kind: 'chiller-running' });
      if (ch.alarm) chillerRoles.set(ch.alarm, { kind: 'chiller-alarm' });
      if (ch.supplyTemp) chillerRoles.set(ch.supplyTemp, { kind: 'chiller-supply' });
      if (ch.returnTemp) chillerRoles.set(ch.returnTemp, { kind: 'chiller-return' });
    }
    const sensorIds: string[] = [];
    for (const bus of this.config.buses) {
      if (bus.type === 'serial-stream') {
        this.warnings.push(`bus "${bus.id}": serial-stream buses are not simulated`);
        continue;
      }
      const transport: Transport = bus.type === 'serial' ? 'rtu' : 'tcp';
      for (const def of bus.devices) {
        const prev = this.units[transport].get(def.unitId);
        if (prev) {
          this.warnings.push(`device "${def.id}" (bus "${bus.id}"): unit ${def.unitId} is already served on ${transport} by "${prev.def.id}"; not served`);
          continue;
        }
        const temperature = def.points.find((p) => p.kind === 'temperature');
        const isChiller = def.points.some((p) => p.kind === 'running' || chillerRoles.has(p.id));
        const entry: DeviceEntry = {
          def,
          transport,
          byTable: { coil: [], discrete: [], holding: [], input: [] },
          written: new Map(),
          counters: newCounters(),
        };
        for (const p of def.points) {
          const role = chillerRoles.get(p.id) ?? roleOf(p, temperature?.id, isChiller);
          if (role.kind === 'inlet') sensorIds.push(p.id);
          const bits = p.table === 'coil' || p.table === 'discrete';
          const pe: PointEntry = { def: p, role, width: bits ? 1 : registerCount(p.type) };
          entry.byTable[p.table].push(pe);
          this.pointsById.set(p.id, { entry: pe, device: entry });
        }
        this.units[transport].set(def.unitId, entry);
        this.devicesById.set(def.id, entry);
      }
    }
    return sensorIds;
  }
}

function holdOf(regs: number[] | undefined): { held?: number[] } {
  return regs ? { held: [...regs] } : {};
}

/** What a point measures when no chiller entry names it, from its kind, name and unit. */
function roleOf(p: ModbusPointDef, temperatureId: string | undefined, onChiller: boolean): Role {
  switch (p.kind) {
    case 'temperature':
      return { kind: 'inlet', sensor: p.id };
    case 'humidity':
      return temperatureId ? { kind: 'humidity', sensor: temperatureId } : { kind: 'humidity' };
    case 'running':
      return { kind: 'chiller-running' };
    case 'alarm':
      return onChiller ? { kind: 'chiller-alarm' } : { kind: 'constant', value: 0 };
    case 'other':
      break;
  }
  if (onChiller && /supply/i.test(p.name)) return { kind: 'chiller-supply' };
  if (onChiller && /return/i.test(p.name)) return { kind: 'chiller-return' };
  if (/kwh/i.test(p.unit) || /energy/i.test(p.name)) return { kind: 'energy' };
  if ((p.type === 'bit' || p.type === 'bool') && /(^|_)ok$/i.test(p.name)) return { kind: 'sensor-ok' };
  // Anything else: a steady value 40 % into its valid range, else 0.
  if (p.validRange) return { kind: 'constant', value: p.validRange.min + 0.4 * (p.validRange.max - p.validRange.min) };
  return { kind: 'constant', value: 0 };
}
