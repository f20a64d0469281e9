/**
 * An in-memory outbox with the reader API the sinks use (agent/outputs/context.ts SinkOutbox), for seam
 * tests on virtual time. `replaceFile()` does what the real outbox does when it moves a damaged file
 * aside: seqs restart, every cursor goes back to 0, the generation is bumped.
 */
import { EventEmitter } from 'node:events';
import type { SinkOutbox } from '../../agent/outputs/context.js';
import type { OutboxEntry, OutboxEvent, OutboxRecord, SinkStart } from '../../agent/outputs/outbox.js';

export class MemoryOutbox extends EventEmitter implements SinkOutbox {
  isOpen = true;
  generation = 0;
  records: OutboxRecord[] = [];
  readonly cursors = new Map<string, number>();
  /** Every ack call, in order, with the generation it landed on. */
  readonly acks: Array<{ sink: string; seq: number; generation: number }> = [];
  private lastSeq = 0;

  registerSink(name: string, startAt: SinkStart = 'end'): void {
    if (!this.cursors.has(name)) this.cursors.set(name, startAt === 'end' ? this.lastSeq : 0);
  }

  append(entries: OutboxEntry[]): number {
    for (const entry of entries) {
      const ts = entry.type === 'sample' ? entry.sample.ts : entry.event.ts;
      this.records.push({ seq: ++this.lastSeq, cls: entry.type === 'sample' ? 'telemetry' : 'event', ts, entry });
    }
    this.emit('appended', this.lastSeq);
    return this.lastSeq;
  }

  appendEvent(event: OutboxEvent): number {
    return this.append([{ type: 'event', event }]);
  }

  read(sink: string, limit: number, after?: number): OutboxRecord[] {
    const from = after ?? this.cursorOf(sink);
    return this.records.filter((r) => r.seq > from).slice(0, limit);
  }

  ack(sink: string, seq: number): void {
    this.acks.push({ sink, seq, generation: this.generation });
    if (seq > this.cursorOf(sink)) this.cursors.set(sink, Math.min(seq, this.lastSeq));
  }

  cursorOf(sink: string): number {
    const c = this.cursors.get(sink);
    if (c === undefined) throw new Error(`unknown sink ${sink}`);
    return c;
  }

  depth(sink: string): number {
    const c = this.cursorOf(sink);
    return this.records.filter((r) => r.seq > c).length;
  }

  lagMs(): number {
    return 0;
  }

  flushCursors(): void {}

  /**
   * The damaged file was moved aside and a fresh one started (seqs restart) holding the recovery notice,
   * as the real outbox does when a read() finds the file corrupt (no `appended` is emitted then).
   */
  replaceFile(): void {
    this.records = [];
    this.lastSeq = 0;
    for (const k of this.cursors.keys()) this.cursors.set(k, 0);
    this.generation++;
    const ts = Date.UTC(2026, 0, 1);
    this.records.push({ seq: ++this.lastSeq, cls: 'event', ts, entry: { type: 'event', event: { kind: 'output', code: 'outbox_corrupt', severity: 'error', message: 'outbox was unreadable; moved aside', ts, detail: {} } } });
  }
}
