/**
 * Recovery after a broker outage, with the real agent (`rackguard run`, default MQTT reconnect
 * settings) polling two XY-MD02 sensors on the simulator every 500 ms: mosquitto is stopped for 40 s
 * and restarted on the same port. The figure is the time from the broker's return until a persistent
 * QoS 1 subscriber holds every sample taken before that moment (the backlog the outbox kept).
 *   mqtt_backlog_after_outage_s   target <= 15 s
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import mqtt from 'mqtt';
import { parseConfig } from '../../agent/config/load.js';
import { packageRoot } from '../../agent/paths.js';
import { startSimulator } from '../../firmware-sim/index.js';
import { startMosquitto } from '../../scripts/lib/mosquitto.js';
import { startPtyPair } from '../../scripts/lib/pty.js';
import { tempDir } from '../../scripts/lib/tmp.js';
import type { Figures } from '../results.js';

const OUTAGE_MS = 40_000;
const BASE = 'rackguard/bench/recovery';

async function until(fn: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!fn()) {
    if (performance.now() > deadline) throw new Error(`bench recovery: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function run(): Promise<Figures> {
  const tmp = await tempDir('rackguard-bench-recovery-');
  const pty = await startPtyPair();
  const broker = await startMosquitto();
  const text = `version: 1
site: bench
gateway: recovery
logging: { samples: false, level: warn }
buses:
  - { id: l, type: serial, path: ${pty.a}, devices: [{ id: r1, unitId: 1, profile: xy-md02, pollIntervalMs: 500 }, { id: r2, unitId: 2, profile: xy-md02, pollIntervalMs: 500 }] }
outputs:
  outbox: { path: ${join(tmp.path, 'outbox.db')} }
  mqtt: { url: '${broker.url}', clientId: rg-recovery }
`;
  const file = join(tmp.path, 'agent.yaml');
  writeFileSync(file, text);
  const sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b });
  const sub = mqtt.connect(broker.url, { clientId: 'recovery-watcher', clean: false, reconnectPeriod: 200 });
  const received: number[] = [];
  sub.on('message', (topic, payload) => {
    if (topic.startsWith(`${BASE}/sensors/`)) received.push((JSON.parse(payload.toString()) as { tsMs: number }).tsMs);
  });
  await new Promise<void>((resolve, reject) => {
    sub.once('connect', () => sub.subscribe(`${BASE}/sensors/#`, { qos: 1 }, (err) => (err ? reject(err) : resolve())));
    sub.once('error', reject);
  });
  const child = spawn(process.execPath, [join(packageRoot(), 'dist', 'agent', 'main.js'), 'run', '--config', file], { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    await until(() => received.length >= 8, 30_000, 'first samples');
    await broker.stop();
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    const downUntil = Date.now();
    await broker.restart();
    const back = performance.now();
    // Every point is polled each 500 ms: the backlog is in when samples from the last 1.5 s before
    // the restart have arrived for both devices (older ones come first: the outbox is in order).
    await until(() => received.filter((ts) => ts >= downUntil - 1500 && ts <= downUntil).length >= 4, 120_000, 'backlog');
    const seconds = (performance.now() - back) / 1000;
    return {
      mqtt_backlog_after_outage_s: Math.round(seconds * 10) / 10,
      mqtt_backlog_target: '<= 15 s after the broker returns',
      outage_s: OUTAGE_MS / 1000,
      samples_received: received.length,
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
    sub.end(true);
    await sim.stop();
    await pty.stop();
    await broker.cleanup();
    await tmp.cleanup();
  }
}
