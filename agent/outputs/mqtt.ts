/**
 * MQTT sink: drains the outbox through its own cursor to a broker with npm mqtt 5.x.
 *
 * Topics under `baseTopic` (default `rackguard/<site>/<gateway>`):
 *   status                         retained `online` / `offline`; `offline` is also the last will (QoS 1, retained)
 *   sensors/<point id>             JSON { value, unit, quality, ts (ISO), tsMs, reason? }
 *   devices/<device>/availability  retained `online` / `offline`
 *   zones/<zone>/state             retained JSON { level, from, reason, ts, tsMs, evidence }
 *   zones/<zone>/blind             retained JSON { blind, reason, ts, tsMs, evidence }
 *   events                         JSON of every detector, device, action and outputs event
 * Optional Home Assistant discovery configs (retained) under `<discoveryPrefix>/sensor/...`.
 *
 * Delivery: QoS 1 by default, at most maxInFlight publishes awaiting PUBACK, our own deadline on each
 * (publishAsync may never settle when the link drops), and the cursor advances only over the contiguous
 * acknowledged prefix, so nothing is skipped and a reconnect resends from the first unacknowledged
 * record, in order (a subscriber may see a record twice: at-least-once). mqtt.js reconnects at a fixed
 * period and keeps its own in-memory resend queue, so we reconnect ourselves with exponential backoff,
 * each time with a fresh client (same clientId, clean: false: the broker keeps our session).
 *
 * A publish the broker refuses (MQTT 5 PUBACK reason code ≥ 0x80, e.g. 0x87 not authorized, 0x97
 * quota / payload too large) is retried a bounded number of times, then skipped with an
 * `mqtt_publish_rejected` event naming the topic. MQTT 3.1.1 has no such reason codes: a broker drops a
 * refused publish silently there, so use protocolVersion 5 to hear about it. Some refusals close the
 * connection instead (mosquitto 2.0.11 does for a payload above message_size_limit). After a working
 * connection died with publishes in flight, the records that were in flight are sent one at a time
 * ("probe mode"), so the one that kills the connection is identified, and it is skipped with the same
 * event after MAX_CONNECTION_STRIKES. A connection counts as working once our retained `online` status
 * was acknowledged on it, so a broker that is merely flapping does not get records skipped.
 */
import { readFileSync } from 'node:fs';
import mqtt, { ErrorWithReasonCode, type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { systemClock, type Clock, type TimerHandle } from '../clock.js';
import { RackguardError, asError } from '../errors.js';
import type { MqttConfig } from '../config/outputs-schema.js';
import { readCredential, type OutputContext } from './context.js';
import type { Outbox, OutboxRecord, OutputNotice, SinkStart } from './outbox.js';

export interface MqttSinkDeps {
  outbox: Outbox;
  context: OutputContext;
  logger: Logger;
  clock?: Clock;
  /** Cursor name in the outbox. Default 'mqtt'. */
  sinkName?: string;
  /** Where a sink new to this outbox starts. Default 'end'. */
  startAt?: SinkStart;
  env?: NodeJS.ProcessEnv;
  /** Replaces mqtt.connect (tests inject faults the real broker cannot produce). */
  connect?: (url: string, opts: IClientOptions) => MqttClient;
}

export interface MqttSinkStats {
  connected: boolean;
  depth: number;
  lagMs: number;
  inFlight: number;
  published: number;
  skipped: number;
  reconnects: number;
  lastError?: string;
}

export interface MqttMessage {
  topic: string;
  payload: string;
  retain: boolean;
  /** Events and retained states go at QoS 1 whatever the telemetry QoS. */
  qos1?: boolean;
}

/** Refusals (PUBACK reason ≥ 0x80) tried this many times before the record is skipped. */
const MAX_REJECT_ATTEMPTS = 3;
/**
 * A record published alone (probe mode) on a working connection that dies before its PUBACK this many
 * times is skipped: the broker drops the connection on it (mosquitto 2.0 does so for a payload above
 * message_size_limit under MQTT 5).
 */
const MAX_CONNECTION_STRIKES = 3;
/** MQTT 5 session expiry for clean: false (MQTT 5 ends the session at disconnect unless this is set), s. */
const SESSION_EXPIRY_S = 7 * 24 * 3600;
const STOP_PUBLISH_TIMEOUT_MS = 2000;
const READ_CHUNK = 500;

/** MQTT 5 reason codes we name in events (MQTT 5.0 spec §3.4.2.1). */
const REASON_NAMES: Record<number, string> = {
  0x80: 'unspecified error',
  0x83: 'implementation specific error',
  0x87: 'not authorized',
  0x90: 'topic name invalid',
  0x91: 'packet identifier in use',
  0x95: 'packet too large',
  0x97: 'quota exceeded',
  0x99: 'payload format invalid',
};

interface Slot {
  rec: OutboxRecord;
  msgs: MqttMessage[];
  done: boolean;
  gen: number;
  publishedAtMono: number;
}

class RejectedError extends RackguardError {
  constructor(
    readonly topic: string,
    readonly reasonCode: number | undefined,
    message: string,
  ) {
    super('E_MQTT_REJECTED', message);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, clock: Clock, what: string): Promise<T> {
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

export class MqttSink {
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly name: string;
  private readonly base: string;
  private client: MqttClient | undefined;
  private connected = false;
  private running = false;
  private gen = 0;
  private window: Slot[] = [];
  private readAfter = 0;
  private outboxGeneration = 0;
  private reconnectTimer: TimerHandle | undefined;
  private backoffMs: number;
  /** The connection's `online` status was acknowledged: the link works, records may flow. */
  private verified = false;
  /** Records up to this seq are sent one at a time (see the file comment). */
  private probeThroughSeq = 0;
  private maxPacketBytes: number | undefined;
  private readonly rejectAttempts = new Map<number, number>();
  private readonly strikes = new Map<number, number>();
  private published = 0;
  private skipped = 0;
  private reconnects = 0;
  private lastError: string | undefined;
  private options: IClientOptions | undefined;
  private readonly onAppended = (): void => this.guard('pump', () => this.pump());

  /**
   * Runs sink bookkeeping that may touch the outbox (read, skip events) from event handlers and
   * promise callbacks. An outbox error there (disk full, I/O) must be logged, not become an unhandled
   * rejection that ends the process or an exception inside the outbox's own emit.
   */
  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.lastError = asError(err).message;
      this.log.error({ err: this.lastError }, `mqtt sink: ${what} failed`);
    }
  }

  constructor(
    private readonly config: MqttConfig,
    private readonly deps: MqttSinkDeps,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger;
    this.name = deps.sinkName ?? 'mqtt';
    this.base = config.baseTopic.replaceAll('{site}', deps.context.site).replaceAll('{gateway}', deps.context.gateway).replace(/\/+$/, '');
    this.backoffMs = config.reconnectInitialMs;
  }

  /** `<base>/status`: retained online/offline, also the last will. */
  get statusTopic(): string {
    return `${this.base}/status`;
  }

  get baseTopic(): string {
    return this.base;
  }

  /** Registers the cursor and starts connecting; resolves at once (never waits for the broker). */
  async start(): Promise<void> {
    if (this.running) return;
    const env = this.deps.env ?? process.env;
    const { context } = this.deps;
    const username = readCredential(this.config.usernameFile, 'RACKGUARD_MQTT_USERNAME', env);
    const password = readCredential(this.config.passwordFile, 'RACKGUARD_MQTT_PASSWORD', env);
    const readPem = (file: string | undefined): Buffer | undefined => {
      if (file === undefined) return undefined;
      try {
        return readFileSync(file);
      } catch (err) {
        throw new RackguardError('E_SECRET_READ', `cannot read TLS file ${file}: ${asError(err).message}`, { cause: err });
      }
    };
    const ca = readPem(this.config.ca);
    const cert = readPem(this.config.cert);
    const key = readPem(this.config.key);
    this.options = {
      clientId: this.config.clientId ?? `rackguard-${context.site}-${context.gateway}`,
      protocolVersion: this.config.protocolVersion,
      clean: false,
      keepalive: this.config.keepaliveS,
      // We reconnect ourselves, with backoff and a fresh client each time (see the file comment).
      reconnectPeriod: 0,
      connectTimeout: this.config.publishTimeoutMs,
      // Offline QoS 0 publishes would pile up in RAM; the outbox is our queue.
      queueQoSZero: false,
      resubscribe: false,
      will: { topic: this.statusTopic, payload: Buffer.from('offline'), qos: 1, retain: true },
      ...(this.config.protocolVersion === 5 ? { properties: { sessionExpiryInterval: SESSION_EXPIRY_S } } : {}),
      ...(username !== undefined ? { username } : {}),
      ...(password !== undefined ? { password } : {}),
      ...(ca ? { ca } : {}),
      ...(cert ? { cert } : {}),
      ...(key ? { key } : {}),
    };
    this.deps.outbox.registerSink(this.name, this.deps.startAt ?? 'end');
    this.deps.outbox.on('appended', this.onAppended);
    this.running = true;
    this.connect();
  }

  /**
   * Publishes `offline` (retained) if connected, disconnects cleanly (so the will is not sent on top) and
   * persists the cursor. Safe at any stage, also before start() or while reconnecting.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.deps.outbox.off('appended', this.onAppended);
    this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const client = this.client;
    this.client = undefined;
    this.gen++;
    this.window = [];
    if (client) {
      try {
        if (this.connected) {
          await withTimeout(client.publishAsync(this.statusTopic, 'offline', { qos: 1, retain: true }), STOP_PUBLISH_TIMEOUT_MS, this.clock, 'publish offline status');
          await withTimeout(client.endAsync(false), STOP_PUBLISH_TIMEOUT_MS, this.clock, 'disconnect');
        }
      } catch (err) {
        this.log.warn({ err: asError(err).message }, 'mqtt: clean disconnect failed; closing');
      } finally {
        this.connected = false;
        client.end(true);
        client.removeAllListeners();
      }
    }
    try {
      if (this.deps.outbox.isOpen) this.deps.outbox.flushCursors();
    } catch (err) {
      this.log.warn({ err }, 'mqtt sink: could not persist its cursor on stop');
    }
  }

  stats(): MqttSinkStats {
    const ob = this.deps.outbox;
    const open = ob.isOpen && this.running;
    return {
      connected: this.connected,
      depth: open ? ob.depth(this.name) : 0,
      lagMs: open ? ob.lagMs(this.name) : 0,
      inFlight: this.window.length,
      published: this.published,
      skipped: this.skipped,
      reconnects: this.reconnects,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }

  // --- connection ---------------------------------------------------------------------------------

  private connect(): void {
    if (!this.running || !this.options) return;
    const connectFn = this.deps.connect ?? mqtt.connect;
    const client = connectFn(this.config.url, this.options);
    this.client = client;
    client.on('connect', (connack: IConnackPacket) => {
      if (this.client === client) this.guard('connect', () => this.onConnected(client, connack));
    });
    client.on('error', (err) => {
      this.lastError = err.message;
      this.log.warn({ err: err.message, code: (err as { code?: unknown }).code }, 'mqtt connection error');
    });
    client.on('close', () => {
      if (this.client === client) this.guard('close', () => this.onClosed(client, 'connection closed'));
    });
  }

  private onConnected(client: MqttClient, connack: IConnackPacket): void {
    this.connected = true;
    this.backoffMs = this.config.reconnectInitialMs;
    this.maxPacketBytes = connack.properties?.maximumPacketSize;
    this.log.info({ url: redactUrl(this.config.url), sessionPresent: connack.sessionPresent, depth: this.deps.outbox.depth(this.name) }, 'mqtt connected');
    this.readAfter = this.deps.outbox.cursorOf(this.name);
    this.outboxGeneration = this.deps.outbox.generation;
    const side = (topic: string, payload: string): void => {
      withTimeout(client.publishAsync(topic, payload, { qos: 1, retain: true }), this.config.publishTimeoutMs, this.clock, `publish ${topic}`).catch((err: unknown) => {
        this.log.warn({ topic, err: asError(err).message }, 'mqtt: status/discovery publish failed');
      });
    };
    this.verified = false;
    const gen = this.gen;
    withTimeout(client.publishAsync(this.statusTopic, 'online', { qos: 1, retain: true }), this.config.publishTimeoutMs, this.clock, `publish ${this.statusTopic}`).then(
      () => {
        if (gen !== this.gen) return;
        this.verified = true;
        if (this.config.homeAssistantDiscovery) for (const m of this.discoveryMessages()) side(m.topic, m.payload);
        this.guard('pump', () => this.pump());
      },
      (err: unknown) => {
        if (gen === this.gen) this.guard('drop', () => this.dropConnection(`status publish failed: ${asError(err).message}`));
      },
    );
  }

  private onClosed(client: MqttClient, why: string): void {
    const wasConnected = this.connected;
    this.connected = false;
    this.noteStrike();
    this.verified = false;
    this.client = undefined;
    client.removeAllListeners('connect');
    client.removeAllListeners('close');
    client.end(true);
    this.gen++;
    this.window = [];
    if (wasConnected) this.log.warn({ why, retryInMs: this.backoffMs }, 'mqtt disconnected; will reconnect');
    if (!this.running) return;
    const delay = Math.round(this.backoffMs * (1 + Math.random() * 0.2));
    this.backoffMs = Math.min(this.backoffMs * 2, this.config.reconnectMaxMs);
    this.reconnectTimer = this.clock.setTimeout(() => {
      this.reconnectTimer = undefined;
      this.reconnects++;
      this.connect();
    }, delay);
  }

  /** Drops the connection (a publish timed out: the link is dead even if the socket has not noticed). */
  private dropConnection(why: string): void {
    const client = this.client;
    if (!client) return;
    this.lastError = why;
    this.onClosed(client, why);
  }

  /** A working connection died with publishes in flight: probe them one by one; strike a lone culprit. */
  private noteStrike(): void {
    const head = this.window[0];
    if (!this.verified || !head || head.done || head.gen !== this.gen) return;
    if (this.window.length > 1 || this.deps.outbox.cursorOf(this.name) >= this.probeThroughSeq) {
      this.probeThroughSeq = Math.max(this.probeThroughSeq, this.readAfter);
      return;
    }
    const n = (this.strikes.get(head.rec.seq) ?? 0) + 1;
    this.strikes.set(head.rec.seq, n);
    if (n < MAX_CONNECTION_STRIKES) return;
    this.strikes.delete(head.rec.seq);
    this.skip(head, head.msgs[0]?.topic ?? '?', undefined, `the connection was lost ${n} times in a row while this publish, sent alone, awaited its acknowledgement (last connection error: ${this.lastError ?? 'none'}; a broker limit such as message_size_limit or max_packet_size?)`);
    this.deps.outbox.ack(this.name, head.rec.seq);
  }

  // --- delivery -----------------------------------------------------------------------------------

  /** Fills the window up to maxInFlight with the records after the last one dispatched. */
  private pump(): void {
    const client = this.client;
    if (!this.connected || !this.verified || !client || !this.deps.outbox.isOpen) return;
    if (this.deps.outbox.generation !== this.outboxGeneration) {
      // The outbox file was replaced (corruption): seqs restarted.
      this.outboxGeneration = this.deps.outbox.generation;
      this.window = [];
      this.gen++;
      this.readAfter = this.deps.outbox.cursorOf(this.name);
    }
    for (;;) {
      const limit = this.deps.outbox.cursorOf(this.name) < this.probeThroughSeq ? 1 : this.config.maxInFlight;
      if (this.window.length >= limit) break;
      const recs = this.deps.outbox.read(this.name, Math.min(READ_CHUNK, limit - this.window.length), this.readAfter);
      if (recs.length === 0) break;
      for (const rec of recs) {
        this.readAfter = rec.seq;
        const slot: Slot = { rec, msgs: this.messagesFor(rec), done: false, gen: this.gen, publishedAtMono: 0 };
        this.window.push(slot);
        this.publishSlot(client, slot);
      }
    }
  }

  private publishSlot(client: MqttClient, slot: Slot): void {
    slot.publishedAtMono = this.clock.monoMs();
    const gen = slot.gen;
    Promise.all(slot.msgs.map((m) => this.publishOne(client, m))).then(
      () => {
        if (gen !== this.gen) return;
        this.published += slot.msgs.length;
        slot.done = true;
        this.strikes.delete(slot.rec.seq);
        this.rejectAttempts.delete(slot.rec.seq);
        this.guard('advance', () => this.advance());
      },
      (err: unknown) => {
        if (gen !== this.gen) return;
        this.guard('publish failure', () => this.onSlotFailed(client, slot, err));
      },
    );
  }

  private async publishOne(client: MqttClient, m: MqttMessage): Promise<void> {
    const bytes = Buffer.byteLength(m.payload) + Buffer.byteLength(m.topic) + 16;
    if (this.maxPacketBytes !== undefined && bytes > this.maxPacketBytes) {
      throw new RejectedError(m.topic, undefined, `packet of ${bytes} bytes exceeds the broker's maximum packet size ${this.maxPacketBytes}`);
    }
    try {
      await withTimeout(client.publishAsync(m.topic, m.payload, { qos: m.qos1 || m.retain ? 1 : this.config.qos, retain: m.retain }), this.config.publishTimeoutMs, this.clock, `publish ${m.topic}`);
    } catch (err) {
      if (err instanceof ErrorWithReasonCode && err.code >= 0x80) {
        throw new RejectedError(m.topic, err.code, `broker refused the publish: reason 0x${err.code.toString(16)} (${REASON_NAMES[err.code] ?? err.message})`);
      }
      throw err;
    }
  }

  private onSlotFailed(client: MqttClient, slot: Slot, err: unknown): void {
    if (err instanceof RejectedError) {
      const attempts = (this.rejectAttempts.get(slot.rec.seq) ?? 0) + 1;
      this.rejectAttempts.set(slot.rec.seq, attempts);
      if (attempts < MAX_REJECT_ATTEMPTS && err.reasonCode !== undefined) {
        this.publishSlot(client, slot);
        return;
      }
      this.rejectAttempts.delete(slot.rec.seq);
      this.skip(slot, err.topic, err.reasonCode, `${err.message}; gave up after ${attempts} attempt(s)`);
      slot.done = true;
      this.advance();
      return;
    }
    // Timeout or a dead link: everything in flight is in doubt; start over from the cursor.
    this.dropConnection(asError(err).message);
  }

  private skip(slot: Slot, topic: string, reasonCode: number | undefined, why: string): void {
    this.skipped++;
    const bytes = Math.max(...slot.msgs.map((m) => Buffer.byteLength(m.payload)));
    const e = slot.rec.entry;
    const what = e.type === 'sample' ? `sample of ${e.sample.pointId}` : `${e.event.kind} event`;
    const message = `MQTT publish to ${topic} skipped (${what}, ${bytes} bytes): ${why}`;
    this.log.error({ topic, reasonCode, seq: slot.rec.seq }, message);
    this.lastError = message;
    // A refused notice about a refusal would loop forever: log only.
    if (e.type === 'event' && e.event.kind === 'output' && e.event.code === 'mqtt_publish_rejected') return;
    const notice: OutputNotice = {
      kind: 'output',
      code: 'mqtt_publish_rejected',
      severity: 'error',
      message,
      ts: this.clock.wallMs(),
      detail: { topic, ...(reasonCode !== undefined ? { reasonCode, reason: REASON_NAMES[reasonCode] ?? 'unknown' } : {}), seq: slot.rec.seq, payloadBytes: bytes, record: e.type === 'sample' ? { pointId: e.sample.pointId, ts: e.sample.ts } : { kind: e.event.kind, ts: e.event.ts } },
    };
    this.deps.outbox.appendEvent(notice);
  }

  /** Acks the contiguous done prefix of the window, then refills it. */
  private advance(): void {
    let acked: number | undefined;
    while (this.window[0]?.done) acked = this.window.shift()!.rec.seq;
    if (acked !== undefined) this.deps.outbox.ack(this.name, acked);
    this.pump();
  }

  // --- layout (pure) ------------------------------------------------------------------------------

  /** The MQTT messages one outbox record becomes. */
  messagesFor(rec: OutboxRecord): MqttMessage[] {
    const e = rec.entry;
    const iso = (ms: number): string => new Date(ms).toISOString();
    if (e.type === 'sample') {
      const s = e.sample;
      const body = { value: s.value, unit: s.unit, quality: s.quality, ts: iso(s.ts), tsMs: s.ts, ...(s.reason !== undefined ? { reason: s.reason } : {}) };
      return [{ topic: `${this.base}/sensors/${s.pointId}`, payload: JSON.stringify(body), retain: false }];
    }
    const ev = e.event;
    const out: MqttMessage[] = [];
    switch (ev.kind) {
      case 'zone_level':
        out.push({ topic: `${this.base}/zones/${ev.zone}/state`, payload: JSON.stringify({ level: ev.level, from: ev.from, reason: ev.reason, ts: iso(ev.ts), tsMs: ev.ts, evidence: ev.evidence }), retain: true });
        break;
      case 'zone_blind':
        out.push({ topic: `${this.base}/zones/${ev.zone}/blind`, payload: JSON.stringify({ blind: ev.blind, reason: ev.reason, ts: iso(ev.ts), tsMs: ev.ts, evidence: ev.evidence }), retain: true });
        break;
      case 'device_state':
        if (ev.state !== 'unknown') out.push({ topic: `${this.base}/devices/${ev.deviceId}/availability`, payload: ev.state === 'offline' ? 'offline' : 'online', retain: true });
        break;
      default:
        break;
    }
    out.push({ topic: `${this.base}/events`, payload: JSON.stringify({ ...ev, tsIso: iso(ev.ts) }), retain: false, qos1: true });
    return out;
  }

  /** Home Assistant MQTT discovery configs for every point and zone (retained). */
  discoveryMessages(): MqttMessage[] {
    const { site, gateway, points, zones } = this.deps.context;
    const node = `rackguard_${site}_${gateway}`.replace(/[^A-Za-z0-9_-]/g, '_');
    const device = { identifiers: [node], name: `rackguard ${site}/${gateway}`, manufacturer: 'rackguard' };
    const prefix = this.config.discoveryPrefix.replace(/\/+$/, '');
    const out: MqttMessage[] = [];
    for (const p of points.values()) {
      const object = p.id.replace(/[^A-Za-z0-9_-]/g, '_');
      const deviceClass = p.kind === 'temperature' ? 'temperature' : p.kind === 'humidity' ? 'humidity' : undefined;
      out.push({
        topic: `${prefix}/sensor/${node}/${object}/config`,
        retain: true,
        payload: JSON.stringify({
          name: p.id,
          unique_id: `${node}_${object}`,
          object_id: `${node}_${object}`,
          state_topic: `${this.base}/sensors/${p.id}`,
          value_template: '{{ value_json.value }}',
          ...(p.unit ? { unit_of_measurement: p.unit } : {}),
          ...(deviceClass ? { device_class: deviceClass, state_class: 'measurement' } : {}),
          availability: [
            { topic: this.statusTopic, payload_available: 'online', payload_not_available: 'offline' },
            { topic: `${this.base}/devices/${p.deviceId}/availability`, payload_available: 'online', payload_not_available: 'offline' },
          ],
          availability_mode: 'all',
          device,
        }),
      });
    }
    for (const z of zones) {
      const object = `zone_${z}`.replace(/[^A-Za-z0-9_-]/g, '_');
      out.push({
        topic: `${prefix}/sensor/${node}/${object}/config`,
        retain: true,
        payload: JSON.stringify({
          name: `zone ${z} level`,
          unique_id: `${node}_${object}`,
          object_id: `${node}_${object}`,
          state_topic: `${this.base}/zones/${z}/state`,
          value_template: '{{ value_json.level }}',
          json_attributes_topic: `${this.base}/zones/${z}/state`,
          json_attributes_template: '{{ {"reason": value_json.reason, "from": value_json.from, "ts": value_json.ts} | tojson }}',
          availability_topic: this.statusTopic,
          device,
        }),
      });
    }
    return out;
  }
}

/** A broker URL without any user:password@ part, for logs. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return '(unparsable url)';
  }
}
