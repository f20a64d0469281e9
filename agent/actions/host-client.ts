/**
 * The gateway's side of the host-command protocol (docs/host-agent.md): sign a command for one host,
 * publish it with a seq that is never reused (persisted before the publish, in a file: the gateway
 * restarts too), await the host's acknowledgement up to a deadline, and hand back the final report
 * as a promise. The coordinated shutdown (issue 8, item 2) builds on sendHostCommand().
 *
 * Pure parts (building the command, telling replies apart) are plain functions; the MQTT part is
 * HostReplyRouter, one per client, which subscribes each host's reply topic once and routes verified
 * replies to whoever waits for them.
 */
import { randomBytes } from 'node:crypto';
import type { IPublishPacket, MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import { RackguardError } from '../errors.js';
import { withTimeout } from '../outputs/mqtt-connection.js';
import {
  commandTopic,
  lastSeqOfReplayed,
  nextSeq,
  parseReply,
  PROTOCOL_VERSION,
  replyTopic,
  signCommand,
  type HostAction,
  type HostCommand,
  type HostReply,
} from './host-protocol.js';
import type { SeqStore } from './seq-file.js';

export interface HostCommandParams {
  action: HostAction;
  incident: string;
  dryRun: boolean;
  /** How long the command stays valid after it is issued, s. */
  ttlS: number;
}

/** Builds the unsigned command (pure). */
export function buildCommand(host: string, p: HostCommandParams, at: { gateway: string; seq: number; nowWallMs: number }) {
  const issuedAtMs = Math.floor(at.nowWallMs);
  return {
    v: PROTOCOL_VERSION,
    host,
    action: p.action,
    incident: p.incident,
    seq: at.seq,
    issuedAtMs,
    expiresAtMs: issuedAtMs + Math.max(1, Math.round(p.ttlS * 1000)),
    dryRun: p.dryRun,
    gateway: at.gateway,
  } as const;
}

/** What became of a wait: the host's reply, or nothing before the deadline. */
export type ReplyOutcome = { kind: 'reply'; reply: HostReply; afterMs: number } | { kind: 'timeout'; afterMs: number };

export interface HostCommandHandle {
  command: HostCommand;
  /** The first reply (accepted, would-act, rejected, or already a final failed), or a timeout. */
  ack: ReplyOutcome;
  /** The last reply for this seq (`final: true`: done, failed, rejected, or would-act), or a timeout. */
  final: Promise<ReplyOutcome>;
  /**
   * When `ack` is a timeout: the first reply that still came (the host was away, or the command
   * waited in a queue, and acted later), or a timeout at the final deadline. Never settles otherwise.
   */
  late: Promise<ReplyOutcome>;
  /**
   * false: the broker did not confirm the publish (PUBACK) within its deadline. The command then stays
   * queued in the MQTT client, which delivers it once the broker is back, and it is valid until
   * `command.expiresAtMs`: the host may still act on it, so it was not "never asked".
   */
  published: boolean;
  /**
   * Set when the host refused a first command (`seq`) for its time window or its seq, and this one
   * was issued again in the host's time (its clock is `hostClockOffsetMs` ahead of ours).
   */
  reissued?: { seq: number; reason: string; hostClockOffsetMs: number };
}

interface Waiter {
  host: string;
  seq: number;
  secret: Buffer | string;
  onReply: (r: HostReply) => void;
}

/**
 * Routes host replies arriving on one MQTT client to the commands awaiting them. A reply counts only
 * if it verifies with that host's secret and names the seq (or carries the correlation data) of a
 * pending command: a forged `done` cannot make the gateway believe a host is down.
 */
export class HostReplyRouter {
  private readonly subscriptions = new Map<string, Promise<void>>();
  private readonly byKey = new Map<string, Waiter>();
  private readonly byCorrelation = new Map<string, Waiter>();
  private attached = false;
  private readonly listener = (topic: string, payload: Buffer, packet: IPublishPacket): void => this.onMessage(topic, payload, packet);

  constructor(
    private readonly client: MqttClient,
    private readonly baseTopic: string,
    private readonly logger?: Logger,
  ) {}

  /** Subscribes the host's reply topic (once) and registers a waiter; returns its removal. */
  async watch(w: Waiter, correlation: string): Promise<() => void> {
    if (!this.attached) {
      this.client.on('message', this.listener);
      this.attached = true;
    }
    const topic = replyTopic(this.baseTopic, w.host);
    let sub = this.subscriptions.get(topic);
    if (!sub) {
      sub = this.client.subscribeAsync(topic, { qos: 1 }).then(() => undefined);
      this.subscriptions.set(topic, sub);
      sub.catch(() => this.subscriptions.delete(topic));
    }
    await sub;
    const key = `${w.host}\u0000${w.seq}`;
    this.byKey.set(key, w);
    this.byCorrelation.set(correlation, w);
    return () => {
      if (this.byKey.get(key) === w) this.byKey.delete(key);
      if (this.byCorrelation.get(correlation) === w) this.byCorrelation.delete(correlation);
    };
  }

  /** Stops routing (the subscriptions stay with the client's session). */
  detach(): void {
    this.client.off('message', this.listener);
    this.attached = false;
    this.byKey.clear();
    this.byCorrelation.clear();
  }

  private onMessage(topic: string, payload: Buffer, packet: IPublishPacket): void {
    const prefix = `${this.baseTopic}/hosts/`;
    if (!topic.startsWith(prefix) || !topic.endsWith('/reply')) return;
    const host = topic.slice(prefix.length, -'/reply'.length);
    const corr = packet.properties?.correlationData;
    let w = corr ? this.byCorrelation.get(corr.toString('hex')) : undefined;
    if (!w) {
      // MQTT 3.1.1, or a broker that dropped the property: match on the seq the reply names.
      const seq = peekSeq(payload);
      if (seq !== undefined) w = this.byKey.get(`${host}\u0000${seq}`);
    }
    if (!w) return;
    const reply = parseReply(payload, w.secret);
    if (!reply || reply.host !== w.host || (reply.seq !== null && reply.seq !== w.seq)) {
      this.logger?.warn({ topic, host: w.host, seq: w.seq }, 'ignored a host reply that does not verify with the host\'s secret');
      return;
    }
    w.onReply(reply);
  }
}

function peekSeq(payload: Buffer): number | undefined {
  try {
    const seq = (JSON.parse(payload.toString('utf8')) as { seq?: unknown }).seq;
    return typeof seq === 'number' ? seq : undefined;
  } catch {
    return undefined;
  }
}

export interface HostClientOptions {
  /** The host's secret (shared with that host only). */
  secret: Buffer | string;
  /** The gateway's seq counter: one per gateway (FileSeqStore in production). */
  seqStore: SeqStore;
  replies: HostReplyRouter;
  baseTopic: string;
  /** This gateway's name, carried (and signed) in the command. */
  gateway: string;
  /** MQTT protocol of `client`: 5 adds a response topic and correlation data. Default 5. */
  protocolVersion?: 4 | 5;
  /** Deadline for the first reply, ms (the coordinator's hostSyncS). Default 10 s. */
  ackTimeoutMs?: number;
  /** Deadline for the final report, counted from the publish, ms. Default: the host's command timeout is not known here, so 10 min. */
  finalTimeoutMs?: number;
  /** Deadline for the broker's PUBACK, ms. Default 10 s. */
  publishTimeoutMs?: number;
  clock?: Clock;
}

/**
 * Signs and publishes one command to `host`, then awaits its first reply. Resolves with the command,
 * the acknowledgement outcome and a promise of the final report; rejects only when the seq cannot be
 * persisted (E_HOST_STATE) or the publish fails (E_MQTT_TIMEOUT or the client's error): then the
 * host was not asked.
 */
export async function sendHostCommand(client: MqttClient, host: string, params: HostCommandParams, opts: HostClientOptions): Promise<HostCommandHandle> {
  const clock = opts.clock ?? systemClock;
  const t0 = clock.monoMs();
  const now = clock.wallMs();
  let handle = await sendOnce(client, host, params, opts, clock, { datedMs: now, seqFloorMs: now });
  // At most once per reason: a stale clock (`expired`) and then a lost counter (`replayed`, a replaced
  // SD card) take two; the same refusal twice is reported as it is.
  const tried = new Set<string>();
  for (;;) {
    const retry = reissueTime(handle, clock, params.ttlS);
    // The coordinator's deadline covers every command (seq writes and subscriptions included).
    const left = (opts.ackTimeoutMs ?? 10_000) - (clock.monoMs() - t0);
    if (!retry || tried.has(retry.reason) || left <= 0) return handle;
    tried.add(retry.reason);
    const refused = handle.command.seq;
    handle = await sendOnce(client, host, params, { ...opts, ackTimeoutMs: left }, clock, retry.at);
    handle.reissued = { seq: refused, reason: retry.reason, hostClockOffsetMs: retry.hostClockOffsetMs };
  }
}

/** The host refusals that only say our clock or counter is off from the host's, not that the command is wrong. */
const CLOCK_REFUSALS = new Set<string>(['expired', 'not-yet-valid', 'replayed']);

/** A host clock further than this from ours is not believed: a broken or hostile host cannot push our dates or seqs anywhere. */
export const MAX_REISSUE_SKEW_MS = 366 * 86_400_000;

/**
 * When the host refused the command for its time window or its seq, how to issue it again: dated in
 * the host's wall clock, from the signed reply. A Raspberry Pi gateway without a real-time clock, cut
 * off from NTP during the very incident it must act on, can be days behind; its hosts' clocks are
 * right. The validity window exists to bound how long a captured command works on that host, so the
 * host's clock is the one that counts, and a signed refusal for this seq is proof of it (a forged or
 * replayed refusal does not verify, or names another seq).
 * - `expired`, `not-yet-valid`: only the dates move; the seq stays on our own counter, which every
 *   host shares, so one host's clock never lifts the seqs of the others.
 * - `replayed` after a lost counter file on a clock that is behind: the host's clock lifts the seq
 *   floor (nextSeq) above what the host saw. Never when the host's last accepted seq is this very
 *   command's: that is a redelivery of a command the host already took (its `accepted` lost in a
 *   crash), and sending it again would run its shutdown command twice.
 */
function reissueTime(first: HostCommandHandle, clock: Clock, ttlS: number): { at: { datedMs: number; seqFloorMs: number }; reason: string; hostClockOffsetMs: number } | undefined {
  if (first.ack.kind !== 'reply') return undefined;
  const r = first.ack.reply;
  if (r.status !== 'rejected' || r.reason === undefined || !CLOCK_REFUSALS.has(r.reason) || r.seq !== first.command.seq) return undefined;
  const now = clock.wallMs();
  const offset = r.tsMs - now;
  if (Math.abs(offset) > MAX_REISSUE_SKEW_MS || !Number.isSafeInteger(r.tsMs + ttlS * 1000)) return undefined;
  if (r.reason !== 'replayed') return { at: { datedMs: r.tsMs, seqFloorMs: now }, reason: r.reason, hostClockOffsetMs: offset };
  // A host that saw a seq above its own clock (another gateway ahead of us) cannot be outrun by it.
  const lastSeq = lastSeqOfReplayed(r.detail);
  if (lastSeq === undefined || lastSeq <= first.command.seq || lastSeq >= r.tsMs) return undefined;
  return { at: { datedMs: r.tsMs, seqFloorMs: r.tsMs }, reason: r.reason, hostClockOffsetMs: offset };
}

async function sendOnce(client: MqttClient, host: string, params: HostCommandParams, opts: HostClientOptions, clock: Clock, at: { datedMs: number; seqFloorMs: number }): Promise<HostCommandHandle> {
  // The seq is on disk before the command leaves: a gateway restarted right after the publish must
  // not issue the same seq again (the host would reject the new command as a replay).
  const seq = nextSeq(opts.seqStore.read(), at.seqFloorMs);
  opts.seqStore.write(seq);
  const command = signCommand(buildCommand(host, params, { gateway: opts.gateway, seq, nowWallMs: at.datedMs }), opts.secret);
  const correlation = randomBytes(16);
  const corrHex = correlation.toString('hex');

  let resolveAck!: (o: ReplyOutcome) => void;
  let resolveFinal!: (o: ReplyOutcome) => void;
  let resolveLate!: (o: ReplyOutcome) => void;
  const ack = new Promise<ReplyOutcome>((r) => (resolveAck = r));
  const final = new Promise<ReplyOutcome>((r) => (resolveFinal = r));
  const late = new Promise<ReplyOutcome>((r) => (resolveLate = r));
  let ackTimedOut = false;
  let acked = false;
  let finished = false;
  let t0 = clock.monoMs();
  const since = (): number => clock.monoMs() - t0;
  let ackTimer: ReturnType<Clock['setTimeout']> | undefined;
  let finalTimer: ReturnType<Clock['setTimeout']> | undefined;
  let unwatch: () => void = () => undefined;
  const settleFinal = (o: ReplyOutcome): void => {
    if (finished) return;
    finished = true;
    clock.clearTimeout(finalTimer);
    unwatch();
    if (ackTimedOut) resolveLate(o);
    resolveFinal(o);
  };
  const settleAck = (o: ReplyOutcome): void => {
    if (acked) return;
    acked = true;
    clock.clearTimeout(ackTimer);
    resolveAck(o);
  };
  unwatch = await opts.replies.watch(
    {
      host,
      seq,
      secret: opts.secret,
      onReply: (reply) => {
        const o: ReplyOutcome = { kind: 'reply', reply, afterMs: since() };
        // A reply after the acknowledgement deadline: the host acted late, and the trail must say so.
        if (acked && ackTimedOut) resolveLate(o);
        settleAck(o);
        if (reply.final) settleFinal(o);
      },
    },
    corrHex,
  );

  const properties = (opts.protocolVersion ?? 5) === 5 ? { properties: { responseTopic: replyTopic(opts.baseTopic, host), correlationData: correlation } } : {};
  t0 = clock.monoMs();
  const ackTimeoutMs = opts.ackTimeoutMs ?? 10_000;
  let published = true;
  try {
    // Bounded by the acknowledgement deadline too: the caller waits that long at most, whatever the broker does.
    await withTimeout(client.publishAsync(commandTopic(opts.baseTopic, host), JSON.stringify(command), { qos: 1, ...properties }), Math.min(opts.publishTimeoutMs ?? 10_000, ackTimeoutMs), clock, `command ${seq} to ${host}`);
  } catch (err) {
    if (!(err instanceof RackguardError && err.code === 'E_MQTT_TIMEOUT')) {
      unwatch();
      throw err;
    }
    // No PUBACK in time, but the QoS 1 message is still in the client's queue and goes out when the
    // broker is back: the host may act on it until it expires. Not "never asked": keep listening.
    published = false;
  }
  if (!acked) ackTimer = clock.setTimeout(() => {
    ackTimedOut = true;
    settleAck({ kind: 'timeout', afterMs: since() });
  }, Math.max(0, ackTimeoutMs - since()));
  if (!finished) finalTimer = clock.setTimeout(() => settleFinal({ kind: 'timeout', afterMs: since() }), opts.finalTimeoutMs ?? 600_000);
  const ackOutcome = await ack;
  // Without an acknowledgement the final report is still awaited (`late`) up to its own deadline; the caller decides.
  return { command, ack: ackOutcome, final, late, published };
}
