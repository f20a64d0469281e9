/**
 * SIGTERM with the built agent (dist/agent/main.js: `npm run build` first) while InfluxDB is frozen
 * (SIGSTOP: it accepts TCP connections and never answers, the worst case for a drain) and the MQTT
 * broker is down, with the simulator on Modbus TCP on a free loopback port, real influxd and mosquitto.
 * The agent exits 0 within stopTimeoutS, leaves what neither sink got in the outbox, and the next
 * start, with both servers back, delivers it.
 */
import Database from 'better-sqlite3';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startInfluxd, type Influxd } from '../helpers/influxd.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { freePort } from '../helpers/ports.js';
import type { SpawnedProcess } from '../helpers/proc.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { runBuiltAgent, twoRacksConfig, ZONE_Z1 } from '../helpers/two-racks.js';

const STOP_TIMEOUT_S = 3;

let tmp: TempDir;
let sim: Simulator;
let broker: Mosquitto;
let influx: Influxd;
let file: string;
let outbox: string;
let frozen = false;
const agents: SpawnedProcess[] = [];

function cursors(): { mqtt: number; influx: number; maxSeq: number } {
  const db = new Database(outbox, { readonly: true });
  try {
    const c = Object.fromEntries(db.prepare<[], { sink: string; seq: number }>('SELECT sink, seq FROM cursors').all().map((r) => [r.sink, r.seq]));
    const { maxSeq } = db.prepare<[], { maxSeq: number }>('SELECT MAX(seq) AS maxSeq FROM records').get()!;
    return { mqtt: c.mqtt ?? 0, influx: c.influx ?? 0, maxSeq };
  } finally {
    db.close();
  }
}

async function startAgent(): Promise<SpawnedProcess> {
  const a = await runBuiltAgent(file, { readyLine: /"msg":"rackguard starting"/, timeoutMs: 20_000 });
  agents.push(a);
  return a;
}

let port: number;
let attempt = 0;

/** A configuration of its own for each attempt (its own outbox), so that a retry never shares a file with a failed attempt's agent. */
function writeAttemptConfig(): void {
  const dir = join(tmp.path, `attempt${++attempt}`);
  mkdirSync(dir);
  outbox = join(dir, 'outbox.db');
  const text = `${twoRacksConfig({ bus: { tcpPort: port }, top: `stopTimeoutS: ${STOP_TIMEOUT_S}\n`, device: 'pollIntervalMs: 200' })}${ZONE_Z1}outputs:
  outbox: { path: ${outbox} }
  mqtt: { url: '${broker.url}', clientId: rg-hung-influx, reconnectInitialMs: 200, reconnectMaxMs: 1000 }
  influx: { url: '${influx.url}', database: rg, flushIntervalMs: 200, retryInitialMs: 200, retryMaxMs: 1000 }
`;
  file = join(dir, 'rackguard.yaml');
  writeFileSync(file, text);
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-lifecycle-hung-influx-');
  [broker, influx] = await Promise.all([startMosquitto(), startInfluxd()]);
  await influx.query('CREATE DATABASE rg');
  port = await freePort();
  writeAttemptConfig();
  sim = await startSimulator({ config: parseConfig(readFileSync(file, 'utf8'), 'sim'), tcpPort: port });
}, 60_000);

afterAll(async () => {
  for (const a of agents) await a.stop('SIGKILL');
  if (frozen) influx?.process.proc.kill('SIGCONT');
  await sim?.stop();
  await Promise.all([broker?.cleanup(), influx?.cleanup()]);
  await tmp?.cleanup();
});

describe('SIGTERM while InfluxDB hangs and the broker is down', () => {
  it('exits 0 within stopTimeoutS, keeps the backlog in the outbox, and the next start delivers it', async () => {
    // Servers and simulator are shared (beforeAll): a retry finds them as a failed attempt left them.
    for (const a of agents.splice(0)) await a.stop('SIGKILL');
    if (frozen) influx.process.proc.kill('SIGCONT');
    frozen = false;
    const brokerProc = broker.process.proc;
    if (brokerProc.exitCode !== null || brokerProc.signalCode !== null) await broker.restart();
    if (existsOutbox()) writeAttemptConfig(); // a failed attempt's outbox stays with it
    const first = await startAgent();
    await expect.poll(() => (existsOutbox() ? cursors().influx : 0), { timeout: 15_000 }).toBeGreaterThan(10);

    await broker.stop();
    influx.process.proc.kill('SIGSTOP');
    frozen = true;
    const atOutage = cursors();
    await expect.poll(() => cursors().maxSeq, { timeout: 15_000 }).toBeGreaterThan(atOutage.maxSeq + 30);

    first.proc.kill('SIGTERM');
    // Within the deadline as the agent itself measures it: past it, a part is reported as not stopped
    // in time, and past the backstop the exit is 1.
    expect(await first.exited).toEqual({ code: 0, signal: null });
    expect(first.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(true);
    expect(first.lines.some((l) => /did not stop within the stop deadline|exiting without a clean stop/.test(l))).toBe(false);

    const left = cursors();
    expect(left.influx).toBeLessThan(left.maxSeq);
    expect(left.mqtt).toBeLessThan(left.maxSeq);

    influx.process.proc.kill('SIGCONT');
    frozen = false;
    await broker.restart();
    const second = await startAgent();
    await expect.poll(() => Math.min(cursors().influx, cursors().mqtt), { timeout: 30_000, interval: 300 }).toBeGreaterThanOrEqual(left.maxSeq);
    expect(await second.stop('SIGTERM')).toBe(0);
  });
});

function existsOutbox(): boolean {
  try {
    cursors();
    return true;
  } catch {
    return false;
  }
}
