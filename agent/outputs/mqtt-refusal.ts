/**
 * What the MQTT sink does with a publish the broker will not take.
 *
 * A refusal (MQTT 5 PUBACK reason code ≥ 0x80, e.g. 0x87 not authorized, 0x97 quota / payload too
 * large) is retried a bounded number of times, then the record is skipped with an
 * `mqtt_publish_rejected` event naming the topic. MQTT 3.1.1 has no such reason codes: a broker drops a
 * refused publish silently there, so use protocolVersion 5 to hear about it. Some refusals close the
 * connection instead (mosquitto 2.0.11 does for a payload above message_size_limit). After a working
 * connection died with publishes in flight, the records that were in flight are sent one at a time
 * ("probe mode"), so the one that kills the connection is identified, and it is skipped with the same
 * event after MAX_CONNECTION_STRIKES. A connection counts as working once our retained `online` status
 * was acknowledged on it, so a broker that is merely flapping does not get records skipped.
 *
 * A topic refused for what it is (MQTT 5 reason 0x87 not authorized or 0x90 topic name invalid), or
 * given up on twice within TOPIC_QUARANTINE_MS when the broker gives no reason (MQTT 3.1.1, or a
 * connection closed on it), is then quarantined for TOPIC_QUARANTINE_MS: its later messages are
 * skipped without being sent, and counted. A single refusal without a reason does not quarantine (it may
 * be one oversized payload), and the events topic is never quarantined on such a guess. mosquitto closes the connection on every refusal, so a sensor whose
 * topic the ACL denies would otherwise cost several reconnects per reading and hold every other record
 * back for ever. The first message after the quarantine is sent again (the ACL may have been fixed);
 * the count of what was skipped unsent is reported then, in an event, and in the next refusal's event.
 */
import { RackguardError } from '../errors.js';
import type { MqttMessage } from './mqtt-layout.js';
import type { OutboxRecord, OutputNotice } from './outbox.js';

/** Refusals (PUBACK reason ≥ 0x80) tried this many times before the record is skipped. */
export const MAX_REJECT_ATTEMPTS = 3;
/**
 * A record published alone (probe mode) on a working connection that dies before its PUBACK this many
 * times is skipped: the broker drops the connection on it (mosquitto 2.0 does so for a payload above
 * message_size_limit under MQTT 5).
 */
export const MAX_CONNECTION_STRIKES = 3;

/** A topic given up on is not sent to for this long (its messages are skipped unsent and counted). */
export const TOPIC_QUARANTINE_MS = 60_000;

/** MQTT 5 reason codes we name in events (MQTT 5.0 spec §3.4.2.1). */
export const REASON_NAMES: Record<number, string> = {
  0x80: 'unspecified error',
  0x83: 'implementation specific error',
  0x87: 'not authorized',
  0x90: 'topic name invalid',
  0x91: 'packet identifier in use',
  0x93: 'receive maximum exceeded',
  0x95: 'packet too large',
  0x97: 'quota exceeded',
  0x99: 'payload format invalid',
};

/** The broker refused one publish (or it cannot be sent at all, reasonCode undefined). */
export class RejectedError extends RackguardError {
  constructor(
    readonly topic: string,
    readonly reasonCode: number | undefined,
    message: string,
  ) {
    super('E_MQTT_REJECTED', message);
  }
}

/** The event a skipped record becomes; undefined for a refused refusal notice (it would loop forever). */
export function rejectionNotice(
  rec: OutboxRecord,
  msgs: readonly MqttMessage[],
  topic: string,
  reasonCode: number | undefined,
  why: string,
  wallMs: number,
  quarantine?: { skippedUnsent: number; quarantined: boolean },
): { message: string; notice: OutputNotice | undefined } {
  const refused = msgs.filter((m) => m.topic === topic);
  const bytes = Math.max(0, ...(refused.length > 0 ? refused : msgs).map((m) => Buffer.byteLength(m.payload)));
  const e = rec.entry;
  const what = e.type === 'sample' ? `sample of ${e.sample.pointId}` : `${e.event.kind} event`;
  const earlier = quarantine && quarantine.skippedUnsent > 0 ? ` (and ${quarantine.skippedUnsent} messages to this topic skipped unsent before it)` : '';
  const next = quarantine?.quarantined ? `; further messages to this topic are skipped unsent for ${TOPIC_QUARANTINE_MS / 1000} s (counted)` : '';
  const message = `MQTT publish to ${topic} skipped (${what}, ${bytes} bytes)${earlier}: ${why}${next}`;
  if (e.type === 'event' && e.event.kind === 'output' && e.event.code === 'mqtt_publish_rejected') return { message, notice: undefined };
  const notice: OutputNotice = {
    kind: 'output',
    code: 'mqtt_publish_rejected',
    severity: 'error',
    message,
    ts: wallMs,
    detail: {
      topic,
      ...(reasonCode !== undefined ? { reasonCode, reason: REASON_NAMES[reasonCode] ?? 'unknown' } : {}),
      seq: rec.seq,
      payloadBytes: bytes,
      ...(quarantine && quarantine.skippedUnsent > 0 ? { skippedUnsentBefore: quarantine.skippedUnsent } : {}),
      ...(quarantine?.quarantined ? { quarantineS: TOPIC_QUARANTINE_MS / 1000 } : {}),
      record: e.type === 'sample' ? { pointId: e.sample.pointId, ts: e.sample.ts } : { kind: e.event.kind, ts: e.event.ts },
    },
  };
  return { message, notice };
}

/** Per-record refusal bookkeeping that outlives one connection (but not an outbox file). */
export class RefusalPolicy {
  private readonly rejectAttempts = new Map<number, number>();
  private readonly strikes = new Map<number, number>();
  /** Records up to this seq are sent one at a time (see the file comment). */
  private probeThroughSeq = 0;
  /** Per record, the topics given up on (reported): its other messages are still delivered. */
  private readonly skippedTopics = new Map<number, Set<string>>();

  /** Per topic given up on: until when (monotonic ms) its messages are skipped unsent, and how many were. */
  private readonly quarantined = new Map<string, { untilMono: number; skippedUnsent: number }>();

  /** When a topic was last given up on without a reason (monotonic ms). */
  private readonly lastGiveUp = new Map<string, number>();

  /**
   * A message to `topic` was given up on: quarantines the topic when the refusal names it (reason 0x87,
   * 0x90) or, with no reason, when it is the second time within TOPIC_QUARANTINE_MS and `guessable`.
   * Returns whether it is now quarantined and how many of its messages were skipped unsent since the
   * last report.
   */
  gaveUp(topic: string, nowMono: number, reasonCode: number | undefined, guessable: boolean): { quarantined: boolean; skippedUnsent: number } {
    const skippedUnsent = this.quarantined.get(topic)?.skippedUnsent ?? 0;
    const named = reasonCode === 0x87 || reasonCode === 0x90;
    const last = this.lastGiveUp.get(topic);
    const again = reasonCode === undefined && guessable && (this.quarantined.has(topic) || (last !== undefined && nowMono - last < TOPIC_QUARANTINE_MS));
    if (reasonCode === undefined) this.lastGiveUp.set(topic, nowMono);
    if (!named && !again) return { quarantined: false, skippedUnsent };
    this.quarantined.set(topic, { untilMono: nowMono + TOPIC_QUARANTINE_MS, skippedUnsent: 0 });
    return { quarantined: true, skippedUnsent };
  }

  /**
   * Whether a message to `topic` is skipped unsent now (then counted). Once the quarantine is over the
   * message is sent again as a trial, and the count skipped meanwhile is returned for a report: a
   * refusal quarantines the topic again, a delivery lifts it (topicAccepted).
   */
  screen(topic: string, nowMono: number): { skip: true } | { skip: false; skippedUnsent: number } {
    const q = this.quarantined.get(topic);
    if (!q) return { skip: false, skippedUnsent: 0 };
    if (nowMono < q.untilMono) {
      q.skippedUnsent++;
      return { skip: true };
    }
    const skippedUnsent = q.skippedUnsent;
    q.skippedUnsent = 0;
    return { skip: false, skippedUnsent };
  }

  /** A message to `topic` was delivered: its quarantine (if any) is over. */
  topicAccepted(topic: string): boolean {
    this.lastGiveUp.delete(topic);
    return this.quarantined.delete(topic);
  }

  /** The record's message to `topic` is given up on (and was reported); the rest of it still goes. */
  skipTopic(seq: number, topic: string): void {
    const set = this.skippedTopics.get(seq) ?? new Set<string>();
    set.add(topic);
    this.skippedTopics.set(seq, set);
    this.rejectAttempts.delete(seq);
    this.strikes.delete(seq);
  }

  isSkipped(seq: number, topic: string): boolean {
    return this.skippedTopics.get(seq)?.has(topic) ?? false;
  }

  /** Counts one refusal of `seq`; true when it may be tried again. */
  retryAfterRejection(seq: number, reasonCode: number | undefined, topic?: string): { retry: boolean; attempts: number } {
    const attempts = (this.rejectAttempts.get(seq) ?? 0) + 1;
    // A topic already quarantined was refused again: no point in more attempts.
    const known = topic !== undefined && this.quarantined.has(topic);
    if (attempts < MAX_REJECT_ATTEMPTS && reasonCode !== undefined && !known) {
      this.rejectAttempts.set(seq, attempts);
      return { retry: true, attempts };
    }
    this.rejectAttempts.delete(seq);
    return { retry: false, attempts };
  }

  /** `seq` was delivered: forget its refusals and strikes. */
  delivered(seq: number): void {
    this.rejectAttempts.delete(seq);
    this.strikes.delete(seq);
    this.skippedTopics.delete(seq);
  }

  /** Whether records after `cursor` must go one at a time. */
  probing(cursor: number): boolean {
    return cursor < this.probeThroughSeq;
  }

  /**
   * A working connection died. With several records in flight, probe the ones read so far (through
   * `readAfter`) one at a time; with one record alone in flight while probing, strike it. Returns true
   * when that record has now had MAX_CONNECTION_STRIKES and must be skipped.
   */
  connectionLost(inFlight: number, headSeq: number | undefined, cursor: number, readAfter: number): { skip: boolean; strikes: number } {
    if (headSeq === undefined) return { skip: false, strikes: 0 };
    if (inFlight > 1 || cursor >= this.probeThroughSeq) {
      this.probeThroughSeq = Math.max(this.probeThroughSeq, readAfter);
      return { skip: false, strikes: 0 };
    }
    const n = (this.strikes.get(headSeq) ?? 0) + 1;
    this.strikes.set(headSeq, n);
    if (n < MAX_CONNECTION_STRIKES) return { skip: false, strikes: n };
    this.strikes.delete(headSeq);
    return { skip: true, strikes: n };
  }

  /** The outbox file was replaced: its seqs restarted, so none of this applies any more. */
  reset(): void {
    this.rejectAttempts.clear();
    this.strikes.clear();
    this.skippedTopics.clear();
    this.probeThroughSeq = 0;
  }
}
