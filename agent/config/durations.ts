/**
 * Upper bounds of durations. Every duration in the schema has one: Node turns a timer delay above
 * 2^31−1 ms (24.8 days) into 1 ms, so `healthIntervalS: 2592000` logged 26,000 lines in 3 s and
 * `pollIntervalMs: 1e12` polled in a loop with TimeoutOverflowWarnings. The bounds are far below that
 * limit and well above any sensible setting (test/unit/config.test.ts walks the schema to check that
 * no field named `…Ms` or `…S` is left unbounded).
 */
export const SECOND_MS = 1000;
export const MINUTE_MS = 60 * SECOND_MS;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;
export const HOUR_S = HOUR_MS / 1000;
export const DAY_S = DAY_MS / 1000;

/** `86400000` ms → `1 day`, `21600` s → `6 hours`: the limit in an error message, for a human. */
export function humanDuration(ms: number): string {
  const units: Array<[number, string]> = [
    [DAY_MS, 'day'],
    [HOUR_MS, 'hour'],
    [MINUTE_MS, 'minute'],
    [SECOND_MS, 'second'],
  ];
  for (const [size, name] of units) {
    if (ms >= size && ms % size === 0) {
      const n = ms / size;
      return `${n} ${name}${n === 1 ? '' : 's'}`;
    }
  }
  return `${ms} ms`;
}
