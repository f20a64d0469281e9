/**
 * The watchdog's judgment with a stuck bus loop (issue 9 item 2): the agent library on a real pty with
 * the simulator, its clock wrapped through the `clock` seam so that a request's deadline verdict never
 * comes (every wait of the bus loop is bounded by such a verdict, a flush included, so a hang has to be
 * made there: it stands for any call that never returns). The event loop keeps running (timers fire,
 * other parts work), yet no poll cycle completes: the pings must stop, and start again when the
 * verdict comes. A bare setInterval ping would go on throughout.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import { systemClock, type Clock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import { Notifier } from '../../agent/service/notify.js';
import { agentStatusLine } from '../../agent/service/status-line.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { twoRacksConfig, ZONE_Z1 } from '../helpers/two-racks.js';

let pty: PtyPair;
let sim: Simulator;
let agent: Agent;
let notifier: Notifier;
const sent: string[][] = [];
const logLines: string[] = [];
let hang = false;
const held: Array<() => void> = [];

beforeAll(async () => {
  pty = await startPtyPair();
  const text = twoRacksConfig({ bus: { serialPath: pty.a }, device: 'pollIntervalMs: 200, timeoutMs: 200, backoffInitialMs: 200, backoffMaxMs: 400' }) + ZONE_Z1;
  const config = parseConfig(text, 'test');
  sim = await startSimulator({ config, serialPath: pty.b });
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(chunk.toString());
        cb();
      },
    }),
  );
  const clock: Clock = {
    ...systemClock,
    afterPendingIo: (fn) => (hang ? void held.push(() => systemClock.afterPendingIo(fn)) : systemClock.afterPendingIo(fn)),
  };
  notifier = new Notifier({
    env: { NOTIFY_SOCKET: '/nonexistent/only-the-sender-below-sees-this', WATCHDOG_USEC: '1000000' },
    pid: process.pid,
    clock: systemClock,
    logger,
    view: { progress: () => agent.progress(), status: () => agentStatusLine(agent) },
    send: async (a) => void sent.push(a),
  });
  agent = createAgent(config, { logger, clock, parts: [notifier] });
  await agent.start();
}, 30_000);

afterAll(async () => {
  hang = false;
  for (const release of held.splice(0)) release();
  await agent?.stop();
  await sim?.stop();
  await pty?.stop();
});

const pings = (): number => sent.filter((a) => a.includes('WATCHDOG=1')).length;

describe('watchdog with a stuck bus loop', () => {
  it('pings while cycles complete, stops when the bus loop hangs, resumes when it goes on', async () => {
    // The agent is shared (beforeAll): a retry finds it as a failed attempt left it. Let the bus loop
    // go on, clear the fault, and judge only what happens from here.
    hang = false;
    for (const release of held.splice(0)) release();
    sim.rack.setFault('r1', { type: 'none' });
    const logFrom = logLines.length;
    const pingsFrom = pings();
    expect(sent[0]).toContain('READY=1');
    await expect.poll(pings, { timeout: 10_000 }).toBeGreaterThanOrEqual(pingsFrom + 3);

    // A silent r1: its request's deadline verdict now never comes.
    hang = true;
    sim.rack.setFault('r1', { type: 'silent' });
    await expect.poll(() => held.length, { timeout: 10_000 }).toBeGreaterThan(0);
    await expect.poll(() => logLines.slice(logFrom).some((l) => l.includes('withholding pings') && l.includes('bus:l')), { timeout: 15_000 }).toBe(true);
    const logAtStall = logLines.length;
    const atStall = pings();
    const cyclesAtStall = agent.progress()[0]!.cycles;
    await new Promise((r) => setTimeout(r, 2500)); // five ping intervals of silence
    expect(agent.progress()[0]!.cycles).toBe(cyclesAtStall);
    expect(pings()).toBe(atStall);

    hang = false;
    sim.rack.setFault('r1', { type: 'none' });
    for (const release of held.splice(0)) release();
    await expect.poll(pings, { timeout: 10_000 }).toBeGreaterThan(atStall);
    expect(logLines.slice(logAtStall).some((l) => l.includes('acquisition progresses again'))).toBe(true);
  });
});
