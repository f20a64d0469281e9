/**
 * The MQTT delivery window of one connection: at most `limit()` outbox records awaiting PUBACK, read
 * after the sink's cursor in append order. The cursor advances only over the contiguous acknowledged
 * prefix, so nothing is skipped and a reconnect resends from the first unacknowledged record, in order
 * (a subscriber may see a record twice: at-least-once).
 *
 * Two rules keep an old answer from doing harm:
 * - Acks carry the outbox generation. When the outbox replaced a damaged file its seqs restart, and a
 *   PUBACK for a record of the old file must not move the new file's cursor: the window notices the
 *   generation change, drops what it had in flight and starts again from the new cursor.
 * - Retained topics are newest-wins. A retained message (zone state, device availability) is never
 *   (re)sent after a newer record's message for the same topic was sent: a refused publish retried
 *   later would otherwise leave an old zone state retained. Anything newer that was sent but not yet
 *   acknowledged is resent after it anyway, in order.
 *
 * A PUBACK alone does not move the cursor: the connection must also survive it. mosquitto 2.0 answers a
 * publish it refuses (ACL, message_size_limit) with a PUBACK and then closes the connection; under MQTT
 * 3.1.1 that PUBACK carries no reason code, so taking it at its word would ack, and silently lose, every
 * refused record. A record is therefore confirmed only by a later packet from the broker on the same
 * connection (the next PUBACK, or the PINGRESP to a ping the window asks for when it has nothing else in
 * flight); the packets of one connection arrive in order, so that packet proves the broker went on after
 * it. A record acknowledged and then followed by the connection's death stays unconfirmed, is resent
 * alone (./mqtt-refusal.ts, probe mode), and is skipped with an event naming its topic if that happens
 * again and again.
 */
import type { Logger } from 'pino';
import { asError } from '../errors.js';
import type { SinkOutbox } from './context.js';
import type { MqttMessage } from './mqtt-layout.js';
import { RejectedError, type RefusalPolicy } from './mqtt-refusal.js';
import type { OutboxRecord } from './outbox.js';

const READ_CHUNK = 500;

export interface WindowSlot {
  rec: OutboxRecord;
  /** Every message of the record (for reports). */
  msgs: MqttMessage[];
  /** Messages not acknowledged yet: a retry after a refusal sends only these. */
  pending: MqttMessage[];
  /** Messages sent at least once (not superseded, not given up on before sending). */
  sent: MqttMessage[];
  done: boolean;
  /** Acknowledged and then confirmed by a later packet of the same connection (see the file comment). */
  confirmed: boolean;
  /** False once the window dropped it (generation change, close): its late answers are ignored. */
  live: boolean;
  /** Bumped per send and on its first failure: answers to an earlier send are ignored. */
  attempt: number;
}

/** Highest seq whose message was sent per retained topic, within one outbox generation. */
export class RetainedOrder {
  private readonly sentSeq = new Map<string, number>();

  /** True when a newer record's message for `topic` was already sent. */
  superseded(topic: string, seq: number): boolean {
    return (this.sentSeq.get(topic) ?? -Infinity) > seq;
  }

  noteSent(topic: string, seq: number): void {
    if (!this.superseded(topic, seq)) this.sentSeq.set(topic, seq);
  }

  reset(): void {
    this.sentSeq.clear();
  }
}

export interface DeliveryWindowDeps {
  outbox: SinkOutbox;
  /** Cursor name in the outbox. */
  cursor: string;
  logger: Logger;
  /** Records allowed in flight now (1 in probe mode). */
  limit(): number;
  messagesFor(rec: OutboxRecord): MqttMessage[];
  /** Publishes one message; a RejectedError is a refusal, anything else a dead link. */
  publish(m: MqttMessage): Promise<void>;
  refusals: RefusalPolicy;
  retained: RetainedOrder;
  /** A record is skipped for good (refused too often): report it. */
  skip(slot: WindowSlot, topic: string, reasonCode: number | undefined, why: string): void;
  /** A publish timed out or the link failed: the sink drops the connection (and this window). */
  linkFailed(why: string): void;
  /** Messages acknowledged, for stats. */
  delivered(messages: number): void;
  /** Runs bookkeeping from promise callbacks: an outbox error there is logged, never unhandled. */
  guard(what: string, fn: () => void): void;
  /**
   * Every record in the window is acknowledged but not yet confirmed: ask the broker for any packet
   * (a PINGREQ) so that its answer confirms them (the sink then calls confirm()).
   */
  requestConfirmation(): void;
  /** A record's publishes were acknowledged and confirmed (the sink keeps the newest retained states). */
  confirmed?(slot: WindowSlot): void;
}

export class DeliveryWindow {
  private slots: WindowSlot[] = [];
  private readAfter: number;
  private generation: number;
  private feeding = true;
  private closed = false;
  /** A confirmation was requested and its answer has not come yet. */
  private confirmationAsked = false;
  private readonly idleWaiters: Array<() => void> = [];

  constructor(private readonly deps: DeliveryWindowDeps) {
    this.readAfter = deps.outbox.cursorOf(deps.cursor);
    this.generation = deps.outbox.generation;
  }

  get size(): number {
    return this.slots.length;
  }

  get head(): WindowSlot | undefined {
    return this.slots[0];
  }

  /** The last seq read into the window. */
  get lastRead(): number {
    return this.readAfter;
  }

  /** Fills the window up to limit() with the records after the last one read. */
  pump(): void {
    const { outbox, cursor } = this.deps;
    if (this.closed || !this.feeding || !outbox.isOpen) return;
    if (outbox.generation !== this.generation) this.restart();
    for (;;) {
      const room = this.deps.limit() - this.slots.length;
      if (room <= 0) break;
      const generation = outbox.generation;
      const recs = outbox.read(cursor, Math.min(READ_CHUNK, room), this.readAfter);
      if (outbox.generation !== generation) {
        // The read itself found the file damaged and replaced it: start over on the new one.
        this.restart();
        continue;
      }
      if (recs.length === 0) break;
      for (const rec of recs) {
        this.readAfter = rec.seq;
        // A message given up on earlier (reported) is not sent again; the record's others still are.
        const msgs = this.deps.messagesFor(rec).filter((m) => !this.deps.refusals.isSkipped(rec.seq, m.topic));
        const slot: WindowSlot = { rec, msgs, pending: [...msgs], sent: [], done: false, confirmed: false, live: true, attempt: 0 };
        this.slots.push(slot);
        this.send(slot);
      }
    }
  }

  /** No new records from now on (stopping); what is in flight still completes. */
  stopFeeding(): void {
    this.feeding = false;
    this.notifyIfIdle();
  }

  /** Resolves once nothing is in flight (or the window was closed). */
  idle(): Promise<void> {
    if (this.closed || this.slots.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * A packet arrived from the broker: every record already acknowledged before it is confirmed (the
   * connection outlived its PUBACK). Called before the packet itself is handled, so the PUBACK it may
   * carry confirms only the records acknowledged earlier.
   */
  confirm(): void {
    if (this.closed) return;
    this.confirmationAsked = false;
    let any = false;
    for (const s of this.slots) {
      if (s.done && !s.confirmed) {
        s.confirmed = true;
        // Its refusal bookkeeping is forgotten when it is acked (advance()), not now: a slot ahead of it
        // may still be in flight, and if the connection dies it is re-read and must not report again.
        this.deps.confirmed?.(s);
        any = true;
      }
    }
    if (any) this.advance();
  }

  /** The connection is gone: every answer still to come is ignored; nothing more is acked. */
  close(): void {
    this.closed = true;
    for (const s of this.slots) s.live = false;
    this.slots = [];
    this.notifyIfIdle();
  }

  private send(slot: WindowSlot): void {
    const { retained } = this.deps;
    const seq = slot.rec.seq;
    // Newest-wins per retained topic (see the file comment): a superseded state is not sent at all.
    slot.pending = slot.pending.filter((m) => !(m.retain && retained.superseded(m.topic, seq)));
    for (const m of slot.pending) if (m.retain) retained.noteSent(m.topic, seq);
    const sent = [...slot.pending];
    for (const m of sent) if (!slot.sent.includes(m)) slot.sent.push(m);
    const attempt = ++slot.attempt;
    let left = sent.length;
    // The first refusal or failure decides at once, as a broker may close the connection right after
    // refusing (mosquitto 2.0 does after an ACL denial under MQTT 5): waiting for the other messages'
    // acknowledgements would let that close count as a dead link instead of as a refusal.
    const current = (): boolean => slot.live && !this.closed && slot.attempt === attempt;
    const succeeded = (): void => {
      if (!current() || --left > 0) return;
      this.deps.guard('mqtt delivery', () => {
        this.deps.delivered(sent.length);
        slot.done = true;
        // Nothing was sent (every message superseded): there is no PUBACK to confirm.
        if (sent.length === 0) slot.confirmed = true;
        this.advance();
      });
    };
    const failed = (err: unknown): void => {
      if (!current()) return;
      slot.attempt++;
      this.deps.guard('mqtt delivery', () => {
        // Timeout or a dead link: everything in flight is in doubt; start over from the cursor.
        if (!(err instanceof RejectedError)) this.deps.linkFailed(asError(err).message);
        else this.onRefused(slot, err);
      });
    };
    if (sent.length === 0) {
      left = 1;
      queueMicrotask(succeeded);
    }
    for (const m of sent) {
      this.deps.publish(m).then(() => {
        slot.pending = slot.pending.filter((p) => p !== m);
        succeeded();
      }, failed);
    }
  }

  private onRefused(slot: WindowSlot, err: RejectedError): void {
    const { retry, attempts } = this.deps.refusals.retryAfterRejection(slot.rec.seq, err.reasonCode, err.topic);
    if (retry) {
      this.send(slot);
      return;
    }
    this.deps.skip(slot, err.topic, err.reasonCode, `${err.message}; gave up after ${attempts} attempt(s)`);
    // Only the refused message is given up on: the record's other messages (a zone state's event on
    // the events topic) still go.
    this.deps.refusals.skipTopic(slot.rec.seq, err.topic);
    slot.pending = slot.pending.filter((m) => m.topic !== err.topic);
    slot.sent = slot.sent.filter((m) => m.topic !== err.topic);
    if (slot.pending.length > 0) {
      this.send(slot);
      return;
    }
    // Reported, and nothing left to send: the refusal was the broker's answer, nothing to confirm.
    slot.done = true;
    slot.confirmed = true;
    this.advance();
  }

  /**
   * Gives up on the head record's message to `topic` for good (the connection died on it too often).
   * Acks past the record when nothing else of it is left to send; otherwise the next connection
   * re-reads it and sends the rest.
   */
  skipHead(topic: string, why: string): void {
    const head = this.slots[0];
    if (!head || this.deps.outbox.generation !== this.generation) return;
    this.deps.skip(head, topic, undefined, why);
    this.deps.refusals.skipTopic(head.rec.seq, topic);
    if (head.done || head.pending.every((m) => m.topic === topic)) {
      this.deps.refusals.delivered(head.rec.seq);
      this.deps.outbox.ack(this.deps.cursor, head.rec.seq);
    }
  }

  /** Acks the contiguous confirmed prefix (only for the file it was read from), then refills. */
  private advance(): void {
    let acked: number | undefined;
    while (this.slots[0]?.confirmed) {
      acked = this.slots.shift()!.rec.seq;
      // Acked: its refusal bookkeeping (the topics given up on) is needed no more.
      this.deps.refusals.delivered(acked);
    }
    if (acked !== undefined) {
      if (this.deps.outbox.generation === this.generation) this.deps.outbox.ack(this.deps.cursor, acked);
      else this.restart();
    }
    this.notifyIfIdle();
    this.pump();
    this.askConfirmationIfStalled();
  }

  /** Nothing left in flight but acknowledged records awaiting confirmation: ask for a packet. */
  private askConfirmationIfStalled(): void {
    if (this.closed || this.confirmationAsked || this.slots.length === 0) return;
    if (!this.slots.every((s) => s.done)) return;
    this.confirmationAsked = true;
    this.deps.requestConfirmation();
  }

  /** The outbox file was replaced: seqs restarted, so what is in flight belongs to the old file. */
  private restart(): void {
    const { outbox } = this.deps;
    this.deps.logger.warn({ from: this.generation, to: outbox.generation, dropped: this.slots.length }, 'mqtt: outbox file was replaced; restarting delivery from its cursor');
    for (const s of this.slots) s.live = false;
    this.slots = [];
    this.confirmationAsked = false;
    this.generation = outbox.generation;
    this.readAfter = outbox.cursorOf(this.deps.cursor);
    this.deps.retained.reset();
    this.deps.refusals.reset();
    this.notifyIfIdle();
  }

  private notifyIfIdle(): void {
    if (!this.closed && this.slots.length > 0) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }
}
