/**
 * Builds the config text of the agent tests' usual site (lab / gw1, two xy-md02 racks r1 and r2 on one
 * bus) and runs the built agent (dist/agent/main.js: `npm run build` first) on such a file.
 */
import { join } from 'node:path';
import { spawnAndWait, type SpawnAndWaitOptions, type SpawnedProcess } from './proc.js';

/** The built agent's entry point. */
export const BUILT_MAIN = join(import.meta.dirname, '..', '..', 'dist', 'agent', 'main.js');

/** Zone z1 of both racks' temperatures (the `zones:` block). */
export const ZONE_Z1 = `zones:
  - { id: z1, sensors: [r1.temperature, r2.temperature] }
`;

export interface TwoRacksOptions {
  /** Where r1 (unit 1) and r2 (unit 2) answer: a serial path (bus `l`) or a loopback Modbus TCP port (bus `t`). */
  bus: { serialPath: string } | { tcpPort: number };
  /** The rest of each device's flow map, e.g. `pollIntervalMs: 200`. */
  device: string;
  /** Top-level lines placed after `gateway:`, each ending in a newline (e.g. `stopTimeoutS: 3\n`). */
  top?: string;
}

/** The config text up to and including the bus (no zones, no outputs): version 1, site lab, gateway gw1, no sample logging. */
export function twoRacksConfig(o: TwoRacksOptions): string {
  const bus = 'serialPath' in o.bus ? `  - id: l\n    type: serial\n    path: ${o.bus.serialPath}\n` : `  - id: t\n    type: tcp\n    host: 127.0.0.1\n    port: ${o.bus.tcpPort}\n`;
  return `version: 1
site: lab
gateway: gw1
${o.top ?? ''}logging: { samples: false }
buses:
${bus}    devices:
      - { id: r1, unitId: 1, profile: xy-md02, ${o.device} }
      - { id: r2, unitId: 2, profile: xy-md02, ${o.device} }
`;
}

export interface LabRackOptions {
  gateway: string;
  /** The agent's end of the pty (bus `l`). */
  serialPath: string;
  /** XY-MD02 racks r1…rN on unit ids 1…N. */
  racks: number;
  pollIntervalMs: number;
  /** chiller1 (generic-chiller, unit 10) on the same bus. */
  chiller?: boolean;
  healthIntervalS: number;
}

/** The config text up to and including the bus of site lab: N racks, optionally chiller1, no sample logging. */
export function labRackConfig(o: LabRackOptions): string {
  const poll = `pollIntervalMs: ${o.pollIntervalMs}`;
  const racks = Array.from({ length: o.racks }, (_, i) => `      - { id: r${i + 1}, unitId: ${i + 1}, profile: xy-md02, ${poll} }\n`).join('');
  const chiller = o.chiller ? `      - { id: chiller1, unitId: 10, profile: generic-chiller, ${poll} }\n` : '';
  return `version: 1
site: lab
gateway: ${o.gateway}
logging: { samples: false, healthIntervalS: ${o.healthIntervalS} }
buses:
  - id: l
    type: serial
    path: ${o.serialPath}
    devices:
${racks}${chiller}`;
}

/** `node dist/agent/main.js run --config <file>`, resolved once a line matches `opts.readyLine`. */
export function runBuiltAgent(file: string, opts: SpawnAndWaitOptions): Promise<SpawnedProcess> {
  return spawnAndWait(process.execPath, [BUILT_MAIN, 'run', '--config', file], opts);
}
