/**
 * The agent's one component lifecycle, in process against real parts (the simulator on a socat pty,
 * a SQLite outbox, a real mosquitto): start/stop/start without duplicate parts or polling loops, a
 * part whose stop() hangs does not keep the others from stopping nor the stop past its deadline, and
 * a part that throws in start() is reported, what started is stopped, and start() can be retried.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import type { Component } from '../../agent/component.js';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { batchOf, SampleLog } from '../helpers/agent.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { startStubbornBroker } from '../helpers/stubborn-broker.js';
import { until } from '../helpers/wait.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const POLL_MS = 200;

let tmp: TempDir;
let pty: PtyPair;
let sim: Simulator;
let broker: Mosquitto;
let n = 0;
const agents: Agent[] = [];

function configText(extra: { stopTimeoutS?: number; mqtt?: string } = {}): string {
  const id = ++n;
  return `version: 1
site: lab
gateway: life${id}
${extra.stopTimeoutS !== undefined ? `stopTimeoutS: ${extra.stopTimeoutS}\n` : ''}logging: { samples: false }
buses:
  - id: l
    type: serial
    path: ${pty.a}
    devices:
      - { id: r1, unitId: 1, profile: xy-md02, pollIntervalMs: ${POLL_MS} }
      - { id: r2, unitId: 2, profile: xy-md02, pollIntervalMs: ${POLL_MS} }
outputs:
  outbox: { path: ${join(tmp.path, `outbox-${id}.db`)} }
${extra.mqtt ?? ''}`;
}

/** A logger whose JSON lines the test can read. */
function capture(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-lifecycle-');
  [pty, broker] = await Promise.all([startPtyPair(), startMosquitto()]);
  sim = await startSimulator({ config: parseConfig(configText(), 'sim'), serialPath: pty.b });
});

afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop();
});

afterAll(async () => {
  await sim?.stop();
  await pty?.stop();
  await broker?.cleanup();
  await tmp?.cleanup();
});

describe('agent lifecycle', () => {
  it('start, stop, start: the same parts again, one polling loop per bus', async () => {
    const { logger } = capture();
    const agent = createAgent(parseConfig(configText(), 'cfg'), { logger });
    agents.push(agent);
    const log = new SampleLog(agent);
    await agent.start();
    await log.next(batchOf('r1', 'good'), 10_000, 'r1 before the restart');
    const parts = [...agent.parts];
    expect(parts).toEqual(['clock-watch', 'outbox', 'announce', 'bus:l', 'timers']);
    await agent.stop();
    expect(agent.outboxStats()).toBeUndefined();
    await agent.start();
    expect(agent.parts).toEqual(parts);
    // Two loops on one bus would poll each device twice per interval. One loop keeps its cadence (each
    // poll is due one interval after the last one was due), so 24 gaps span at least 24 intervals less
    // the first reply's delay, however loaded the machine: two loops take about half of that. (Not a
    // bound on each gap: a reply held up by a stall, then the next one on time, makes a short gap.)
    const at: number[] = [];
    await log.next((b) => batchOf('r1', 'good')(b) && at.push(b[0]!.mono) >= 25, 30_000, '25 r1 polls after the restart');
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    const shown = `r1 poll gaps ${gaps.map(Math.round).join(' ')} ms`;
    expect(at.at(-1)! - at[0]!, shown).toBeGreaterThan(gaps.length * POLL_MS * 0.75);
    // Two loops sharing the devices' schedule would poll in pairs instead: every other gap short.
    expect(gaps.filter((g) => g < POLL_MS / 2).length, shown).toBeLessThan(gaps.length / 4);
    expect(agent.outboxStats()?.state).toBe('open');
  });

  it('a part whose stop() hangs: the others still stop, and stop() returns at the deadline', async () => {
    const { logger, lines } = capture();
    let stuckStopCalled = false;
    const stuck: Component = {
      name: 'stuck',
      start: async () => undefined,
      stop: () => {
        stuckStopCalled = true;
        return new Promise(() => undefined); // never settles
      },
    };
    const agent = createAgent(parseConfig(configText({ stopTimeoutS: 1 }), 'cfg'), { logger, parts: [stuck] });
    agents.push(agent);
    const log = new SampleLog(agent);
    await agent.start();
    await log.next(batchOf('r2', 'good'), 10_000, 'r2 polled');
    // Started last, stopped first: it hangs, and everything before it is stopped all the same.
    await agent.stop();
    expect(stuckStopCalled).toBe(true);
    expect(lines.some((l) => l.part === 'stuck' && /did not stop within the stop deadline/.test(String(l.msg)))).toBe(true);
    expect(agent.outboxStats()).toBeUndefined();
  });

  it('a part whose start() never finishes: stop() still stops what started, within the deadline', async () => {
    const { logger, lines } = capture();
    const hung: Component = { name: 'hung', start: () => new Promise(() => undefined), stop: async () => undefined };
    const agent = createAgent(parseConfig(configText({ stopTimeoutS: 1 }), 'cfg'), { logger, parts: [hung] });
    agents.push(agent);
    const log = new SampleLog(agent);
    const starting = agent.start();
    // Everything before the hung part is up and polling.
    await log.next(batchOf('r1', 'good'), 10_000, 'r1 polled while start() hangs');
    await agent.stop();
    expect(lines.some((l) => /start-up did not finish within the stop deadline/.test(String(l.msg)))).toBe(true);
    expect(agent.outboxStats()).toBeUndefined();
    void starting;
  });

  it('a short stop deadline and a broker that never acknowledges records: stop() still says offline within it', async () => {
    // The broker acknowledges our status messages only: records stay in flight for ever.
    const stubborn = await startStubbornBroker((p) => p.topic.endsWith('/status'));
    try {
      const { logger, lines } = capture();
      const config = parseConfig(configText({ stopTimeoutS: 1, mqtt: `  mqtt: { url: '${stubborn.url}', publishTimeoutMs: 60000 }\n` }), 'cfg');
      const agent = createAgent(config, { logger });
      agents.push(agent);
      await agent.start();
      await until(() => stubborn.publishes.some((p) => p.topic.includes('/sensors/')), 10_000, 'records in flight');
      await agent.stop();
      const states = stubborn.publishes.filter((p) => p.topic.endsWith('/status')).map((p) => (JSON.parse(p.payload) as { state: string }).state);
      expect(states.at(-1)).toBe('offline');
      expect(lines.filter((l) => /did not stop within the stop deadline/.test(String(l.msg)))).toEqual([]);
    } finally {
      await stubborn.close();
    }
  });

  it('a part that throws in start(): reported, what started is stopped, and start() can be retried', async () => {
    const userFile = join(tmp.path, 'mqtt-user');
    const { logger, lines } = capture();
    // The loader checks the file; it is gone by start() (a secrets mount not there yet).
    writeFileSync(userFile, 'rackguard\n');
    const config = parseConfig(configText({ mqtt: `  mqtt: { url: '${broker.url}', usernameFile: ${userFile}, reconnectInitialMs: 200, reconnectMaxMs: 1000 }\n` }), 'cfg');
    rmSync(userFile);
    const agent = createAgent(config, { logger });
    agents.push(agent);
    const log = new SampleLog(agent);
    await expect(agent.start()).rejects.toMatchObject({ code: 'E_SECRET_READ' });
    expect(lines.some((l) => l.part === 'sink:mqtt' && /failed to start/.test(String(l.msg)))).toBe(true);
    // Nothing half-started: the outbox opened before the sink, and was closed again.
    expect(agent.outboxStats()).toBeUndefined();
    expect(log.all).toHaveLength(0);

    writeFileSync(userFile, 'rackguard\n');
    await agent.start();
    await log.next(batchOf('r1', 'good'), 10_000, 'r1 after the retried start');
    expect(agent.parts).toEqual(['clock-watch', 'outbox', 'sink:mqtt', 'announce', 'bus:l', 'timers']);
    expect(agent.outboxStats()?.state).toBe('open');
  });
});
