/**
 * The MQTT connection's building blocks: client options (credentials, TLS, last will, persistent
 * session), the reconnect schedule, the broker's Receive Maximum, and our own publish deadline.
 * The sink (./mqtt.ts) wires them to a client; each is usable and testable alone.
 */
import { readFileSync } from 'node:fs';
import type { IClientOptions } from 'mqtt';
import type { Clock } from '../clock.js';
import type { MqttConfig } from '../config/outputs-schema.js';
import { RackguardError, asError } from '../errors.js';
import { readCredential, type OutputContext } from './context.js';
import { willStatus } from './mqtt-layout.js';

/** MQTT 5 session expiry for clean: false (MQTT 5 ends the session at disconnect unless this is set), s. */
const SESSION_EXPIRY_S = 7 * 24 * 3600;

/**
 * Options every rackguard MQTT client carries. `writeCache: false`: by default mqtt.js has
 * mqtt-packet pre-build a 2-byte Buffer for each of the 65,536 message ids at the first packet, about
 * 6 MB of heap (65,536 Buffer objects, seen in a heap snapshot of the agent) kept for the life of
 * the process, to save a 2-byte allocation per publish. The cache is global to mqtt-packet: one
 * client on the defaults that sends before ours would build it, so every client here carries this
 * (test/integration/mqtt-lean.test.ts).
 */
export const LEAN_MQTT_OPTIONS = { writeCache: false } as const satisfies IClientOptions;

/**
 * mqtt.js options for one connection attempt. Credentials and PEM files are read here, once per
 * start(), from files or the environment (never argv); a missing file is an E_SECRET_READ naming it.
 */
export function clientOptions(config: MqttConfig, context: OutputContext, statusTopic: string, env: NodeJS.ProcessEnv): IClientOptions {
  const username = readCredential(config.usernameFile, 'RACKGUARD_MQTT_USERNAME', env);
  const password = readCredential(config.passwordFile, 'RACKGUARD_MQTT_PASSWORD', env);
  const readPem = (file: string | undefined): Buffer | undefined => {
    if (file === undefined) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new RackguardError('E_SECRET_READ', `cannot read TLS file ${file}: ${asError(err).message}`, { cause: err });
    }
  };
  const ca = readPem(config.ca);
  const cert = readPem(config.cert);
  const key = readPem(config.key);
  return {
    ...LEAN_MQTT_OPTIONS,
    clientId: config.clientId ?? `rackguard-${context.site}-${context.gateway}`,
    protocolVersion: config.protocolVersion,
    clean: false,
    keepalive: config.keepaliveS,
    // We reconnect ourselves, with backoff and a fresh client each time: mqtt.js retries at a fixed
    // period and would resend from its own in-memory queue, which the outbox already is.
    reconnectPeriod: 0,
    connectTimeout: config.publishTimeoutMs,
    // Offline QoS 0 publishes would pile up in RAM; the outbox is our queue.
    queueQoSZero: false,
    resubscribe: false,
    will: { topic: statusTopic, payload: Buffer.from(willStatus()), qos: 1, retain: true },
    ...(config.protocolVersion === 5 ? { properties: { sessionExpiryInterval: SESSION_EXPIRY_S } } : {}),
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
  };
}

/**
 * Exponential reconnect backoff with jitter that never exceeds the cap: the delay is drawn from
 * [0.8, 1] × the current step, and the step doubles up to `maxMs`. (Jitter added on top of the cap
 * would let a 5 s cap become 6 s; an alarm system's backlog waits on this number.)
 */
export class ReconnectBackoff {
  private stepMs: number;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.stepMs = Math.min(initialMs, maxMs);
  }

  /** The delay before the next attempt, ms; advances the schedule. */
  next(): number {
    const r = Math.min(1, Math.max(0, this.random()));
    const delay = Math.round(this.stepMs * (1 - 0.2 * r));
    this.stepMs = Math.min(this.stepMs * 2, this.maxMs);
    return Math.min(delay, this.maxMs);
  }

  /** A working connection: start from the initial delay again. */
  reset(): void {
    this.stepMs = Math.min(this.initialMs, this.maxMs);
  }
}

/**
 * At most `capacity` QoS 1 publishes awaiting PUBACK on one connection: the broker's MQTT 5 Receive
 * Maximum from CONNACK (MQTT 5.0 §3.2.2.3.3; 65,535 when absent, and always under MQTT 3.1.1). A
 * client that sends more is disconnected (reason 0x93); mqtt.js 5.16 enforces only its own value.
 * One gate per connection: close() fails whoever still waits, so nothing hangs on a dead link.
 */
export class InflightGate {
  private inUse = 0;
  private readonly waiting: Array<{ go: () => void; fail: (err: Error) => void }> = [];
  private closedWith: Error | undefined;

  constructor(readonly capacity: number) {}

  get active(): number {
    return this.inUse;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Runs `fn` once a slot is free; the slot is held until its promise settles. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closedWith) throw this.closedWith;
    if (this.inUse >= this.capacity) {
      await new Promise<void>((go, fail) => this.waiting.push({ go, fail }));
    }
    this.inUse++;
    try {
      return await fn();
    } finally {
      this.inUse--;
      this.waiting.shift()?.go();
    }
  }

  close(err: Error): void {
    this.closedWith = err;
    for (const w of this.waiting.splice(0)) w.fail(err);
  }
}

/** `p`, or an E_MQTT_TIMEOUT after `ms` on `clock` (publishAsync may never settle when the link drops). */
export function withTimeout<T>(p: Promise<T>, ms: number, clock: Clock, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = clock.setTimeout(() => reject(new RackguardError('E_MQTT_TIMEOUT', `${what}: no acknowledgement within ${ms} ms`, { retryable: true })), ms);
    p.then(
      (v) => {
        clock.clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clock.clearTimeout(t);
        reject(e);
      },
    );
  });
}

/** A broker URL without any user:password@ part, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return '(unparsable url)';
  }
}
