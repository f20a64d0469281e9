/**
 * Builds the action engine's integration rig: a config with one zone `za` of two sensors, the engine
 * recording into an array, zone-level events for that zone (the engine's seam), and a marking hook.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { systemClock } from '../../agent/clock.js';
import { ActionEngine } from '../../agent/actions/engine.js';
import { parseConfig } from '../../agent/config/load.js';
import type { Config } from '../../agent/config/model.js';
import type { DetectorEvent, Level } from '../../agent/detection/types.js';
import type { ActionEvent } from '../../agent/outputs/events.js';
import { silentLogger } from './agent.js';

/** A zone_level event for zone `za`, both sensors agreeing; `critical` sets their critical flags and count. */
export function zoneLevel(from: Level, level: Level, critical: boolean): DetectorEvent {
  const crit = critical ? 2 : 0;
  const s = (id: string) => ({ pointId: id, tempC: 36, status: 'good', rateShortCPerMin: 2, rateLongCPerMin: 1, etaCriticalS: 0, flags: critical ? ['alarm_temp', 'critical_temp'] : [] });
  return { kind: 'zone_level', zone: 'za', from, level, reason: `to ${level}`, mono: performance.now(), ts: Date.now(), evidence: { sensors: [s('r1.temperature'), s('r2.temperature')], chillers: [], agreeingAlarm: 2, agreeingCritical: crit, k: 2, etaCriticalS: 0 } };
}

/** Parses (as `dir`/c.yaml) a config of zone `za` (r1, r2), an outbox, a broker and `actions` (the block's body, indented). */
export function rigConfig(dir: string, mqttUrl: string, actions: string): Config {
  const text = `version: 1
buses:
  - { id: l, type: serial, path: /dev/null, devices: [{ id: r1, unitId: 1, profile: xy-md02 }, { id: r2, unitId: 2, profile: xy-md02 }] }
zones:
  - { id: za, sensors: [r1.temperature, r2.temperature] }
outputs:
  outbox: { path: outbox.db }
  mqtt: { url: "${mqttUrl}" }
actions:
${actions}`;
  return parseConfig(text, join(dir, 'c.yaml'), { baseDir: dir });
}

/** An ActionEngine on the system clock for `config` (site s, gateway g), with the records it hands on. */
export function rigEngine(config: Config, opts: { dryRun?: boolean } = {}): { engine: ActionEngine; records: ActionEvent[] } {
  const records: ActionEvent[] = [];
  const engine = new ActionEngine(config.actions!, {
    clock: systemClock,
    logger: silentLogger,
    site: 's',
    gateway: 'g',
    zones: config.zones,
    mqtt: config.outputs!.mqtt!,
    ...(opts.dryRun === undefined ? {} : { dryRun: opts.dryRun }),
    record: (e) => records.push(e),
  });
  return { engine, records };
}

/** An executable `dir`/hook.sh that appends its first argument to `dir`/marks, and a reader of those marks. */
export function markingHook(dir: string): { hook: string; marks: () => string[] } {
  const hook = join(dir, 'hook.sh');
  const file = join(dir, 'marks');
  writeFileSync(hook, `#!/bin/sh\necho "$1" >> ${file}\n`);
  chmodSync(hook, 0o755);
  return { hook, marks: () => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n') : []) };
}

/** Polls `pred` until it holds; on the deadline fails naming `what` with `detail()` (the records so far). */
export async function pollUntil(pred: () => boolean, what: string, detail: () => string, timeoutMs: number): Promise<void> {
  await expect
    .poll(pred, { timeout: timeoutMs, interval: 20 })
    .toBe(true)
    .catch((err: unknown) => {
      throw new Error(`${what}: ${(err as Error).message}; ${detail()}`);
    });
}

/** The `actions` body of the inhibit tests: topic site/maintenance; `hook page` on alarm, `hook failover` on critical. */
export function inhibitActions(hook: string): string {
  return `  stateDir: state
  inhibit: { mqttTopic: site/maintenance }
  policies:
    - { level: alarm, actions: [{ kind: exec, name: page, argv: ["${hook}", page] }] }
    - { level: critical, actions: [{ kind: exec, name: failover, argv: ["${hook}", failover] }] }
`;
}
