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
export function rejectionNotice(rec: OutboxRecord, msgs: readonly MqttMessage[], topic: string, reasonCode: number | undefined, why: string, wallMs: number): { message: string; notice: OutputNotice | undefined } {
  const refused = msgs.filter((m) => m.topic === topic);
  const bytes = Math.max(0, ...(refused.length > 0 ? refused : msgs).map((m) => Buffer.byteLength(m.payload)));
  const e = rec.entry;
  const what = e.type === 'sample' ? `sample of ${e.sample.pointId}` : `${e.event.kind} event`;
  const message = `MQTT publish to ${topic} skipped (${what}, ${bytes} bytes): ${why}`;
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
  retryAfterRejection(seq: number, reasonCode: number | undefined): { retry: boolean; attempts: number } {
    const attempts = (this.rejectAttempts.get(seq) ?? 0) + 1;
    if (attempts < MAX_REJECT_ATTEMPTS && reasonCode !== undefined) {
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
