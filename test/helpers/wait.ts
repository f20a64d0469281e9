/**
 * Waiting in tests: on an event where there is one, on a poll of external state only where there is
 * none (a database, a file). Every wait has a deadline and its failure names what was awaited.
 */
import type { EventEmitter } from 'node:events';

/** Something with on/off for one event, as Node's EventEmitter and MQTT.js's client have. */
export interface Emitter {
  on(event: string, listener: (...args: never[]) => void): unknown;
  off(event: string, listener: (...args: never[]) => void): unknown;
}

/**
 * Resolves with `check()`'s result once it is neither undefined nor false, checked now and again at
 * each `event` of `emitter`; rejects after `timeoutMs` with `what` (and `detail()`, if given).
 */
export function waitFor<T>(
  emitter: Emitter | EventEmitter,
  event: string,
  check: () => T | undefined | false,
  timeoutMs: number,
  what: string,
  detail?: () => string,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const first = check();
    if (first !== undefined && first !== false) return resolve(first);
    const on = (): void => {
      const v = check();
      if (v === undefined || v === false) return;
      clearTimeout(timer);
      (emitter as Emitter).off(event, on);
      resolve(v);
    };
    const timer = setTimeout(() => {
      (emitter as Emitter).off(event, on);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail ? `; ${detail()}` : ''}`));
    }, timeoutMs);
    (emitter as Emitter).on(event, on);
  });
}

/** `p`, or a rejection naming `what` when it has not settled within `timeoutMs`. */
export function withTimeout<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/** Polls external state (a database has no event to await) until `fn` holds or the deadline passes. */
export async function until<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, what: string): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
