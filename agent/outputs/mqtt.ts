/**
 * MQTT sink: drains the outbox through its own cursor to a broker with npm mqtt 5.x. A Component
 * (agent/component.ts): start() registers the cursor and connects in the background; stop() lets the
 * in-flight window finish (bounded), says `offline` and disconnects.
 *
 * The parts, one concern per file:
 *   ./mqtt-layout.ts      topics and payloads (pure; the contract in README "Outputs" and docs/mqtt.md)
 *   ./mqtt-connection.ts  client options, reconnect backoff, the broker's Receive Maximum, publish deadline
 *   ./mqtt-window.ts      the delivery window: ack order, outbox generation, retained newest-wins
 *   ./mqtt-refusal.ts     what happens to a publish the broker refuses
 *
 * Delivery: QoS 1 by default, at most maxInFlight records awaiting PUBACK (and never more QoS 1
 * publishes than the broker's Receive Maximum), our own deadline on each (publishAsync may never settle
 * when the link drops). mqtt.js reconnects at a fixed period and keeps its own in-memory resend queue,
 * so we reconnect ourselves with exponential backoff capped at reconnectMaxMs (jitter included), each
 * time with a fresh client (same clientId, clean: false: the broker keeps our session).
 *
 * The retained status carries the time it was sent and is republished every `statusRefreshMs`, so a
 * consumer can tell a stale `online` (a restarted broker replays the last retained one while we are
 * still away, and a last will cannot fire when the broker itself died).
 */
import mqtt, { ErrorWithReasonCode, type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { systemClock, type Clock, type TimerHandle } from '../clock.js';
import type { Component } from '../component.js';
import type { MqttConfig } from '../config/outputs-schema.js';
import { RackguardError, asError } from '../errors.js';
import { packageRoot } from '../paths.js';
import type { OutputContext, SinkOutbox } from './context.js';
import { clientOptions, InflightGate, ReconnectBackoff, redactUrl, withTimeout } from './mqtt-connection.js';
import { birthTopic, discoveryMessages, discoveryNodeId, discoveryReaction, ownConfigFilter } from './mqtt-discovery.js';
import { messagesFor, onlineStatus, resolveBaseTopic, statusTopic, stoppedStatus, type MqttMessage } from './mqtt-layout.js';
import { REASON_NAMES, RefusalPolicy, RejectedError, rejectionNotice } from './mqtt-refusal.js';
import { DeliveryWindow, RetainedOrder, type WindowSlot } from './mqtt-window.js';
import type { OutboxRecord, OutputNotice, SinkStart } from './outbox.js';

export type { MqttMessage } from './mqtt-layout.js';

export interface MqttSinkDeps {
  outbox: SinkOutbox;
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
  /** Replaces Math.random for the reconnect jitter (deterministic tests). */
  random?: () => number;
  /** The retained `online` status is republished this often, ms. Default 30 s. */
  statusRefreshMs?: number;
  /**
   * stop() waits at most this long for the in-flight window's acknowledgements, ms, and as long (up to
   * 2 s) for each of the `offline` status and the disconnect. Default 2 s.
   */
  stopDrainMs?: number;
}

export interface MqttSinkStats {
  connected: boolean;
  depth: number;
  lagMs: number;
  inFlight: number;
  published: number;
  skipped: number;
  reconnects: number;
  /** The broker's Receive Maximum on the current connection (65,535 when it sets none). */
  receiveMaximum?: number;
  lastError?: string;
}

const DEFAULT_STATUS_REFRESH_MS = 30_000;
/** A connection failure that repeats unchanged is logged again once every this many attempts. */
const CONNECT_FAILURE_LOG_EVERY = 12;

/** TLS verification failures of the broker's certificate that outputs.mqtt.ca (or a wrong host name) explains. */
const TLS_TRUST_CODES = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_SIGNATURE_FAILURE']);

/**
 * What a client error means, naming the broker. A CONNACK refusal (mqtt.js: "Connection refused: Not
 * authorized", code 4/5 under MQTT 3.1.1, 0x86/0x87 under MQTT 5) points at the credentials; a TLS
 * failure at the CA, the client certificate, or (validity) this gateway's clock.
 */
function describeClientError(err: Error, url: string, wallMs: number): string {
  const code = (err as { code?: unknown }).code;
  if (code === 'CERT_NOT_YET_VALID' || code === 'CERT_HAS_EXPIRED') {
    // A Pi without an RTC, before NTP: the certificate may be fine and our clock wrong. Say which clock judged it.
    return `${url}: TLS: ${err.message}, judged by this gateway's clock, which reads ${new Date(wallMs).toISOString()}; if that is wrong (no RTC, no NTP yet), fix the clock, not the certificate`;
  }
  if (/alert certificate required|alert bad certificate|alert unknown ca/i.test(err.message)) {
    return `${url}: TLS: the broker refused this gateway's client certificate (${/required/i.test(err.message) ? 'none was sent' : 'not signed by a CA it trusts'}): outputs.mqtt.cert and key must name a certificate the broker accepts`;
  }
  if (typeof code === 'string' && TLS_TRUST_CODES.has(code)) return `${url}: TLS: the broker's certificate is not trusted: ${err.message} (${code}); outputs.mqtt.ca must name the CA that signed it, and the URL its host name or IP`;
  if (/^Connection refused/i.test(err.message)) {
    const auth = code === 4 || code === 5 || code === 0x86 || code === 0x87 || code === 0x8c;
    return `broker ${url} refused the connection: ${err.message.replace(/^Connection refused:\s*/i, '')} (CONNACK code ${String(code)})${auth ? '; check the MQTT credentials (usernameFile/passwordFile or RACKGUARD_MQTT_USERNAME/RACKGUARD_MQTT_PASSWORD) and the broker ACL' : ''}`;
  }
  return `${url}: ${err.message}`;
}
const DEFAULT_STOP_DRAIN_MS = 2000;
const STOP_PUBLISH_TIMEOUT_MS = 2000;
/** MQTT 5.0 §3.2.2.3.3: absent Receive Maximum means 65,535. */
const DEFAULT_RECEIVE_MAXIMUM = 65_535;

/** One connection attempt: its client, its Receive Maximum gate, and (once online) its window. */
interface Connection {
  client: MqttClient;
  gate: InflightGate;
  window: DeliveryWindow | undefined;
  connected: boolean;
  /** Our `online` status was acknowledged on it: the link works, records may flow. */
  verified: boolean;
  maxPacketBytes: number | undefined;
  /** The last client error on this connection (named for the log when it never got online). */
  error?: string;
  /** The retained states being restored on this connection (the lastRetained entries sent), and how many await their PUBACK. */
  restoring?: { entries: RetainedEntry[]; unacked: number };
  /** Set while the discovery configs are out and no record is (announcePhase): a close then is theirs. The last config acknowledged. */
  discoveryPhase?: { lastAcked: string | undefined };
}

/** The broker closed the connection this many times in a row while discovery configs were out: discovery pauses. */
const DISCOVERY_STRIKES = 2;
/** How long discovery pauses then (a broker that merely restarted twice at the wrong moment gets it back). */
const DISCOVERY_PAUSE_MS = 10 * 60_000;

/**
 * Whether the broker's retained payload `held` should be replaced by `ours` on a reconnect: it holds
 * nothing, or something else that is not newer. A state the broker acknowledged but we had not
 * confirmed when the link died is newer than our last confirmed one (its `tsMs` says so) and stays;
 * the backlog resends it anyway. Payloads without a time (availability) are restored when different.
 */
export function heldIsOlder(held: string | undefined, ours: string): boolean {
  if (held === undefined) return true;
  if (held === ours) return false;
  const heldTs = payloadTsMs(held);
  const ourTs = payloadTsMs(ours);
  return heldTs === undefined || ourTs === undefined || heldTs <= ourTs;
}

function payloadTsMs(payload: string): number | undefined {
  if (!payload.startsWith('{')) return undefined;
  try {
    const ts = (JSON.parse(payload) as { tsMs?: unknown }).tsMs;
    return typeof ts === 'number' && Number.isFinite(ts) ? ts : undefined;
  } catch {
    return undefined;
  }
}

/** The newest retained state the broker confirmed for a topic. */
interface RetainedEntry {
  seq: number;
  generation: number;
  message: MqttMessage;
}

export class MqttSink implements Component {
  readonly name: string;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly cursor: string;
  private readonly base: string;
  private readonly backoff: ReconnectBackoff;
  private readonly refusals = new RefusalPolicy();
  private readonly retained = new RetainedOrder();
  /**
   * The newest retained message the broker confirmed per topic (zone and device states), with its
   * outbox seq and generation. Republished on every new connection: a broker restarted without
   * persistence lost them, and one killed between two autosaves brings back an older one (a zone back
   * at `alarm` after `critical` was acknowledged).
   */
  private readonly lastRetained = new Map<string, RetainedEntry>();
  private conn: Connection | undefined;
  private running = false;
  private options: IClientOptions | undefined;
  private reconnectTimer: TimerHandle | undefined;
  private refreshTimer: TimerHandle | undefined;
  private published = 0;
  private skipped = 0;
  private reconnects = 0;
  private lastError: string | undefined;
  /** Connections in a row that the broker closed while discovery configs were out (a broker ACL denying them). */
  private discoveryStrikes = 0;
  /** Monotonic ms until which discovery configs are not published (see noteDiscoveryDrop). */
  private discoveryPausedUntil = Number.NEGATIVE_INFINITY;
  private discoveryTimer: TimerHandle | undefined;
  /** Connection attempts failed in a row (never verified), for the rate-limited log. */
  private connectFailures = 0;
  private loggedConnectError: string | undefined;
  private readonly onAppended = (): void => this.guard('pump', () => this.conn?.window?.pump());

  constructor(
    private readonly config: MqttConfig,
    private readonly deps: MqttSinkDeps,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.log = deps.logger;
    this.cursor = deps.sinkName ?? 'mqtt';
    this.name = `sink:${this.cursor}`;
    this.base = resolveBaseTopic(config.baseTopic, deps.context.site, deps.context.gateway);
    this.backoff = new ReconnectBackoff(config.reconnectInitialMs, config.reconnectMaxMs, deps.random);
  }

  /** `<base>/status`: retained JSON { state, ts, … }, also the last will. */
  get statusTopic(): string {
    return statusTopic(this.base);
  }

  get baseTopic(): string {
    return this.base;
  }

  /**
   * Registers the cursor and starts connecting; resolves at once (never waits for the broker). A
   * credential or TLS file that cannot be read fails start() (E_SECRET_READ); it can be retried.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.options = clientOptions(this.config, this.deps.context, this.statusTopic, this.deps.env ?? process.env);
    this.deps.outbox.registerSink(this.cursor, this.deps.startAt ?? 'end');
    this.deps.outbox.on('appended', this.onAppended);
    this.running = true;
    this.backoff.reset();
    this.connect();
  }

  /**
   * Lets the records in flight be acknowledged (up to stopDrainMs; only what the broker acknowledged
   * moves the cursor), publishes `offline` (retained) if connected, disconnects cleanly (so the will is
   * not sent on top) and persists the cursor. Safe at any stage, twice, and while reconnecting.
   */
  async stop(): Promise<void> {
    this.running = false;
    this.deps.outbox.off('appended', this.onAppended);
    this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    this.clock.clearTimeout(this.discoveryTimer);
    this.discoveryTimer = undefined;
    const conn = this.conn;
    const drainMs = this.deps.stopDrainMs ?? DEFAULT_STOP_DRAIN_MS;
    const stepMs = Math.min(STOP_PUBLISH_TIMEOUT_MS, drainMs);
    if (conn?.window && conn.connected) {
      conn.window.stopFeeding();
      await this.within(conn.window.idle(), drainMs);
    }
    // The drain may have ended in a dropped link (then this.conn is already cleared).
    if (conn && this.conn === conn) {
      this.conn = undefined;
      try {
        if (conn.connected) {
          await withTimeout(conn.client.publishAsync(this.statusTopic, stoppedStatus(this.clock.wallMs()), { qos: 1, retain: true }), stepMs, this.clock, 'publish offline status');
          // Its PUBACK came after those of the records in the window: it confirms them (./mqtt-window.ts).
          this.guard('confirm', () => conn.window?.confirm());
          await withTimeout(conn.client.endAsync(false), stepMs, this.clock, 'disconnect');
        }
      } catch (err) {
        this.log.warn({ err: asError(err).message }, 'mqtt: clean disconnect failed; closing');
      } finally {
        this.closeConnection(conn, new RackguardError('E_MQTT_DISCONNECTED', 'mqtt sink stopped'));
        conn.connected = false;
        conn.client.removeAllListeners();
        // A client ended while still connecting can still report a connack timeout: an 'error' with no
        // listener would end the process.
        conn.client.on('error', () => undefined);
        conn.client.end(true);
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
      connected: this.conn?.connected ?? false,
      depth: open ? ob.depth(this.cursor) : 0,
      lagMs: open ? ob.lagMs(this.cursor) : 0,
      inFlight: this.conn?.window?.size ?? 0,
      published: this.published,
      skipped: this.skipped,
      reconnects: this.reconnects,
      ...(this.conn?.connected ? { receiveMaximum: this.conn.gate.capacity } : {}),
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }

  /** The MQTT messages one outbox record becomes (see ./mqtt-layout.ts). */
  messagesFor(rec: OutboxRecord): MqttMessage[] {
    return messagesFor(rec, this.base);
  }

  /** Home Assistant MQTT discovery configs for every point, zone and device (retained; ./mqtt-discovery.ts). */
  discoveryMessages(): MqttMessage[] {
    let swVersion = 'unknown';
    try {
      swVersion = (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      // A missing package.json only costs HA the version string.
    }
    return discoveryMessages(this.deps.context, { base: this.base, prefix: this.config.discoveryPrefix, swVersion });
  }

  /**
   * Publishes the discovery configs, again whenever HA announces itself on `<prefix>/status`, and
   * clears retained configs of ours that are no longer generated (a point removed from the config).
   */
  private announce(conn: Connection): Promise<void> {
    const msgs = this.discoveryMessages();
    const current = new Set(msgs.map((m) => m.topic));
    const { site, gateway } = this.deps.context;
    const node = discoveryNodeId(site, gateway);
    conn.client.on('message', (topic, payload) => {
      if (this.conn !== conn) return;
      const r = discoveryReaction(topic, payload.toString(), this.config.discoveryPrefix, current, node);
      if (r.kind === 'republish') for (const m of msgs) void this.sideline(conn, m);
      else if (r.kind === 'clear') void this.sideline(conn, { topic: r.topic, payload: '', retain: true });
    });
    conn.client.subscribe([birthTopic(this.config.discoveryPrefix), ownConfigFilter(this.config.discoveryPrefix, site, gateway)], { qos: 1 }, (err) => {
      if (err) this.log.warn({ err: err.message }, 'mqtt: cannot subscribe to the Home Assistant discovery topics');
    });
    return Promise.all(msgs.map((m) => this.sideline(conn, m))).then(() => undefined);
  }

  // --- connection ---------------------------------------------------------------------------------

  private connect(): void {
    if (!this.running || !this.options) return;
    const connectFn = this.deps.connect ?? mqtt.connect;
    const client = connectFn(this.config.url, this.options);
    const conn: Connection = { client, gate: new InflightGate(DEFAULT_RECEIVE_MAXIMUM), window: undefined, connected: false, verified: false, maxPacketBytes: undefined };
    this.conn = conn;
    client.on('connect', (connack: IConnackPacket) => {
      if (this.conn === conn) this.guard('connect', () => this.onConnected(conn, connack));
    });
    client.on('error', (err) => {
      this.lastError = describeClientError(err, redactUrl(this.config.url), this.clock.wallMs());
      conn.error = this.lastError;
      // Logged by dropConnection (once per kind of failure, then as a summary): a broker that refuses
      // us every few seconds must not fill the journal.
      this.log.debug({ url: redactUrl(this.config.url), err: err.message, code: (err as { code?: unknown }).code }, 'mqtt connection error');
    });
    // Any packet from the broker confirms the records acknowledged before it (./mqtt-window.ts).
    client.on('packetreceive', () => {
      if (this.conn !== conn) return;
      if (conn.restoring?.unacked === 0) conn.restoring = undefined;
      this.guard('confirm', () => conn.window?.confirm());
    });
    client.on('close', () => {
      if (this.conn === conn) this.guard('close', () => this.dropConnection(conn, 'connection closed'));
    });
  }

  private onConnected(conn: Connection, connack: IConnackPacket): void {
    conn.connected = true;
    conn.maxPacketBytes = connack.properties?.maximumPacketSize;
    conn.gate = new InflightGate(connack.properties?.receiveMaximum ?? DEFAULT_RECEIVE_MAXIMUM);
    this.log.info({ url: redactUrl(this.config.url), sessionPresent: connack.sessionPresent, receiveMaximum: conn.gate.capacity, depth: this.deps.outbox.depth(this.cursor) }, 'mqtt connected');
    this.publishStatus(conn).then(
      () => {
        if (this.conn !== conn || !this.running) return;
        conn.verified = true;
        this.backoff.reset();
        this.connectFailures = 0;
        this.loggedConnectError = undefined;
        this.scheduleRefresh(conn);
        // Discovery configs first, alone (announcePhase), then the restored states, then the records:
        // a newer state in the backlog must come after its restore.
        const discovery = this.config.homeAssistantDiscovery && this.clock.monoMs() >= this.discoveryPausedUntil ? this.announcePhase(conn) : Promise.resolve();
        void discovery.then(() => (this.conn === conn ? this.restoreRetained(conn) : undefined)).then(() => {
          if (this.conn !== conn || !this.running) return;
          this.guard('pump', () => {
            conn.window = this.newWindow(conn);
            conn.window.pump();
          });
        });
      },
      (err: unknown) => {
        if (this.conn === conn) this.guard('drop', () => this.dropConnection(conn, `status publish failed: ${asError(err).message}`));
      },
    );
  }

  private publishStatus(conn: Connection): Promise<void> {
    const refreshS = Math.round((this.deps.statusRefreshMs ?? DEFAULT_STATUS_REFRESH_MS) / 1000);
    return this.publishOn(conn, { topic: this.statusTopic, payload: onlineStatus(this.clock.wallMs(), refreshS), retain: true });
  }

  /** Republishes the stamped `online` status every statusRefreshMs while this connection lives. */
  private scheduleRefresh(conn: Connection): void {
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = this.clock.setTimeout(() => {
      this.refreshTimer = undefined;
      if (this.conn !== conn || !this.running) return;
      this.publishStatus(conn).then(
        // Only while this connection is still ours: an ack that arrives after a stop()/start() must not
        // clear the new connection's timer.
        () => {
          if (this.conn === conn && this.running) this.scheduleRefresh(conn);
        },
        (err: unknown) => {
          if (this.conn === conn) this.guard('drop', () => this.dropConnection(conn, `status refresh failed: ${asError(err).message}`));
        },
      );
    }, this.deps.statusRefreshMs ?? DEFAULT_STATUS_REFRESH_MS);
  }

  /**
   * The messages of a record the window sends: those to a quarantined topic (refused again and again,
   * ./mqtt-refusal.ts) are skipped unsent and counted, and a topic coming out of quarantine reports
   * what was skipped meanwhile.
   */
  private screened(rec: OutboxRecord): MqttMessage[] {
    const now = this.clock.monoMs();
    const out: MqttMessage[] = [];
    for (const m of this.messagesFor(rec)) {
      if (this.refusals.isSkipped(rec.seq, m.topic)) continue;
      const verdict = this.refusals.screen(m.topic, now);
      if (verdict.skip) {
        this.skipped++;
        continue;
      }
      if (verdict.skippedUnsent > 0) this.reportUnsent(m.topic, verdict.skippedUnsent);
      out.push(m);
    }
    return out;
  }

  private reportUnsent(topic: string, count: number): void {
    const message = `MQTT: ${count} messages to ${topic} were skipped unsent while the topic was quarantined after the broker refused it; sending to it again`;
    this.log.error({ topic, skippedUnsent: count }, message);
    this.lastError = message;
    const notice: OutputNotice = { kind: 'output', code: 'mqtt_publish_rejected', severity: 'error', message, ts: this.clock.wallMs(), detail: { topic, skippedUnsent: count } };
    // Not for the events topic itself: a refused events topic would report into itself for ever.
    if (topic !== `${this.base}/events`) this.deps.outbox.appendEvent(notice);
  }

  private noteRetainedDelivered(slot: WindowSlot): void {
    const generation = this.deps.outbox.generation;
    for (const m of slot.sent) {
      if (this.refusals.topicAccepted(m.topic)) this.log.warn({ topic: m.topic }, 'mqtt: the broker accepts this topic again; its quarantine is over');
    }
    for (const m of slot.sent) {
      if (!m.retain) continue;
      const cur = this.lastRetained.get(m.topic);
      if (cur && cur.generation === generation && cur.seq > slot.rec.seq) continue;
      this.lastRetained.set(m.topic, { seq: slot.rec.seq, generation, message: m });
    }
  }

  /**
   * Restores our retained states on a new connection, before any record: what the broker holds may be
   * nothing (restarted without persistence) or older than what it acknowledged (killed between two
   * autosaves). The same connection carries the newer records after them, in order, so a newer state
   * still wins.
   */
  private async restoreRetained(conn: Connection): Promise<void> {
    const confirmed = [...this.lastRetained.values()];
    if (confirmed.length === 0) return;
    // Only what the broker does not hold as we left it: a network blip must not repeat every state.
    const held = await this.heldRetained(conn, confirmed.map((e) => e.message.topic));
    if (this.conn !== conn) return;
    const entries = confirmed.filter((e) => this.lastRetained.get(e.message.topic) === e && heldIsOlder(held.get(e.message.topic), e.message.payload));
    if (entries.length === 0) return;
    this.log.info({ topics: entries.map((e) => e.message.topic) }, 'mqtt: restoring retained states the broker lost or holds older');
    const restoring = { entries, unacked: entries.length };
    conn.restoring = restoring;
    // All settled: a ping's answer confirms them (the connection outlived them) and ends the restore.
    const settled = (): void => {
      if (--restoring.unacked === 0 && this.conn === conn && conn.connected) conn.client.sendPing();
    };
    for (const entry of entries) {
      const { message } = entry;
      this.publishOn(conn, message).then(settled, (err: unknown) => {
        // Refused now (the ACL changed): stop restoring it, or every connection would die on it. A
        // failure that leaves the connection up (an MQTT 5 refusal, a timeout) still counts as settled,
        // or the restore would never end and a later blip would forget every state it restored.
        if (err instanceof RejectedError && this.lastRetained.get(message.topic) === entry) this.lastRetained.delete(message.topic);
        this.log.warn({ topic: message.topic, err: asError(err).message }, 'mqtt: republishing a retained state failed');
        settled();
      });
    }
  }

  /**
   * The retained payloads the broker holds for `topics`, read by subscribing to them: the broker sends
   * them after its SUBACK, and the answer to a ping sent after the SUBACK comes after them. Empty when
   * they cannot be read (an ACL without read access, a timeout): then everything is restored.
   */
  private async heldRetained(conn: Connection, topics: string[]): Promise<Map<string, string>> {
    const held = new Map<string, string>();
    const wanted = new Set(topics);
    const onMessage = (topic: string, payload: Buffer, packet: { retain?: boolean }): void => {
      if (packet.retain && wanted.has(topic)) held.set(topic, payload.toString());
    };
    conn.client.on('message', onMessage);
    try {
      const granted = await withTimeout(conn.client.subscribeAsync(topics, { qos: 0 }), this.config.publishTimeoutMs, this.clock, 'subscribe to our retained topics');
      await this.pingAnswered(conn, 'ping after the retained messages');
      // A topic we may not read (granted 0x80 or more) tells nothing: restore it.
      for (const g of granted) if (g.qos >= 0x80) held.delete(g.topic);
      return held;
    } catch (err) {
      this.log.debug({ err: asError(err).message }, 'mqtt: cannot read our retained states back; restoring them all');
      return new Map();
    } finally {
      conn.client.off('message', onMessage);
      if (this.conn === conn) {
        try {
          conn.client.unsubscribeAsync(topics).catch(() => undefined);
        } catch {
          // A client without it (a test double): nothing was subscribed either.
        }
      }
    }
  }

  /**
   * The connection died before the states it restored were confirmed: under MQTT 3.1.1 a broker that
   * now refuses one of them acknowledges it and closes, so they are not restored again (a poisoned
   * restore would kill every connection). A newer record for the topic restores it again.
   */
  private abandonRestore(conn: Connection): void {
    if (!conn.restoring) return;
    const { entries } = conn.restoring;
    // Only the states restored here: a newer one confirmed since for the same topic stays.
    for (const e of entries) if (this.lastRetained.get(e.message.topic) === e) this.lastRetained.delete(e.message.topic);
    this.log.warn({ topics: entries.map((e) => e.message.topic) }, 'mqtt: the connection died while retained states were being restored; they will not be restored again');
    conn.restoring = undefined;
  }

  /** A retained side publish (discovery): logged when it fails, never blocks records. Settles either way. */
  private sideline(conn: Connection, m: MqttMessage): Promise<void> {
    return this.publishOn(conn, m).then(
      () => {
        if (conn.discoveryPhase) conn.discoveryPhase.lastAcked = m.topic;
      },
      (err: unknown) => {
        this.log.warn({ topic: m.topic, err: asError(err).message }, 'mqtt: discovery publish failed');
      },
    );
  }

  /**
   * The discovery configs on a new connection, before any record: every one settled, then a ping
   * whose answer shows the connection outlived them (mosquitto acknowledges a publish its ACL refuses
   * and then closes, under MQTT 3.1.1). A close in this phase is the configs' doing: a broker whose ACL
   * denies the discovery prefix would otherwise close every connection at its configs, for ever, and
   * no reading would get through. Bounded by publishTimeoutMs per step; records wait that long at most.
   */
  private async announcePhase(conn: Connection): Promise<void> {
    const phase = { lastAcked: undefined as string | undefined };
    conn.discoveryPhase = phase;
    try {
      await this.announce(conn);
      if (this.conn !== conn || !conn.connected) return;
      await this.pingAnswered(conn, 'ping after the discovery configs');
      if (this.conn === conn) this.discoveryStrikes = 0;
    } catch (err) {
      this.log.debug({ err: asError(err).message }, 'mqtt: discovery configs not confirmed; records go on');
    } finally {
      if (conn.discoveryPhase === phase) conn.discoveryPhase = undefined;
    }
  }

  /**
   * Sends a ping and resolves at its answer (within publishTimeoutMs, else E_MQTT_TIMEOUT naming
   * `what`): the broker answers in order, so whatever it sent before (acknowledgements, retained
   * messages, a close) has come by then.
   */
  private async pingAnswered(conn: Connection, what: string): Promise<void> {
    let pong!: () => void;
    const answered = new Promise<void>((resolve) => (pong = resolve));
    const onPacket = (packet: { cmd?: string }): void => {
      if (packet.cmd === 'pingresp') pong();
    };
    conn.client.on('packetreceive', onPacket);
    try {
      conn.client.sendPing();
      await withTimeout(answered, this.config.publishTimeoutMs, this.clock, what);
    } finally {
      conn.client.off('packetreceive', onPacket);
    }
  }

  /** The connection died while its discovery configs were out and no record was: count it against discovery. */
  private noteDiscoveryDrop(conn: Connection): void {
    const phase = conn.discoveryPhase;
    if (!phase || !this.running) return;
    conn.discoveryPhase = undefined;
    if (++this.discoveryStrikes < DISCOVERY_STRIKES) return;
    this.discoveryStrikes = 0;
    this.discoveryPausedUntil = this.clock.monoMs() + DISCOVERY_PAUSE_MS;
    const refused = phase.lastAcked === undefined ? `under ${this.config.discoveryPrefix}/` : `(last acknowledged before the close: ${phase.lastAcked})`;
    this.log.error(
      { url: redactUrl(this.config.url), topic: phase.lastAcked, prefix: this.config.discoveryPrefix, pauseS: DISCOVERY_PAUSE_MS / 1000 },
      `mqtt: the broker closed the connection ${DISCOVERY_STRIKES} times in a row at the Home Assistant discovery configs ${refused}: discovery pauses for ${DISCOVERY_PAUSE_MS / 60_000} min, so readings and events go on; allow this client to publish and subscribe under ${this.config.discoveryPrefix}/ in the broker's ACL`,
    );
    // Tried again at the end of the pause on a live connection, and at any connection after it.
    this.clock.clearTimeout(this.discoveryTimer);
    this.discoveryTimer = this.clock.setTimeout(() => {
      this.discoveryTimer = undefined;
      const live = this.conn;
      if (this.running && live?.verified && live.connected) void this.announce(live);
    }, DISCOVERY_PAUSE_MS);
  }

  private newWindow(conn: Connection): DeliveryWindow {
    return new DeliveryWindow({
      outbox: this.deps.outbox,
      cursor: this.cursor,
      logger: this.log,
      limit: () => (this.refusals.probing(this.deps.outbox.cursorOf(this.cursor)) ? 1 : this.config.maxInFlight),
      messagesFor: (rec) => this.screened(rec),
      publish: (m) => this.publishOn(conn, m),
      refusals: this.refusals,
      retained: this.retained,
      skip: (slot, topic, reasonCode, why) => this.skip(slot, topic, reasonCode, why),
      linkFailed: (why) => {
        if (this.conn === conn) this.dropConnection(conn, why);
      },
      delivered: (n) => {
        this.published += n;
      },
      guard: (what, fn) => this.guard(what, fn),
      confirmed: (slot) => this.noteRetainedDelivered(slot),
      requestConfirmation: () => {
        if (this.conn === conn && conn.connected) conn.client.sendPing();
      },
    });
  }

  /**
   * One publish on `conn`: QoS 1 ones pass the Receive Maximum gate; our deadline starts when the packet
   * is handed to mqtt.js. A PUBACK reason ≥ 0x80 becomes a RejectedError naming the topic.
   */
  private async publishOn(conn: Connection, m: MqttMessage): Promise<void> {
    const bytes = Buffer.byteLength(m.payload) + Buffer.byteLength(m.topic) + 16;
    if (conn.maxPacketBytes !== undefined && bytes > conn.maxPacketBytes) {
      throw new RejectedError(m.topic, undefined, `packet of ${bytes} bytes exceeds the broker's maximum packet size ${conn.maxPacketBytes}`);
    }
    const qos = m.qos1 || m.retain ? 1 : this.config.qos;
    const send = async (): Promise<void> => {
      await withTimeout(conn.client.publishAsync(m.topic, m.payload, { qos, retain: m.retain }), this.config.publishTimeoutMs, this.clock, `publish ${m.topic}`);
    };
    try {
      await (qos === 0 ? send() : conn.gate.run(send));
    } catch (err) {
      if (err instanceof ErrorWithReasonCode && err.code >= 0x80) {
        throw new RejectedError(m.topic, err.code, `broker refused the publish: reason 0x${err.code.toString(16)} (${REASON_NAMES[err.code] ?? err.message})`);
      }
      throw err;
    }
  }

  /** The link is dead (closed, or a publish timed out although the socket has not noticed): reconnect. */
  private dropConnection(conn: Connection, why: string): void {
    const wasConnected = conn.connected;
    if (why !== 'connection closed') this.lastError = why;
    this.abandonRestore(conn);
    this.noteDiscoveryDrop(conn);
    this.noteStrike(conn);
    this.conn = undefined;
    conn.connected = false;
    this.closeConnection(conn, new RackguardError('E_MQTT_DISCONNECTED', `mqtt connection lost: ${why}`, { retryable: true }));
    conn.client.removeAllListeners('connect');
    conn.client.removeAllListeners('close');
    conn.client.end(true);
    this.clock.clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (!this.running) return;
    const delay = this.backoff.next();
    if (wasConnected) this.log.warn({ url: redactUrl(this.config.url), why, err: this.lastError, retryInMs: delay }, 'mqtt disconnected; will reconnect');
    else this.noteConnectFailure(delay, conn.error);
    this.reconnectTimer = this.clock.setTimeout(() => {
      this.reconnectTimer = undefined;
      this.reconnects++;
      this.connect();
    }, delay);
  }

  /**
   * A connection attempt failed (refused, unreachable, CONNACK not authorized): an error naming the
   * broker the first time, whenever the reason changes, and then once every CONNECT_FAILURE_LOG_EVERY
   * attempts (about a minute at the default 5 s cap). Never the credentials: only the URL without any
   * user:password part.
   */
  private noteConnectFailure(retryInMs: number, error: string | undefined): void {
    this.connectFailures++;
    const url = redactUrl(this.config.url);
    // The message is said after the URL here: do not say the URL twice.
    const err = (error ?? 'the connection closed before the broker accepted it').replace(`${url}: `, '');
    if (this.connectFailures > 1 && err === this.loggedConnectError && this.connectFailures % CONNECT_FAILURE_LOG_EVERY !== 0) return;
    this.loggedConnectError = err;
    this.log.error({ url, err, attempts: this.connectFailures, retryInMs }, `mqtt: cannot connect to ${url}: ${err}; retrying in ${retryInMs} ms (attempt ${this.connectFailures})`);
  }

  private closeConnection(conn: Connection, err: Error): void {
    conn.window?.close();
    conn.gate.close(err);
  }

  /** A working connection died with publishes in flight: probe them one by one; strike a lone culprit. */
  private noteStrike(conn: Connection): void {
    const window = conn.window;
    const head = window?.head;
    // A head that is done was acknowledged but never confirmed: the connection died right after its
    // PUBACK, which is how mosquitto 2.0 answers a publish it refuses under MQTT 3.1.1.
    if (!conn.verified || !window || !head) return;
    const verdict = this.refusals.connectionLost(window.size, head.rec.seq, this.deps.outbox.cursorOf(this.cursor), window.lastRead);
    if (!verdict.skip) return;
    const why = head.done
      ? `the broker acknowledged this publish, sent alone, and then closed the connection, ${verdict.strikes} times in a row: it refused it (an ACL denial or a size limit such as message_size_limit; MQTT ${this.config.protocolVersion === 5 ? '5' : '3.1.1 has no reason code for it'})`
      : `the connection was lost ${verdict.strikes} times in a row while this publish, sent alone, awaited its acknowledgement (last connection error: ${this.lastError ?? 'none'}; a broker limit such as message_size_limit or max_packet_size?)`;
    window.skipHead(this.suspectTopic(head), why);
  }

  /**
   * Which message of a record the broker died on. Under MQTT 3.1.1 mosquitto acknowledges a refused
   * publish and then closes: the last message acknowledged. Under MQTT 5 a refusal has a reason code,
   * so a death is the first message left unanswered (mosquitto's 0x95 PUBACK for an oversized payload
   * is invalid for mqtt.js, which closes the connection on it).
   */
  private suspectTopic(slot: WindowSlot): string {
    const unanswered = slot.msgs.filter((m) => slot.pending.includes(m));
    const answered = slot.msgs.filter((m) => !slot.pending.includes(m));
    const m = this.config.protocolVersion === 5 ? (unanswered[0] ?? answered.at(-1)) : (answered.at(-1) ?? unanswered[0]);
    return m?.topic ?? '?';
  }

  private skip(slot: WindowSlot, topic: string, reasonCode: number | undefined, why: string): void {
    this.skipped++;
    // The events topic carries every alarm: never quarantined on a guess (one oversized event).
    const q = this.refusals.gaveUp(topic, this.clock.monoMs(), reasonCode, topic !== `${this.base}/events`);
    const { message, notice } = rejectionNotice(slot.rec, slot.msgs, topic, reasonCode, why, this.clock.wallMs(), q);
    this.log.error({ topic, reasonCode, seq: slot.rec.seq }, message);
    this.lastError = message;
    if (notice) this.deps.outbox.appendEvent(notice);
  }

  /** Waits for `p`, at most `ms` on the injected clock. */
  private within(p: Promise<void>, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = this.clock.setTimeout(resolve, ms);
      void p.then(() => {
        this.clock.clearTimeout(t);
        resolve();
      });
    });
  }

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
}
