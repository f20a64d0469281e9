/**
 * sd_notify with the real binary (issue 9 item 2): a fake NOTIFY_SOCKET (test/helpers/notify-socket.ts)
 * receives READY=1 once acquisition is up, then WATCHDOG=1 every half WATCHDOG_USEC while poll cycles
 * complete, STATUS= lines a person can read, and STOPPING=1 on SIGTERM. A silent device still lets the
 * pings go on (its polls complete, with timeouts: systemd restarting us would not bring it back);
 * a frozen process (SIGSTOP: what a blocked event loop looks like from outside) sends none.
 * The stuck-bus-loop case (a driver call that never returns) is in notify-watchdog.test.ts, through
 * the serial opener seam, since no real part hangs our deadline-guarded loop.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startNotifySocket, type NotifySocket } from '../helpers/notify-socket.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { twoRacksConfig, ZONE_Z1 } from '../helpers/two-racks.js';

const ROOT = join(import.meta.dirname, '..', '..');
const WATCHDOG_USEC = 2_000_000; // pings expected every 1 s

let tmp: TempDir;
let pty: PtyPair;
let sim: Simulator;
let sock: NotifySocket;
let agent: SpawnedProcess;

const pings = (from = 0): number => sock.datagrams.slice(from).filter((d) => d.vars.WATCHDOG === '1').length;
const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  tmp = await tempDir('rackguard-sd-notify-');
  pty = await startPtyPair();
  const text = twoRacksConfig({ bus: { serialPath: pty.a }, device: 'pollIntervalMs: 200, timeoutMs: 200, backoffInitialMs: 200, backoffMaxMs: 400' }) + ZONE_Z1;
  const file = join(tmp.path, 'agent.yaml');
  writeFileSync(file, text);
  sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b });
  sock = await startNotifySocket(tmp.path);
  agent = await spawnAndWait(process.execPath, ['--import', 'tsx', join(ROOT, 'agent/main.ts'), 'run', '--config', file], {
    env: { NOTIFY_SOCKET: sock.path, WATCHDOG_USEC: String(WATCHDOG_USEC) },
    readyLine: /rackguard starting/,
    timeoutMs: 20_000,
  });
}, 40_000);

afterAll(async () => {
  if (agent && agent.proc.exitCode === null && agent.proc.signalCode === null) process.kill(agent.proc.pid!, 'SIGCONT');
  await agent?.stop('SIGKILL');
  await sock?.stop();
  await sim?.stop();
  await pty?.stop();
  await tmp?.cleanup();
});

describe('sd_notify', () => {
  it('sends READY=1 first, with a readable STATUS, then WATCHDOG=1 about every half WATCHDOG_USEC', async () => {
    const ready = await sock.waitFor((d) => d.vars.READY === '1', 15_000, 0, 'READY=1');
    expect(sock.datagrams.indexOf(ready)).toBe(sock.datagrams.findIndex((d) => Object.keys(d.vars).some((k) => k !== 'BARRIER')));
    expect(ready.vars.STATUS).toMatch(/zone/);
    // STATUS lines refresh; once the devices have answered, the line says so.
    await sock.waitFor((d) => /^1 zone normal, 2\/2 devices online$/.test(d.vars.STATUS ?? ''), 15_000, 0, 'STATUS with 2/2 devices online');

    const from = sock.datagrams.length;
    await pause(6000);
    // 6 s at one ping per second: 6, give or take the timer phase and a loaded machine.
    expect(pings(from)).toBeGreaterThanOrEqual(4);
    expect(pings(from)).toBeLessThanOrEqual(7);
  });

  it('keeps pinging while a device is silent: its polls still complete, with timeouts', async () => {
    sim.rack.setFault('r1', { type: 'silent' });
    try {
      await sock.waitFor((d) => /r1 (failing|offline)/.test(d.vars.STATUS ?? ''), 20_000, sock.datagrams.length, 'STATUS naming r1 down');
      const from = sock.datagrams.length;
      await pause(4000);
      expect(pings(from)).toBeGreaterThanOrEqual(2);
    } finally {
      sim.rack.setFault('r1', { type: 'none' });
    }
  });

  it('sends no ping while the process is frozen, and pings again once it runs and polls again', async () => {
    process.kill(agent.proc.pid!, 'SIGSTOP');
    let from: number;
    try {
      from = sock.datagrams.length;
      await pause(3000);
      expect(pings(from)).toBe(0);
    } finally {
      // Never leave the shared agent frozen for a retry or the next test.
      process.kill(agent.proc.pid!, 'SIGCONT');
    }
    await sock.waitFor((d) => d.vars.WATCHDOG === '1', 10_000, from, 'a ping after SIGCONT');
  });

  it('sends STOPPING=1 on SIGTERM and exits 0', async () => {
    const from = sock.datagrams.length;
    const code = agent.stop('SIGTERM');
    await sock.waitFor((d) => d.vars.STOPPING === '1', 10_000, from, 'STOPPING=1');
    expect(await code).toBe(0);
  });
});
