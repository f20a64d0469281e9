/**
 * The outbox's memory tail: records appended and not yet in the file, in seq order, all above the
 * file's last committed seq. Between group commits it holds one commit interval's worth; while the
 * file cannot be written it is the bounded queue that live sinks read from.
 */
import type { PendingRecord } from './outbox-store.js';

/** When samples overflow the bound, they are cut down to this fraction of it, so the cut runs in batches. */
const SAMPLE_CUT_FRACTION = 0.9;

export class MemoryTail {
  private records: PendingRecord[] = [];
  events = 0;
  telemetry = 0;

  get length(): number {
    return this.records.length;
  }

  get first(): PendingRecord | undefined {
    return this.records[0];
  }

  push(r: PendingRecord): void {
    this.records.push(r);
    if (r.cls === 'event') this.events++;
    else this.telemetry++;
  }

  /** Every record, in seq order (not a copy: do not keep it across a change). */
  all(): readonly PendingRecord[] {
    return this.records;
  }

  eventsOnly(): PendingRecord[] {
    return this.records.filter((r) => r.cls === 'event');
  }

  /** Empties the tail; returns what it held. */
  clear(): PendingRecord[] {
    const out = this.records;
    this.records = [];
    this.events = 0;
    this.telemetry = 0;
    return out;
  }

  /** Removes the samples; returns them. */
  takeTelemetry(): PendingRecord[] {
    if (this.telemetry === 0) return [];
    const taken: PendingRecord[] = [];
    this.records = this.records.filter((r) => {
      if (r.cls === 'event') return true;
      taken.push(r);
      return false;
    });
    this.telemetry = 0;
    return taken;
  }

  /**
   * Keeps at most `cap` events and `cap` samples, dropping the oldest (samples down to 90 % of the cap);
   * a record `keep` says yes to is never dropped. Returns what went.
   */
  bound(cap: number, keep: (r: PendingRecord) => boolean): { events: PendingRecord[]; samples: PendingRecord[] } {
    const dropped = { events: [] as PendingRecord[], samples: [] as PendingRecord[] };
    if (this.events <= cap && this.telemetry <= cap) return dropped;
    let dropEvents = Math.max(0, this.events - cap);
    let dropSamples = this.telemetry > cap ? this.telemetry - Math.floor(cap * SAMPLE_CUT_FRACTION) : 0;
    this.records = this.records.filter((r) => {
      if (r.cls === 'event' && dropEvents > 0 && !keep(r)) {
        dropEvents--;
        dropped.events.push(r);
        return false;
      }
      if (r.cls === 'telemetry' && dropSamples > 0) {
        dropSamples--;
        dropped.samples.push(r);
        return false;
      }
      return true;
    });
    this.events -= dropped.events.length;
    this.telemetry -= dropped.samples.length;
    return dropped;
  }

  /** Index of the first record with seq > `seq`. */
  indexAbove(seq: number): number {
    let lo = 0;
    let hi = this.records.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.records[mid]!.seq <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  countAbove(seq: number): number {
    return this.records.length - this.indexAbove(seq);
  }

  firstAbove(seq: number): PendingRecord | undefined {
    return this.records[this.indexAbove(seq)];
  }

  /** Up to `limit` records with seq > `seq`. */
  sliceAbove(seq: number, limit: number): PendingRecord[] {
    const i = this.indexAbove(seq);
    return this.records.slice(i, i + Math.max(0, limit));
  }

  /** Shifts every seq by `offset` (the file opened late and already holds those seqs). */
  renumber(offset: number): void {
    for (const r of this.records) r.seq += offset;
  }

  /** Gives every record a new seq from `next`, in order. */
  renumberFrom(next: () => number): void {
    for (const r of this.records) r.seq = next();
  }
}
