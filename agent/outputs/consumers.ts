/**
 * The outbox's consumers, keyed by their config section: each factory builds its part when its
 * section is configured, and the part registers its own cursor on the outbox when it starts. A new
 * consumer (the actions next) is one more entry here; app.ts does not change.
 *
 * Modules load lazily: the MQTT and InfluxDB clients are tens of MB of RSS that a gateway without
 * them does not need.
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { Component } from '../component.js';
import type { Config } from '../config/model.js';
import type { OutputContext } from './context.js';
import type { Outbox } from './outbox.js';
import type { ClockSync } from '../service/clock-watch.js';

/** A part that reads the outbox through its own cursor. */
export interface OutboxConsumer extends Component {
  /** For the health log: at least the depth (records behind) and lag (age of the oldest unacknowledged). */
  stats(): { depth: number; lagMs: number } & Record<string, unknown>;
}

export interface ConsumerDeps {
  outbox: Outbox;
  context: OutputContext;
  /** The outputs logger; a factory adds its own bindings. */
  logger: Logger;
  clock: Clock;
  /** Whether the wall clock is synchronised (the InfluxDB sink holds unsynchronised records). */
  clockSync?: ClockSync;
}

export interface ConsumerFactory {
  /** The config section that turns it on (for logs). */
  section: string;
  /** The part, or undefined when its section is absent. Constructing it must have no side effect. */
  create(config: Config, deps: ConsumerDeps): Promise<OutboxConsumer | undefined>;
}

/** Wraps a sink (which keeps its cursor name private) as a named Component. */
/**
 * What one waiting step of a sink's stop may take (a drain, the offline status, the disconnect): a
 * fifth of the agent's stop deadline, at most 2 s. The sinks stop one after the other within that one
 * deadline, and the MQTT sink has three such steps: with a fixed 2 s each, a short stopTimeoutS was
 * spent waiting on a broker that never acknowledges, and `offline` was never said.
 */
function stopStepMs(config: Config): number {
  return Math.min(2000, Math.floor((config.stopTimeoutS * 1000) / 5));
}

function named(name: string, sink: { start(): Promise<void>; stop(): Promise<void>; stats(): { depth: number; lagMs: number } }): OutboxConsumer {
  return {
    name,
    start: () => sink.start(),
    stop: () => sink.stop(),
    stats: () => ({ ...sink.stats() }),
  };
}

export const consumerFactories: readonly ConsumerFactory[] = [
  {
    section: 'outputs.mqtt',
    async create(config, deps) {
      const mqttConfig = config.outputs?.mqtt;
      if (!mqttConfig) return undefined;
      const { MqttSink } = await import('./mqtt.js');
      return named('sink:mqtt', new MqttSink(mqttConfig, { outbox: deps.outbox, context: deps.context, logger: deps.logger.child({ sink: 'mqtt' }), clock: deps.clock, stopDrainMs: stopStepMs(config) }));
    },
  },
  {
    section: 'outputs.influx',
    async create(config, deps) {
      const influxConfig = config.outputs?.influx;
      if (!influxConfig) return undefined;
      const { InfluxSink } = await import('./influx.js');
      return named('sink:influx', new InfluxSink(influxConfig, { outbox: deps.outbox, context: deps.context, logger: deps.logger.child({ sink: 'influx' }), clock: deps.clock, drainMs: stopStepMs(config), clockSync: deps.clockSync, unsyncedHoldMs: (config.clock?.unsyncedHoldS ?? 600) * 1000 }));
    },
  },
];
