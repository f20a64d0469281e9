/**
 * Issue 7 item 11, end to end: a slow outbox commit must not make another bus time out.
 *
 * The real agent (createAgent) with two RTU buses on two real ptys, each served by its own simulator
 * in its own process (as a real device, it answers while the agent's event loop is blocked), and an
 * outbox whose commit is made slow through its seam (`beforeCommit` busy-waits STALL_MS on the event
 * loop, as an fsync on a tired SD card does). Bus B's device answers within 25 ms and has a deadline
 * shorter than the stall, so a commit that starts while B's request is in flight leaves B's reply
 * waiting in the kernel past its deadline. A deadline's verdict first reads what is already waiting:
 * B must count no timeout at all. The deadline is wide enough (B_TIMEOUT_MS) that a loaded machine's
 * scheduling alone never reaches it; only the stalls do.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import { parseConfig } from '../../agent/config/load.js';
import { silentLogger } from '../helpers/agent.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const B_TIMEOUT_MS = 500;
const STALL_MS = 1000;

function busConfig(id: string, path: string, unit: number, timeoutMs: number): string {
  return `  - { id: ${id}, type: serial, path: ${path}, recoveryGapMs: 20, devices: [{ id: dev-${id}, unitId: ${unit}, profile: xy-md02, pollIntervalMs: 40, timeoutMs: ${timeoutMs} }] }`;
}

/** A simulator in its own process, serving one bus (its own config holds only that bus). */
async function spawnSim(dir: string, id: string, pty: PtyPair, unit: number, timeoutMs: number, extra: string[]): Promise<SpawnedProcess> {
  const file = join(dir, `sim-${id}.yaml`);
  writeFileSync(file, `version: 1\nbuses:\n${busConfig(id, pty.b, unit, timeoutMs)}\n`);
  return spawnAndWait(process.execPath, ['--import', 'tsx', join(ROOT, 'firmware-sim/main.ts'), '--config', file, '--serial', pty.b, ...extra], {
    readyLine: /"msg":"ready"/,
    timeoutMs: 30_000,
  });
}

describe('group commit and deadlines', () => {
  it('a slow commit (bus A polling) makes bus B time out 0 times', async () => {
    // Everything per attempt, so that a retry never meets the previous attempt's locked ports.
    let tmp: TempDir | undefined;
    let ptys: PtyPair[] = [];
    const sims: SpawnedProcess[] = [];
    let agent: Agent | undefined;
    try {
      tmp = await tempDir('rackguard-slow-commit-');
      ptys = await Promise.all([startPtyPair(), startPtyPair()]);
      const [a, b] = ptys as [PtyPair, PtyPair];
      sims.push(...(await Promise.all([spawnSim(tmp.path, 'a', a, 1, 1000, []), spawnSim(tmp.path, 'b', b, 2, B_TIMEOUT_MS, ['--turnaround-ms', '25', '--emulate-baud'])])));
      const config = parseConfig(
        `version: 1
buses:
${busConfig('a', a.a, 1, 1000)}
${busConfig('b', b.a, 2, B_TIMEOUT_MS)}
outputs:
  outbox: { path: ${join(tmp.path, 'outbox.db')}, commitIntervalMs: 200 }
`,
        join(tmp.path, 'agent.yaml'),
      );
      let stalls = 0;
      let inFlightAtStall = 0;
      let bReplies = 0;
      const live = createAgent(config, {
        logger: silentLogger,
        outbox: {
          beforeCommit: () => {
            stalls++;
            // Was one of B's requests out on the wire when the stall began? (requests sent minus settled)
            const c = live.health().find((d) => d.deviceId === 'dev-b')?.counters;
            if (c && c.requests > c.responses + c.timeouts + c.crcErrors + c.badFrames + c.exceptions + c.portErrors) inFlightAtStall++;
            const until = performance.now() + STALL_MS;
            while (performance.now() < until) {
              // busy: the event loop is blocked, as in a slow synchronous fsync
            }
          },
        },
      });
      agent = live;
      live.on('samples', (batch) => {
        if (batch[0]?.deviceId === 'dev-b' && batch.every((s) => s.quality === 'good')) bReplies++;
      });
      await live.start();
      // Enough stalls that several of them catch one of B's requests in flight.
      await expect.poll(() => inFlightAtStall, { timeout: 50_000, interval: 100 }).toBeGreaterThanOrEqual(5);
      const bDev = live.health().find((d) => d.deviceId === 'dev-b')!;
      const aDev = live.health().find((d) => d.deviceId === 'dev-a')!;
      expect(stalls).toBeGreaterThanOrEqual(5);
      expect(bReplies).toBeGreaterThan(5);
      expect(aDev.counters.responses).toBeGreaterThan(5);
      expect(bDev.counters.timeouts).toBe(0);
      expect(aDev.counters.timeouts).toBe(0);
      expect(bDev.state).toBe('online');
    } finally {
      await agent?.stop();
      await Promise.all(sims.map((s) => s.stop()));
      await Promise.all(ptys.map((p) => p.stop().catch(() => {})));
      await tmp?.cleanup();
    }
  }, 90_000);
});
