/**
 * What the sinks need besides the outbox: credentials read from files or the environment, and the
 * site, gateway and point metadata built once from the resolved config. The schema of `outputs:`
 * lives with the rest of the config schema (agent/config/outputs-schema.ts).
 */
import { readFileSync } from 'node:fs';
import type { Config } from '../config/model.js';
import { RackguardError } from '../errors.js';
import type { OutboxEvent, OutboxRecord, SinkStart } from './outbox.js';

/**
 * A credential from a file (first line, trailing whitespace trimmed) or else from an environment
 * variable; undefined when neither is set. Never from argv: `ps` shows argv to every user.
 */
export function readCredential(file: string | undefined, envName: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (file !== undefined) {
    try {
      return readFileSync(file, 'utf8').split(/\r?\n/)[0]!.trimEnd();
    } catch (err) {
      throw new RackguardError('E_SECRET_READ', `cannot read ${envName.toLowerCase()} file ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  const v = env[envName];
  return v === undefined || v === '' ? undefined : v;
}

/** What a sink knows about a point besides its sample: where it sits, for tags and discovery. */
export interface PointInfo {
  id: string;
  deviceId: string;
  unit: string;
  kind: string;
  /** Zones whose sensors include this point (the first one tags InfluxDB points). */
  zones: string[];
  /** Set for chiller status points: the chiller and the role (running, alarm, supplyTemp, returnTemp). */
  chiller?: { id: string; role: string };
}

/** Site, gateway and point metadata the sinks need; built once from the resolved config. */
export interface OutputContext {
  site: string;
  gateway: string;
  points: ReadonlyMap<string, PointInfo>;
  zones: readonly string[];
}

export function outputContextFromConfig(config: Pick<Config, 'site' | 'gateway' | 'points' | 'zones' | 'chillers'>): OutputContext {
  const points = new Map<string, PointInfo>();
  for (const [id, p] of config.points) points.set(id, { id, deviceId: p.deviceId, unit: p.unit, kind: p.kind, zones: [] });
  for (const z of config.zones) for (const s of z.sensors) points.get(s)?.zones.push(z.id);
  for (const c of config.chillers) {
    for (const role of ['running', 'alarm', 'supplyTemp', 'returnTemp'] as const) {
      const pid = c[role];
      const p = pid === undefined ? undefined : points.get(pid);
      if (p) p.chiller = { id: c.id, role };
    }
  }
  return { site: config.site, gateway: config.gateway, points, zones: config.zones.map((z) => z.id) };
}

/**
 * What a sink uses of the outbox: its own cursor (registerSink, read, ack, cursorOf, depth, lagMs,
 * flushCursors), the `appended` wake-up, the file `generation` (bumped when a damaged file was replaced
 * and seqs restarted) and appendEvent for what the sink itself has to report. A structural type, so a
 * seam test can hand a sink an in-memory outbox.
 */
export interface SinkOutbox {
  readonly isOpen: boolean;
  readonly generation: number;
  registerSink(name: string, startAt?: SinkStart): void;
  read(sink: string, limit: number, after?: number): OutboxRecord[];
  ack(sink: string, seq: number): void;
  cursorOf(sink: string): number;
  depth(sink: string): number;
  lagMs(sink: string): number;
  flushCursors(): void;
  appendEvent(event: OutboxEvent): number;
  on(event: 'appended', listener: (lastSeq: number) => void): unknown;
  off(event: 'appended', listener: (lastSeq: number) => void): unknown;
}
