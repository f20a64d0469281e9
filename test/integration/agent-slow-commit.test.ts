/**
 * Issue 7 item 11, end to end: a slow outbox commit must not make another bus time out.
 *
 * The real agent (createAgent) with two RTU buses on two real ptys, each served by its own simulator,
 * and an outbox whose commit is made slow through its seam (`beforeCommit` busy-waits 400 ms on the
 * event loop, as an fsync on a tired SD card does). Bus B's device answers within 25 ms and has a
 * 150 ms deadline, so a commit that starts while B's request is in flight leaves B's reply waiting in
 * the kernel past its deadline. Group commit keeps such stalls rare (one per commitIntervalMs), and a
 * deadline's verdict first reads what is already waiting: B must count no timeout at all.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { silentLogger } from '../helpers/agent.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const STALL_MS = 400;

let tmp: TempDir;
let ptys: PtyPair[] = [];
let sims: Simulator[] = [];
let agent: Agent | undefined;

function busConfig(id: string, path: string, unit: number, timeoutMs: number): string {
  return `  - { id: ${id}, type: serial, path: ${path}, recoveryGapMs: 20, devices: [{ id: dev-${id}, unitId: ${unit}, profile: xy-md02, pollIntervalMs: 40, timeoutMs: ${timeoutMs} }] }`;
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-slow-commit-');
  ptys = await Promise.all([startPtyPair(), startPtyPair()]);
});

afterAll(async () => {
  await agent?.stop();
  for (const s of sims) await s.stop().catch(() => {});
  for (const p of ptys) await p.stop().catch(() => {});
  await tmp?.cleanup();
});

describe('group commit and deadlines', () => {
  it('a slow commit (bus A polling) makes bus B time out 0 times', async () => {
    const [a, b] = ptys as [PtyPair, PtyPair];
    // Each simulator serves one bus: its own config holds only that bus.
    const simA = parseConfig(`version: 1\nbuses:\n${busConfig('a', a.b, 1, 1000)}\n`, 'sim-a');
    const simB = parseConfig(`version: 1\nbuses:\n${busConfig('b', b.b, 2, 150)}\n`, 'sim-b');
    sims = [await startSimulator({ config: simA, serialPath: a.b }), await startSimulator({ config: simB, serialPath: b.b, turnaroundMs: 25, emulateBaud: true })];
    const config = parseConfig(
      `version: 1
buses:
${busConfig('a', a.a, 1, 1000)}
${busConfig('b', b.a, 2, 150)}
outputs:
  outbox: { path: ${join(tmp.path, 'outbox.db')}, commitIntervalMs: 200 }
`,
      join(tmp.path, 'agent.yaml'),
    );
    let stalls = 0;
    let inFlightAtStall = 0;
    let bReplies = 0;
    agent = createAgent(config, {
      logger: silentLogger,
      outbox: {
        beforeCommit: () => {
          stalls++;
          // Was one of B's requests out on the wire when the stall began? (requests sent minus settled)
          const h = agent!.health().find((d) => d.deviceId === 'dev-b');
          const c = h?.counters;
          if (c && c.requests > c.responses + c.timeouts + c.crcErrors + c.badFrames + c.exceptions + c.portErrors) inFlightAtStall++;
          const until = performance.now() + STALL_MS;
          while (performance.now() < until) {
            // busy: the event loop is blocked, as in a slow synchronous fsync
          }
        },
      },
    });
    agent.on('samples', (batch) => {
      if (batch[0]?.deviceId === 'dev-b' && batch.every((s) => s.quality === 'good')) bReplies++;
    });
    await agent.start();
    // Enough stalls that several of them catch one of B's requests in flight.
    await expect.poll(() => inFlightAtStall, { timeout: 45_000, interval: 100 }).toBeGreaterThanOrEqual(5);
    const bDev = agent.health().find((d) => d.deviceId === 'dev-b')!;
    const aDev = agent.health().find((d) => d.deviceId === 'dev-a')!;
    expect(stalls).toBeGreaterThanOrEqual(5);
    expect(bReplies).toBeGreaterThan(10);
    expect(aDev.counters.responses).toBeGreaterThan(10);
    expect(bDev.counters.timeouts).toBe(0);
    expect(bDev.state).toBe('online');
  });
});
