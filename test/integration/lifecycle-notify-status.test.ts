/**
 * What systemd hears from the built agent (dist/agent/main.js: `npm run build` first) through a fake
 * NOTIFY_SOCKET (test/helpers/notify-socket.ts) while a serial adapter goes and comes back, with the
 * simulator on a real socat pty:
 * - the STATUS line follows the devices: READY goes out before the first poll (devices unknown), and a
 *   person running `systemctl status` must not read "0/2 devices online" for the next 10 s, nor
 *   "1/2 online" once both are offline;
 * - a lost adapter is not a hang: the bus loop completes its cycles (with errors), so the watchdog
 *   pings go on (a restart would not bring the adapter back); they go on after it returns.
 * Each wait is bounded well below the notifier's periodic STATUS refresh (10 s), so a line that only
 * the periodic refresh would correct fails the test.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startNotifySocket, type NotifySocket } from '../helpers/notify-socket.js';
import type { SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { runBuiltAgent, twoRacksConfig, ZONE_Z1 } from '../helpers/two-racks.js';

/** Shorter than the periodic STATUS refresh (10 s): only a refresh on the change itself arrives in time. */
const STATUS_WAIT_MS = 6000;

let tmp: TempDir;
let ptyDir: string;
let pty: PtyPair;
let sim: Simulator | undefined;
let sock: NotifySocket;
let agent: SpawnedProcess;
let text: string;

const pings = (from: number): number => sock.datagrams.slice(from).filter((d) => d.vars.WATCHDOG === '1').length;
const statusFrom = (from: number, pred: (s: string) => boolean, what: string): Promise<unknown> =>
  sock.waitFor((d) => d.vars.STATUS !== undefined && pred(d.vars.STATUS), STATUS_WAIT_MS, from, what);

beforeAll(async () => {
  tmp = await tempDir('rackguard-lifecycle-notify-');
  ptyDir = join(tmp.path, 'pty');
  mkdirSync(ptyDir);
  pty = await startPtyPair({ dir: ptyDir });
  text = twoRacksConfig({ bus: { serialPath: pty.a }, device: 'pollIntervalMs: 200, timeoutMs: 200, backoffInitialMs: 200, backoffMaxMs: 400' }) + ZONE_Z1;
  const file = join(tmp.path, 'agent.yaml');
  writeFileSync(file, text);
  sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b });
  sock = await startNotifySocket(tmp.path);
  agent = await runBuiltAgent(file, {
    env: { NOTIFY_SOCKET: sock.path, WATCHDOG_USEC: '1000000' },
    readyLine: /rackguard starting/,
    timeoutMs: 20_000,
  });
}, 40_000);

afterAll(async () => {
  await agent?.stop('SIGKILL');
  await sock?.stop();
  await sim?.stop();
  await pty?.stop();
  await tmp?.cleanup();
});

describe('STATUS and WATCHDOG while a serial adapter goes and comes back', () => {
  it('the STATUS line follows the devices, and the pings go on', async () => {
    const ready = await sock.waitFor((d) => d.vars.READY === '1', 10_000, 0, 'READY=1');
    const readyAt = sock.datagrams.indexOf(ready);
    await statusFrom(readyAt, (s) => s.includes('2/2 devices online'), 'a STATUS with both devices online after READY');

    const beforePull = sock.datagrams.length;
    await sim!.stop();
    sim = undefined;
    await pty.stop(); // the adapter is unplugged: both links disappear
    await statusFrom(beforePull, (s) => s.includes('0/2 devices online') && s.includes('r1 offline') && s.includes('r2 offline'), 'a STATUS with both devices offline');
    // Cycles complete with comm_error samples: pinging goes on while the adapter is gone.
    const gone = sock.datagrams.length;
    await sock.waitFor((d) => d.vars.WATCHDOG === '1', 5000, gone, 'a ping while the adapter is gone');
    await sock.waitFor((d) => d.vars.WATCHDOG === '1', 5000, sock.datagrams.length, 'another ping while the adapter is gone');
    expect(agent.lines.some((l) => l.includes('withholding pings'))).toBe(false);

    const beforePlug = sock.datagrams.length;
    pty = await startPtyPair({ dir: ptyDir });
    sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b });
    await statusFrom(beforePlug, (s) => s.includes('2/2 devices online'), 'a STATUS with both devices online again');
    await sock.waitFor((d) => d.vars.WATCHDOG === '1', 5000, sock.datagrams.length, 'a ping after the adapter is back');
    expect(pings(readyAt)).toBeGreaterThan(2);
    expect(agent.proc.exitCode).toBeNull();
  });
});
