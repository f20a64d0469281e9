/**
 * The simulated room: one lumped air node heated by the IT load and cooled by a chiller, on simulated
 * time in seconds. Pure (no I/O, no wall clock) and deterministic for a given seed, so the detector can
 * be run over it on virtual time.
 *
 *   C·dT/dt = P_it − Q_cool − leak·(T − T0)          T0 = setpoint
 *   Q_cool  = min(capacity·Q_max, max(0, P_it + K·(T − setpoint)))
 *
 * With K large the room sits at the setpoint while cooling works. When cooling is lost the room heats
 * fastest at first (P_it/C) and then slower, approaching T0 + ΔP/leak, as measured rooms do (Khankari,
 * ASHRAE Trans. 2011): the leak term stands for the heat soaking into the building and the equipment.
 *
 * Each inlet sensor reads T + a fixed offset + compressor cycling + door bumps + Gaussian noise. Noise is
 * drawn per sensor per simulated second from a counter-based PRNG, so a reading depends only on the
 * time and the sensor, never on how often or in which order sensors were read.
 */

/** Room and plant parameters. Every field can be overridden by a scenario's `room:` block. */
export interface RoomParams {
  /** Heat dissipated by the IT equipment, kW. Default 100. */
  itLoadKw: number;
  /** Air setpoint held by the cooling, °C; also the temperature the building soaks toward. Default 22. */
  setpointC: number;
  /** Thermal mass of the room air node, kJ/K. Default: P_it / (2 °C/min), a full trip starts at 2 °C/min. */
  thermalMassKjPerK: number;
  /** Heat flow into the building per kelvin above the setpoint, kW/K. Default 2.5. */
  leakKwPerK: number;
  /** Full cooling capacity, kW. Default 1.3 × itLoadKw. */
  coolingMaxKw: number;
  /** Gain of the cooling control, kW/K: large, so the room holds the setpoint. Default 50. */
  controlGainKwPerK: number;
  /** Amplitude of the supply-air oscillation caused by compressor cycling, °C. Default 0.5. */
  cyclingAmplitudeC: number;
  /** Period of the compressor cycling, s. Default 600. */
  cyclingPeriodS: number;
  /** Standard deviation of each reading's Gaussian noise, °C. Default 0.05. */
  noiseC: number;
  /** Fixed per-sensor offsets are drawn uniformly in ±sensorOffsetMaxC from the seed. Default 1.5. */
  sensorOffsetMaxC: number;
  /** Explicit offsets by sensor id, °C; replace the drawn ones. Default none. */
  sensorOffsetsC: Record<string, number>;
  /** Relative humidity at the setpoint, %; the absolute humidity stays constant. Default 45. */
  humidityAtSetpointPct: number;
  /** Chilled-water supply temperature in normal operation, °C. Default 7. */
  supplyNormalC: number;
  /** Supply temperature the stopped chiller's water drifts toward, °C. Default 18. */
  supplyTrippedC: number;
  /** Initial rate of that drift after a trip, °C/min. Default 0.5. */
  supplyDriftCPerMin: number;
  /** Supply rise at full loss of capacity during a silent partial loss, scaled by the loss, °C. Default 10 (0.7 → +3 °C). */
  supplyPartialRiseC: number;
  /** Return minus supply at full load, °C (return = supply + this × Q_cool/P_it). Default 5. */
  returnDeltaC: number;
  /** Alarm code the chiller reports after a trip. Default 17. */
  tripAlarmCode: number;
  /** Time constant of a door bump's rise and decay, s. Default 30. */
  doorTimeConstantS: number;
}

/** Overrides accepted by `resolveRoomParams`: any field, or `initialRiseCPerMin` instead of the thermal mass. */
export type RoomParamsInput = Partial<RoomParams> & {
  /** Initial heating rate after a full trip, °C/min; sets thermalMassKjPerK = itLoadKw / (rate / 60). */
  initialRiseCPerMin?: number;
};

const DEFAULT_INITIAL_RISE_C_PER_MIN = 2;

export function resolveRoomParams(input: RoomParamsInput = {}): RoomParams {
  const { initialRiseCPerMin, ...rest } = input;
  const itLoadKw = rest.itLoadKw ?? 100;
  const rise = initialRiseCPerMin ?? DEFAULT_INITIAL_RISE_C_PER_MIN;
  return {
    itLoadKw,
    setpointC: rest.setpointC ?? 22,
    thermalMassKjPerK: rest.thermalMassKjPerK ?? itLoadKw / (rise / 60),
    leakKwPerK: rest.leakKwPerK ?? 2.5,
    coolingMaxKw: rest.coolingMaxKw ?? 1.3 * itLoadKw,
    controlGainKwPerK: rest.controlGainKwPerK ?? 50,
    cyclingAmplitudeC: rest.cyclingAmplitudeC ?? 0.5,
    cyclingPeriodS: rest.cyclingPeriodS ?? 600,
    noiseC: rest.noiseC ?? 0.05,
    sensorOffsetMaxC: rest.sensorOffsetMaxC ?? 1.5,
    sensorOffsetsC: { ...(rest.sensorOffsetsC ?? {}) },
    humidityAtSetpointPct: rest.humidityAtSetpointPct ?? 45,
    supplyNormalC: rest.supplyNormalC ?? 7,
    supplyTrippedC: rest.supplyTrippedC ?? 18,
    supplyDriftCPerMin: rest.supplyDriftCPerMin ?? 0.5,
    supplyPartialRiseC: rest.supplyPartialRiseC ?? 10,
    returnDeltaC: rest.returnDeltaC ?? 5,
    tripAlarmCode: rest.tripAlarmCode ?? 17,
    doorTimeConstantS: rest.doorTimeConstantS ?? 30,
  };
}

export interface ChillerState {
  /** What the chiller reports: false after a trip; a silent partial loss may still report true. */
  running: boolean;
  /** 0 = no alarm. */
  alarmCode: number;
  /** Chilled-water supply temperature, °C. */
  supplyC: number;
  /** Chilled-water return temperature, °C. */
  returnC: number;
  /** Working fraction of the cooling capacity (not reported by a real chiller; for tests and traces). */
  capacityFraction: number;
}

/** Things that happen to the room. Sensor ids are those given to the model's constructor. */
export type RoomEvent =
  | { type: 'chiller-trip'; alarmCode?: number }
  /** Capacity drops to `capacity` (0–1); `reportRunning` keeps the status saying running (a silent loss). */
  | { type: 'chiller-partial'; capacity: number; reportRunning: boolean }
  | { type: 'chiller-restore' }
  /** A door opened near these sensors: they read up to `deltaC` warmer for `durationS`. */
  | { type: 'door'; sensors: readonly string[]; deltaC: number; durationS: number };

interface Door {
  sensors: Set<number>;
  deltaC: number;
  untilS: number;
}

/** Integration step, s. K/C·dt stays far below 1 for any sensible room, so Euler is stable. */
const STEP_S = 1;

export class RoomModel {
  readonly params: RoomParams;
  private readonly sensorIndex = new Map<string, number>();
  private readonly sensorHash: number[] = [];
  private readonly offsets: number[] = [];
  private readonly cyclingPhase: number;
  private readonly seed: number;

  /** Simulated time of the state below, s, always a whole number of steps. */
  private t = 0;
  private roomT: number;
  private supplyC: number;
  private capacity = 1;
  /** Cycling amplitude follows the working capacity with a lag, so a trip does not make it jump. */
  private cyclingScale = 1;
  private running = true;
  private alarmCode = 0;
  private doors: Door[] = [];
  private doorBumpC: number[];
  private lastCoolingKw: number;

  /**
   * @param params overrides of the defaults (see RoomParams)
   * @param sensorIds ids of the inlet sensors (the rack uses temperature point ids)
   * @param seed seeds the offsets, the cycling phase and the noise
   */
  constructor(params: RoomParamsInput, sensorIds: readonly string[], seed: number) {
    this.params = resolveRoomParams(params);
    this.seed = seed >>> 0;
    const offsetRng = mulberry32(hashMix(this.seed, 0x0ff5e7));
    this.cyclingPhase = offsetRng() * 2 * Math.PI;
    sensorIds.forEach((id, i) => {
      this.sensorIndex.set(id, i);
      const h = hashString(id);
      this.sensorHash.push(h);
      const drawn = (mulberry32(hashMix(this.seed, h))() * 2 - 1) * this.params.sensorOffsetMaxC;
      this.offsets.push(this.params.sensorOffsetsC[id] ?? drawn);
    });
    this.doorBumpC = sensorIds.map(() => 0);
    this.roomT = this.params.setpointC;
    this.supplyC = this.params.supplyNormalC;
    this.lastCoolingKw = this.params.itLoadKw;
  }

  /** Simulated time the model has been advanced to, s. */
  get timeS(): number {
    return this.t;
  }

  sensorIds(): string[] {
    return [...this.sensorIndex.keys()];
  }

  /**
   * Integrates up to `simS` in fixed 1 s steps (the state stays on the whole-second grid, so results do
   * not depend on how often this is called). Earlier times are ignored: simulated time only moves on.
   */
  advanceTo(simS: number): void {
    while (this.t + STEP_S <= simS) this.step();
  }

  /** The lumped room-air temperature, °C. */
  roomC(): number {
    return this.roomT;
  }

  /** Heat removed by the cooling at the current state, kW. */
  coolingKw(): number {
    return this.lastCoolingKw;
  }

  /** Fixed calibration offset of a sensor, °C. */
  sensorOffsetC(sensorId: string): number {
    return this.offsets[this.index(sensorId)]!;
  }

  /** What an inlet sensor reads now, °C (unquantised; the register encoding rounds it to 0.1 °C). */
  inletC(sensorId: string): number {
    const i = this.index(sensorId);
    return this.roomT + this.offsets[i]! + this.cyclingC() + this.doorBumpC[i]! + this.noise(i);
  }

  /**
   * Relative humidity at a sensor, %: constant absolute humidity (humidityAtSetpointPct at the setpoint),
   * so lower where the air is warmer. Without a sensor id, at the room temperature.
   */
  humidity(sensorId?: string): number {
    const t = sensorId === undefined ? this.roomT : this.inletC(sensorId);
    const rh = (this.params.humidityAtSetpointPct * saturationVapourPressureHpa(this.params.setpointC)) / saturationVapourPressureHpa(t);
    return Math.min(100, Math.max(0, rh));
  }

  chiller(): ChillerState {
    const p = this.params;
    return {
      running: this.running,
      alarmCode: this.alarmCode,
      supplyC: this.supplyC,
      returnC: this.supplyC + (p.returnDeltaC * this.lastCoolingKw) / p.itLoadKw,
      capacityFraction: this.capacity,
    };
  }

  /** Applies an event at the model's current time (call advanceTo(eventTime) first). */
  applyEvent(e: RoomEvent): void {
    switch (e.type) {
      case 'chiller-trip':
        this.capacity = 0;
        this.running = false;
        this.alarmCode = e.alarmCode ?? this.params.tripAlarmCode;
        break;
      case 'chiller-partial':
        this.capacity = Math.min(1, Math.max(0, e.capacity));
        this.running = e.reportRunning;
        this.alarmCode = 0;
        break;
      case 'chiller-restore':
        this.capacity = 1;
        this.running = true;
        this.alarmCode = 0;
        break;
      case 'door':
        this.doors.push({ sensors: new Set(e.sensors.map((s) => this.index(s))), deltaC: e.deltaC, untilS: this.t + e.durationS });
        break;
    }
    // A trip removes the cooling at once, not at the next step (the return temperature shows it).
    this.lastCoolingKw = this.coolingAt(this.roomT);
  }

  private index(sensorId: string): number {
    const i = this.sensorIndex.get(sensorId);
    if (i === undefined) throw new Error(`room model: unknown sensor "${sensorId}"`);
    return i;
  }

  private coolingAt(roomT: number): number {
    const p = this.params;
    return Math.min(this.capacity * p.coolingMaxKw, Math.max(0, p.itLoadKw + p.controlGainKwPerK * (roomT - p.setpointC)));
  }

  private cyclingC(): number {
    const p = this.params;
    if (p.cyclingAmplitudeC === 0) return 0;
    return p.cyclingAmplitudeC * this.cyclingScale * Math.sin((2 * Math.PI * this.t) / p.cyclingPeriodS + this.cyclingPhase);
  }

  private noise(i: number): number {
    if (this.params.noiseC === 0) return 0;
    const rng = mulberry32(hashMix(hashMix(this.seed, this.sensorHash[i]!), this.t | 0));
    return this.params.noiseC * gaussian(rng);
  }

  private step(): void {
    const p = this.params;
    const dt = STEP_S;
    const q = this.coolingAt(this.roomT);
    const dT = (p.itLoadKw - q - p.leakKwPerK * (this.roomT - p.setpointC)) / p.thermalMassKjPerK;

    // Chilled water: first-order drift toward a target, with the configured initial rate after a trip.
    const target = this.running || this.capacity > 0 ? p.supplyNormalC + p.supplyPartialRiseC * (1 - this.capacity) : p.supplyTrippedC;
    const tauSupply = Math.max(1, (p.supplyTrippedC - p.supplyNormalC) / (p.supplyDriftCPerMin / 60));
    this.supplyC += (target - this.supplyC) * (1 - Math.exp(-dt / tauSupply));

    this.cyclingScale += (this.capacity - this.cyclingScale) * (1 - Math.exp(-dt / 60));

    const doorK = 1 - Math.exp(-dt / p.doorTimeConstantS);
    for (let i = 0; i < this.doorBumpC.length; i++) {
      let want = 0;
      for (const d of this.doors) if (this.t < d.untilS && d.sensors.has(i)) want += d.deltaC;
      this.doorBumpC[i]! += (want - this.doorBumpC[i]!) * doorK;
    }
    this.doors = this.doors.filter((d) => this.t + dt < d.untilS);

    this.roomT += dT * dt;
    this.t += dt;
    this.lastCoolingKw = this.coolingAt(this.roomT);
  }
}

/** Saturation vapour pressure over water, hPa (Magnus formula, WMO constants). */
function saturationVapourPressureHpa(tC: number): number {
  return 6.112 * Math.exp((17.62 * tC) / (243.12 + tC));
}

/** mulberry32: a small, fast 32-bit PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A standard normal draw (Box-Muller) from a uniform source. */
export function gaussian(rng: () => number): number {
  const u1 = 1 - rng(); // (0, 1]: log(0) is never taken
  const u2 = rng();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/** Mixes two 32-bit values into one (murmur3 finaliser). */
function hashMix(a: number, b: number): number {
  let h = (a ^ Math.imul(b >>> 0, 0x9e3779b1)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a over the UTF-16 code units of `s`. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
