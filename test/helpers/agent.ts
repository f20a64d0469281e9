import { pino } from 'pino';
import type { Agent } from '../../agent/app.js';
import type { Sample } from '../../agent/acquisition/types.js';

export const silentLogger = pino({ level: 'silent' });

/** Records every sample an agent emits, and lets a test await the first batch that matches. */
export class SampleLog {
  readonly all: Sample[] = [];
  private waiters: Array<{ pred: (s: Sample[], all: Sample[]) => boolean; resolve: (s: Sample[]) => void }> = [];

  constructor(agent: Agent) {
    agent.on('samples', (batch) => {
      this.all.push(...batch);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(batch, this.all)) return true;
        w.resolve(batch);
        return false;
      });
    });
  }

  /** Resolves with the first batch (from now on) for which `pred` holds; rejects after timeoutMs. */
  next(pred: (batch: Sample[], all: Sample[]) => boolean, timeoutMs = 10_000, what = 'matching samples'): Promise<Sample[]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== entry);
        const last = this.all.slice(-5).map((s) => `${s.pointId}=${s.value} ${s.quality}${s.reason ? ` (${s.reason})` : ''}`);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last samples: ${last.join('; ')}`));
      }, timeoutMs);
      const entry = {
        pred,
        resolve: (s: Sample[]) => {
          clearTimeout(timer);
          resolve(s);
        },
      };
      this.waiters.push(entry);
    });
  }

  /** Latest sample of a point. */
  latest(pointId: string): Sample | undefined {
    for (let i = this.all.length - 1; i >= 0; i--) if (this.all[i]!.pointId === pointId) return this.all[i];
    return undefined;
  }

  of(pointId: string): Sample[] {
    return this.all.filter((s) => s.pointId === pointId);
  }
}

export const batchOf = (deviceId: string, quality?: Sample['quality']) => (batch: Sample[]) =>
  batch.length > 0 && batch[0]!.deviceId === deviceId && (quality === undefined || batch.every((s) => s.quality === quality));
