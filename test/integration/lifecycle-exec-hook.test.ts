/**
 * Stopping the built agent (dist/agent/main.js: `npm run build` first) while an exec action hook runs.
 * The hook runs in a process group of its own; on a stop the engine sends the group SIGTERM and waits
 * the action's killGraceS before SIGKILL. A hook that ignores SIGTERM (and a child it started) must
 * still not outlive the agent when that grace is longer than the stop deadline: an orphan would go on
 * running after the service is gone (outside systemd nobody else kills its group). The same after a
 * second signal (exit 1 at once) and for SIGINT.
 *
 * Real parts: the simulator on Modbus TCP on a free loopback port, a real shell hook, the real binary.
 * A warning threshold below room temperature opens an incident on the first samples.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { freePort } from '../helpers/ports.js';
import type { SpawnedProcess } from '../helpers/proc.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { runBuiltAgent, twoRacksConfig, ZONE_Z1 } from '../helpers/two-racks.js';

const STOP_TIMEOUT_S = 2;

let tmp: TempDir;
let sim: Simulator;
let port: number;
let n = 0;
const agents: SpawnedProcess[] = [];
const hookGroups: number[] = [];

/** Live (not zombie) members of a process group, from /proc. */
function liveMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(f[2]) === pgid && f[0] !== 'Z') out.push(Number(name));
  }
  return out;
}

function config(dir: string, hook: string): string {
  return `${twoRacksConfig({ bus: { tcpPort: port }, top: `stopTimeoutS: ${STOP_TIMEOUT_S}\n`, device: 'pollIntervalMs: 200' })}${ZONE_Z1}detection: { warnTempC: 5 }
outputs:
  outbox: { path: ${join(dir, 'outbox.db')} }
actions:
  stateDir: ${join(dir, 'state')}
  policies:
    - level: warning
      actions: [{ kind: exec, name: stubborn-hook, argv: [${hook}], timeoutS: 600, killGraceS: 30 }]
`;
}

/** Starts the agent with a hook that ignores SIGTERM, waits until the hook and its child run; returns the hook's group. */
async function agentWithRunningHook(): Promise<{ agent: SpawnedProcess; pgid: number }> {
  const dir = join(tmp.path, `case${++n}`);
  mkdirSync(dir);
  const hook = join(dir, 'hook.sh');
  // Ignores SIGTERM, as a careless script or a wedged tool does; its child inherits that.
  writeFileSync(hook, `#!/bin/sh\ntrap '' TERM\nsleep 600 &\necho $$ > ${join(dir, 'hook.pid')}\nwait\n`);
  chmodSync(hook, 0o755);
  const file = join(dir, 'rackguard.yaml');
  writeFileSync(file, config(dir, hook));
  const agent = await runBuiltAgent(file, { readyLine: /stubborn-hook started/, timeoutMs: 20_000 });
  agents.push(agent);
  const pidFile = join(dir, 'hook.pid');
  await expect.poll(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').endsWith('\n'), { timeout: 10_000 }).toBe(true);
  const pgid = Number(readFileSync(pidFile, 'utf8'));
  hookGroups.push(pgid);
  expect(liveMembers(pgid)).toHaveLength(2); // the shell and its sleep
  return { agent, pgid };
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-lifecycle-hook-');
  port = await freePort();
  sim = await startSimulator({ config: parseConfig(config(tmp.path, '/bin/true'), 'sim'), tcpPort: port });
}, 30_000);

afterAll(async () => {
  for (const a of agents) await a.stop('SIGKILL');
  for (const g of hookGroups) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch {
      // already gone: the case passed
    }
  }
  await sim?.stop();
  await tmp?.cleanup();
});

describe('stopping while an exec hook runs', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal}: exits 0 within the stop deadline and leaves no process of the hook's group behind`, async () => {
      const { agent, pgid } = await agentWithRunningHook();
      agent.proc.kill(signal);
      expect(await agent.exited).toEqual({ code: 0, signal: null });
      expect(agent.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(true);
      expect(agent.lines.some((l) => l.includes(`"processGroups":[${pgid}]`))).toBe(true);
      // SIGKILL is delivered at once, but the kernel takes a moment to tear the processes down (longer
      // on a loaded machine); an orphan would live on for its whole 600 s.
      await expect.poll(() => liveMembers(pgid), { timeout: 10_000 }).toEqual([]);
    });
  }

  it("a second SIGTERM exits 1 at once and leaves no process of the hook's group behind", async () => {
    const { agent, pgid } = await agentWithRunningHook();
    agent.proc.kill('SIGTERM');
    await agent.waitForLine(/"msg":"stopping"/, 5000);
    agent.proc.kill('SIGTERM');
    expect(await agent.exited).toEqual({ code: 1, signal: null });
    await expect.poll(() => liveMembers(pgid), { timeout: 10_000 }).toEqual([]);
  });
});
