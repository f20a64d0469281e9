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
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startNotifySocket, type NotifySocket } from '../helpers/notify-socket.js';
import type { SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { runBuiltAgent, twoRacksConfig, ZONE_Z1 } from '../helpers/two-racks.js';

/** Shorter than the periodic STATUS refresh (10 s): only a refresh on the change itself arrives in time. */
const STATUS_WAIT_MS = 6000;

describe('STATUS and WATCHDOG while a serial adapter goes and comes back', () => {
  it('the STATUS line follows the devices, and the pings go on', async () => {
    // Everything per attempt: a retry never meets the previous attempt's unplugged adapter or stopped simulator.
    let tmp: TempDir | undefined;
    let pty: PtyPair | undefined;
    let sim: Simulator | undefined;
    let sock: NotifySocket | undefined;
    let agent: SpawnedProcess | undefined;
    try {
      tmp = await tempDir('rackguard-lifecycle-notify-');
      const ptyDir = join(tmp.path, 'pty');
      mkdirSync(ptyDir);
      pty = await startPtyPair({ dir: ptyDir });
      const text = twoRacksConfig({ bus: { serialPath: pty.a }, device: 'pollIntervalMs: 200, timeoutMs: 200, backoffInitialMs: 200, backoffMaxMs: 400' }) + ZONE_Z1;
      const file = join(tmp.path, 'agent.yaml');
      writeFileSync(file, text);
      sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b });
      const notify = (sock = await startNotifySocket(tmp.path));
      const live = (agent = await runBuiltAgent(file, {
        env: { NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '1000000' },
        readyLine: /rackguard starting/,
        timeoutMs: 20_000,
      }));
      const pings = (from: number): number => notify.datagrams.slice(from).filter((d) => d.vars.WATCHDOG === '1').length;
      const statusFrom = (from: number, pred: (s: string) => boolean, what: string): Promise<unknown> =>
        notify.waitFor((d) => d.vars.STATUS !== undefined && pred(d.vars.STATUS), STATUS_WAIT_MS, from, what);

      const ready = await notify.waitFor((d) => d.vars.READY === '1', 10_000, 0, 'READY=1');
      const readyAt = notify.datagrams.indexOf(ready);
      await statusFrom(readyAt, (s) => s.includes('2/2 devices online'), 'a STATUS with both devices online after READY');

      const beforePull = notify.datagrams.length;
      await sim.stop();
      sim = undefined;
      await pty.stop(); // the adapter is unplugged: both links disappear
      await statusFrom(beforePull, (s) => s.includes('0/2 devices online') && s.includes('r1 offline') && s.includes('r2 offline'), 'a STATUS with both devices offline');
      // Cycles complete with comm_error samples: pinging goes on while the adapter is gone.
      const gone = notify.datagrams.length;
      await notify.waitFor((d) => d.vars.WATCHDOG === '1', 5000, gone, 'a ping while the adapter is gone');
      await notify.waitFor((d) => d.vars.WATCHDOG === '1', 5000, notify.datagrams.length, 'another ping while the adapter is gone');
      expect(live.lines.some((l) => l.includes('withholding pings'))).toBe(false);

      const beforePlug = notify.datagrams.length;
      pty = await startPtyPair({ dir: ptyDir });
      sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b });
      await statusFrom(beforePlug, (s) => s.includes('2/2 devices online'), 'a STATUS with both devices online again');
      await notify.waitFor((d) => d.vars.WATCHDOG === '1', 5000, notify.datagrams.length, 'a ping after the adapter is back');
      expect(pings(readyAt)).toBeGreaterThan(2);
      expect(live.proc.exitCode).toBeNull();
    } finally {
      await agent?.stop('SIGKILL');
      await sock?.stop();
      await sim?.stop();
      await pty?.stop().catch(() => {});
      await tmp?.cleanup();
    }
  }, 90_000);
});
