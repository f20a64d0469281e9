/**
 * SIGHUP reload with the real binary (issue 9 item 3). A bad configuration leaves the agent running on
 * the old one and reports every problem (log lines and a config_reload_failed event that reaches MQTT).
 * A good one, applied while the broker is down: the new poll interval takes effect, the outbox backlog
 * survives and is delivered when the broker is back, and the zone held in warning by the simulator
 * keeps its level and its sensors' rate estimators (no fresh start: no new zone event, rates known at
 * once). The MQTT sink, whose section changed, restarts and resumes from its cursor.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import type { StateJson } from '../../agent/observe/state.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startSubscriber, type Subscriber } from '../helpers/mqtt.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const BASE = 'rackguard/lab/gw1';

/** Everything one test needs, started per attempt: a retry never meets a previous attempt's agent, broker or file. */
interface Rig {
  tmp: TempDir;
  pty: PtyPair;
  sim: Simulator;
  broker: Mosquitto;
  sub: Subscriber;
  agent: SpawnedProcess;
  file: string;
  url: string;
}

function config(rig: Pick<Rig, 'tmp' | 'pty' | 'broker'>, o: { pollMs: number; bad?: boolean; reconnectMaxMs?: number; outbox?: string }): string {
  return `version: 1
site: lab
gateway: gw1
logging: { samples: false, healthIntervalS: 1 }
detection: { shortWindowS: 6, longWindowS: 16, glitchJumpC: 20, staleAfterS: 10 }
buses:
  - id: l
    type: serial
    path: ${rig.pty.a}
    devices:
      - { id: r1, unitId: 1, profile: xy-md02, pollIntervalMs: ${o.bad ? -5 : o.pollMs}, timeoutMs: 300 }
      - { id: r2, unitId: 2, profile: xy-md02, pollIntervalMs: ${o.pollMs}, timeoutMs: ${o.bad ? 'soon' : 300} }
zones:
  - { id: z1, sensors: [r1.temperature, r2.temperature] }
outputs:
  outbox: { path: ${join(rig.tmp.path, o.outbox ?? 'outbox.db')} }
  mqtt: { url: '${rig.broker.url}', clientId: rg-reload, reconnectInitialMs: 200, reconnectMaxMs: ${o.reconnectMaxMs ?? 1000} }
http: { port: 0 }
`;
}

async function state(rig: Rig): Promise<StateJson> {
  const res = await fetch(`${rig.url}api/state`);
  return (await res.json()) as StateJson;
}

const sampleTimes = (rig: Rig, point: string): number[] =>
  rig.sub.messages.filter((m) => m.topic === `${BASE}/sensors/${point}`).map((m) => (JSON.parse(m.payload) as { tsMs: number }).tsMs);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Runs `body` against a fresh agent (poll 1000 ms) with the simulator, a broker and a watcher; stops them all after. */
async function withRig(body: (rig: Rig) => Promise<void>): Promise<void> {
  const parts: Partial<Rig> = {};
  try {
    parts.tmp = await tempDir('rackguard-reload-');
    [parts.pty, parts.broker] = await Promise.all([startPtyPair(), startMosquitto()]);
    const base = parts as Pick<Rig, 'tmp' | 'pty' | 'broker'>;
    parts.file = join(parts.tmp.path, 'agent.yaml');
    writeFileSync(parts.file, config(base, { pollMs: 1000 }));
    parts.sim = await startSimulator({ config: parseConfig(config(base, { pollMs: 1000 }), 'sim'), serialPath: parts.pty.b });
    parts.sub = await startSubscriber(parts.broker.url, { clientId: 'reload-watcher', topic: `${BASE}/#` });
    parts.agent = await spawnAndWait(process.execPath, ['--import', 'tsx', join(ROOT, 'agent/main.ts'), 'run', '--config', parts.file], { readyLine: /status page and metrics on/, timeoutMs: 20_000 });
    parts.url = (JSON.parse(parts.agent.readyLine) as { url: string }).url;
    await body(parts as Rig);
  } finally {
    await parts.agent?.stop('SIGTERM');
    await parts.sub?.stop();
    await parts.sim?.stop();
    await Promise.all([parts.pty?.stop(), parts.broker?.cleanup()]);
    await parts.tmp?.cleanup();
  }
}

/** Zone z1 held in warning by the simulator (r1 at 29 °C). */
async function zoneInWarning(rig: Rig): Promise<void> {
  rig.sim.rack.setValue('r1.temperature', 29);
  await rig.agent.waitForLine(/zone z1: normal → warning/, 15_000);
}

describe('SIGHUP reload', () => {
  it('with a bad configuration keeps running on the old one and reports every problem', () =>
    withRig(async (rig) => {
      const { agent, sub, file } = rig;
      await zoneInWarning(rig);

      writeFileSync(file, config(rig, { pollMs: 1000, bad: true }));
      const from = agent.lines.length;
      const fromMsg = sub.messages.length;
      agent.proc.kill('SIGHUP');
      await agent.waitForLine(/configuration reload refused \(\d+ problems?\)/, 10_000, from);
      const refused = agent.lines.slice(from).filter((l) => l.includes('configuration reload refused:'));
      expect(refused.some((l) => /pollIntervalMs/.test(l))).toBe(true);
      expect(refused.some((l) => /devices\[1\]\.timeoutMs/.test(l))).toBe(true);

      const event = await sub.waitMsg((m) => m.topic === `${BASE}/events` && m.payload.includes('config_reload_failed'), 10_000, 'config_reload_failed event', fromMsg);
      const problems = (JSON.parse(event.payload) as { detail: { problems: string[] } }).detail.problems;
      expect(problems.length).toBe(refused.length);

      // Still on the old configuration: polling, the zone in warning.
      const health = agent.lines.length;
      await agent.waitForLine(/"msg":"device health"/, 10_000, health);
      expect((await state(rig)).zones[0]!.level).toBe('warning');
    }));

  it('with a good one applies the new poll interval and keeps the outbox backlog and the zone state', () =>
    withRig(async (rig) => {
      const { agent, broker, file } = rig;
      await zoneInWarning(rig);
      // Rates known on the old configuration first (long window 16 s, half of it covered).
      await expect.poll(async () => (await state(rig)).zones[0]!.sensors.find((s) => s.point === 'r1.temperature')!.rateLongCPerMin, { timeout: 20_000, interval: 500 }).not.toBeNull();

      await broker.stop();
      const outageFrom = Date.now();
      await expect.poll(async () => (await state(rig)).outputs.sinks.mqtt!.depth, { timeout: 15_000, interval: 500 }).toBeGreaterThan(10);

      // A new poll interval, and an MQTT setting: that sink restarts (its cursor is in the outbox).
      writeFileSync(file, config(rig, { pollMs: 250, reconnectMaxMs: 1500 }));
      const depthBefore = (await state(rig)).outputs.sinks.mqtt!.depth;
      const from = agent.lines.length;
      const reloadAt = Date.now();
      agent.proc.kill('SIGHUP');
      const done = await agent.waitForLine(/configuration reloaded/, 10_000, from);
      expect(done).toMatch(/1 zones kept \(z1\)/);
      expect(done).toMatch(/acquisition rebuilt/);
      expect(done).toMatch(/sink mqtt restarted/);

      // At once, before the new pollers could have rebuilt anything: same level, rates already known.
      const after = await state(rig);
      const z1 = after.zones[0]!;
      expect(z1.level).toBe('warning');
      const r1 = z1.sensors.find((s) => s.point === 'r1.temperature')!;
      expect(r1.tempC).toBe(29);
      expect(r1.rateShortCPerMin).not.toBeNull();
      expect(r1.rateLongCPerMin).not.toBeNull();
      // The outbox was not reopened: the backlog is still there, and grows.
      expect(after.outputs.sinks.mqtt!.depth).toBeGreaterThanOrEqual(depthBefore);
      await expect.poll(async () => (await state(rig)).outputs.sinks.mqtt!.depth, { timeout: 10_000, interval: 500 }).toBeGreaterThan(depthBefore + 80);

      // The broker comes back: the backlog and the new samples arrive.
      await broker.restart();
      const last = Date.now();
      await expect.poll(() => Math.max(0, ...sampleTimes(rig, 'r1.temperature')), { timeout: 30_000, interval: 500 }).toBeGreaterThan(last);

      const times = sampleTimes(rig, 'r1.temperature');
      // Nothing lost in the outage or across the reload: no gap beyond a slow cycle.
      const window = times.filter((t) => t >= outageFrom - 2000 && t <= last);
      const gaps = window.slice(1).map((t, i) => t - window[i]!);
      expect(Math.max(...gaps)).toBeLessThan(2500);
      // The cadence changed: about 1000 ms before, about 250 ms after.
      const before = times.filter((t) => t < reloadAt - 500);
      const newer = times.filter((t) => t > reloadAt + 1000 && t <= last);
      expect(median(before.slice(1).map((t, i) => t - before[i]!))).toBeGreaterThan(800);
      expect(median(newer.slice(1).map((t, i) => t - newer[i]!))).toBeLessThan(500);

      // No zone event since the reload: the zone did not start over from normal.
      expect(agent.lines.slice(from).some((l) => /zone z1:/.test(l))).toBe(false);
    }), 90_000);

  it('refuses a valid configuration a reload cannot apply (another outbox), naming it, and goes on', () =>
    withRig(async (rig) => {
      const { agent, file } = rig;
      writeFileSync(file, config(rig, { pollMs: 250, reconnectMaxMs: 1500, outbox: 'other.db' }));
      const from = agent.lines.length;
      agent.proc.kill('SIGHUP');
      const line = await agent.waitForLine(/configuration reload refused:/, 10_000, from);
      expect(line).toMatch(/outputs\.outbox changed.*restart the agent/);
      expect(agent.proc.exitCode).toBeNull();
      expect((await state(rig)).outputs.outbox!.state).toBe('open');
    }));
});
