/**
 * The Prometheus metrics of /metrics (prom-client). Everything but the latency histogram is read from
 * the agent's view at scrape time, so a scrape shows the same figures as /api/state and the health
 * log, and nothing is counted twice. Each server has its own Registry: two agents in one process (the
 * tests) do not share series.
 *
 * Units follow Prometheus conventions (seconds, celsius, `_total` on counters): see
 * https://prometheus.io/docs/practices/naming/.
 */
import type { ZoneStatus } from '../detection/types.js';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { LEVELS, levelRank } from '../detection/types.js';
import type { AgentView } from './state.js';

/** Modbus RTU at 9600 baud takes ~10–40 ms per read; a gateway or a long cable, up to the timeout. */
const LATENCY_BUCKETS_S = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5];

const DEVICE_COUNTERS = [
  ['requests', 'requests_total', 'Modbus read requests sent to the device.'],
  ['responses', 'responses_total', 'Valid replies received from the device.'],
  ['timeouts', 'timeouts_total', 'Requests the device did not answer in time.'],
  ['crcErrors', 'crc_errors_total', 'Replies with a bad CRC.'],
  ['exceptions', 'exceptions_total', 'Replies carrying a Modbus exception.'],
  ['badFrames', 'bad_frames_total', 'Replies that were malformed or could not be trusted (other than CRC).'],
  ['portErrors', 'port_errors_total', 'Requests that failed because the port was closed.'],
] as const;

const DEVICE_STATES = ['unknown', 'online', 'exceptions', 'failing', 'offline'] as const;
const OUTBOX_STATES = ['open', 'unwritable', 'unavailable', 'stopped'] as const;

export interface Metrics {
  readonly registry: Registry;
  /** Text format for a scrape. */
  render(): Promise<string>;
  readonly contentType: string;
  /** Per-request latency, fed by the agent's `response` events. */
  observeLatency(deviceId: string, busId: string, latencyMs: number): void;
  /** One action record (started, succeeded, failed, timeout, inhibited, dry-run, …), from the agent's `action` events. */
  countAction(action: string, status: string): void;
}

/** Sets a gauge or counter value from scratch at each scrape (series of vanished labels disappear). */
function fresh<T extends string>(m: Gauge<T> | Counter<T>): void {
  m.reset();
}

export function createMetrics(view: AgentView, opts: { version: string; sseClients: () => number }): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Gauges that prom-client names `_total` (promtool: "non-counter metrics should not have _total
  // suffix"), built on Node's undocumented process._getActiveHandles(): not worth a lint failure.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  const reg = [registry];

  new Gauge({ name: 'rackguard_build_info', help: 'Always 1; the labels tell the version, site and gateway.', labelNames: ['version', 'site', 'gateway'], registers: reg }).set(
    { version: opts.version, site: view.site, gateway: view.gateway },
    1,
  );

  new Gauge({
    name: 'rackguard_ready',
    help: '1 when acquisition is started and the outbox is open (as /readyz), else 0.',
    registers: reg,
    collect() {
      this.set(view.readiness().ready ? 1 : 0);
    },
  });

  // --- devices -------------------------------------------------------------------------------------
  for (const [field, suffix, help] of DEVICE_COUNTERS) {
    new Counter({
      name: `rackguard_device_${suffix}`,
      help,
      labelNames: ['device', 'bus'],
      registers: reg,
      collect() {
        fresh(this);
        for (const h of view.health()) this.inc({ device: h.deviceId, bus: h.busId }, h.counters[field]);
      },
    });
  }
  new Gauge({
    name: 'rackguard_device_state',
    help: 'The device state: 1 for the current one of unknown, online, exceptions, failing, offline.',
    labelNames: ['device', 'bus', 'state'],
    registers: reg,
    collect() {
      fresh(this);
      for (const h of view.health()) for (const s of DEVICE_STATES) this.set({ device: h.deviceId, bus: h.busId, state: s }, h.state === s ? 1 : 0);
    },
  });
  const latency = new Histogram({
    name: 'rackguard_device_latency_seconds',
    help: 'Latency of successful Modbus exchanges, as the line measured it (without queueing).',
    labelNames: ['device', 'bus'],
    buckets: LATENCY_BUCKETS_S,
    registers: reg,
  });

  // --- zones and sensors ---------------------------------------------------------------------------
  new Gauge({
    name: 'rackguard_zone_level',
    help: 'Zone level: 0 normal, 1 warning, 2 alarm, 3 critical.',
    labelNames: ['zone'],
    registers: reg,
    collect() {
      fresh(this);
      for (const z of view.zones()) this.set({ zone: z.zone }, levelRank(z.level));
    },
  });
  new Gauge({
    name: 'rackguard_zone_state',
    help: 'Zone level as a state set: 1 for the current level.',
    labelNames: ['zone', 'level'],
    registers: reg,
    collect() {
      fresh(this);
      for (const z of view.zones()) for (const l of LEVELS) this.set({ zone: z.zone, level: l }, z.level === l ? 1 : 0);
    },
  });
  new Gauge({
    name: 'rackguard_zone_blind',
    help: '1 when fewer than k sensors of the zone give good readings.',
    labelNames: ['zone'],
    registers: reg,
    collect() {
      fresh(this);
      for (const z of view.zones()) this.set({ zone: z.zone }, z.blind ? 1 : 0);
    },
  });
  new Gauge({
    name: 'rackguard_zone_eta_critical_seconds',
    help: 'Predicted seconds until the zone reaches criticalTempC (k-th smallest sensor ETA); absent when not rising.',
    labelNames: ['zone'],
    registers: reg,
    collect() {
      fresh(this);
      for (const z of view.zones()) if (z.evidence.etaCriticalS !== null) this.set({ zone: z.zone }, z.evidence.etaCriticalS);
    },
  });
  /**
   * Gauges over what the detector sees in its zones (sensors, chillers), one series per item: a
   * sensor in two zones, or a chiller serving several, is one series, its figures being the same.
   */
  const itemGauge = <T>(label: string, items: (z: ZoneStatus) => readonly T[], id: (t: T) => string) => {
    const unique = (): T[] => {
      const out = new Map<string, T>();
      for (const z of view.zones()) for (const t of items(z)) if (!out.has(id(t))) out.set(id(t), t);
      return [...out.values()];
    };
    return (name: string, help: string, pick: (t: T) => number | null): void => {
      new Gauge({
        name,
        help,
        labelNames: [label],
        registers: reg,
        collect() {
          fresh(this);
          for (const t of unique()) {
            const v = pick(t);
            if (v !== null) this.set({ [label]: id(t) }, v);
          }
        },
      });
    };
  };
  const sensorGauge = itemGauge('point', (z) => z.evidence.sensors, (s) => s.pointId);
  sensorGauge('rackguard_sensor_temperature_celsius', 'Latest good temperature of a zone sensor; absent when it has none that is fresh.', (s) => s.tempC);
  sensorGauge('rackguard_sensor_rate_short_celsius_per_minute', 'Short-window temperature slope of a zone sensor; absent until the window is covered.', (s) => s.rateShortCPerMin);
  sensorGauge('rackguard_sensor_rate_long_celsius_per_minute', 'Long-window temperature slope of a zone sensor; absent until the window is covered.', (s) => s.rateLongCPerMin);
  sensorGauge('rackguard_sensor_eta_critical_seconds', 'Predicted seconds until the sensor reaches criticalTempC; absent when not rising.', (s) => s.etaCriticalS);
  sensorGauge('rackguard_sensor_good', '1 when the zone sensor counts (a fresh good reading), else 0.', (s) => (s.status === 'good' ? 1 : 0));

  // --- chillers (as the detector sees them) ---------------------------------------------------------
  const chillerGauge = itemGauge('chiller', (z) => z.evidence.chillers, (c) => c.chillerId);
  chillerGauge('rackguard_chiller_running', '1 when the chiller reports running, 0 when stopped; absent while unknown.', (c) => (c.running === null ? null : c.running ? 1 : 0));
  chillerGauge('rackguard_chiller_alarm_code', 'The alarm code the chiller reports (0: none); absent while unknown.', (c) => c.alarmCode);
  chillerGauge('rackguard_chiller_supply_temperature_celsius', 'Supply water/air temperature of the chiller; absent while unknown.', (c) => c.supplyTempC);
  chillerGauge('rackguard_chiller_corroborates', '1 when the chiller corroborates a cooling failure for the detector.', (c) => (c.corroborates ? 1 : 0));

  // --- outputs -------------------------------------------------------------------------------------
  new Gauge({
    name: 'rackguard_sink_depth_records',
    help: 'Outbox records the sink has not acknowledged yet.',
    labelNames: ['sink'],
    registers: reg,
    collect() {
      fresh(this);
      for (const [sink, st] of Object.entries(view.outputsStats().sinks)) this.set({ sink }, st.depth);
    },
  });
  new Gauge({
    name: 'rackguard_sink_lag_seconds',
    help: 'Age of the oldest outbox record the sink has not acknowledged; 0 when caught up.',
    labelNames: ['sink'],
    registers: reg,
    collect() {
      fresh(this);
      for (const [sink, st] of Object.entries(view.outputsStats().sinks)) this.set({ sink }, st.lagMs / 1000);
    },
  });
  type OutboxFigures = NonNullable<ReturnType<AgentView['outputsStats']>['outbox']>;
  /** A figure of the outbox's stats, read at scrape time; absent while there is no outbox. */
  const outboxMetric = (Kind: typeof Gauge | typeof Counter) => (name: string, help: string, pick: (s: OutboxFigures) => number): void => {
    new Kind({
      name,
      help,
      registers: reg,
      collect(this: Gauge | Counter) {
        fresh(this);
        const st = view.outputsStats().outbox;
        if (!st) return;
        if (this instanceof Gauge) this.set(pick(st));
        else this.inc(pick(st));
      },
    });
  };
  const outboxGauge = outboxMetric(Gauge);
  outboxGauge('rackguard_outbox_rows', 'Rows in the outbox file.', (s) => s.rows);
  outboxGauge('rackguard_outbox_bytes', 'Accounted bytes in the outbox file.', (s) => s.bytes);
  outboxGauge('rackguard_outbox_max_bytes', 'The outbox byte cap (outputs.outbox.maxBytes).', (s) => s.maxBytes);
  outboxGauge('rackguard_outbox_pending_records', 'Records appended and not yet committed.', (s) => s.pending);
  const outboxCounter = outboxMetric(Counter);
  outboxCounter('rackguard_outbox_commits_total', 'Outbox transactions committed since the outbox started.', (s) => s.commits);
  outboxCounter('rackguard_outbox_dropped_telemetry_total', 'Telemetry samples not stored (byte cap, disk reserve, unwritable outbox).', (s) => s.droppedTelemetry);
  outboxCounter('rackguard_outbox_dropped_events_total', 'Events lost because the memory queue overflowed while the outbox was unwritable.', (s) => s.droppedEvents);
  new Gauge({
    name: 'rackguard_outbox_state',
    help: 'The outbox state: 1 for the current one of open, unwritable, unavailable, stopped.',
    labelNames: ['state'],
    registers: reg,
    collect() {
      fresh(this);
      const st = view.outputsStats().outbox;
      if (st) for (const s of OUTBOX_STATES) this.set({ state: s }, st.state === s ? 1 : 0);
    },
  });

  new Gauge({ name: 'rackguard_http_sse_clients', help: 'Clients connected to /api/events/stream.', registers: reg, collect() { this.set(opts.sseClients()); } });

  const actions = new Counter({
    name: 'rackguard_action_records_total',
    help: 'Action records by action name and status (started, succeeded, failed, timeout, inhibited, dry-run, …) since the agent started.',
    labelNames: ['action', 'status'],
    registers: reg,
  });

  return {
    registry,
    contentType: registry.contentType,
    render: () => registry.metrics(),
    observeLatency(deviceId, busId, latencyMs) {
      if (Number.isFinite(latencyMs)) latency.observe({ device: deviceId, bus: busId }, latencyMs / 1000);
    },
    countAction(action, status) {
      actions.inc({ action, status });
    },
  };
}
