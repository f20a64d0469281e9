/**
 * SIGHUP while the configuration file is still being written, with the built agent
 * (dist/agent/main.js: `npm run build` first) and the simulator on Modbus TCP on a free loopback port.
 *
 * A file cut short is usually invalid YAML (refused), but a prefix cut after the buses is a valid
 * configuration with no zones: applied, it would switch detection off for every zone. The reload must
 * wait for the file to stop changing and apply the whole of it; a file that never stops changing is
 * refused (every problem logged, a config_reload_failed event) and the agent goes on unchanged.
 */
import Database from 'better-sqlite3';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { freePort } from '../helpers/ports.js';
import type { SpawnedProcess } from '../helpers/proc.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { runBuiltAgent, twoRacksConfig } from '../helpers/two-racks.js';


let tmp: TempDir;
let sim: Simulator;
let agent: SpawnedProcess;
let file: string;
let outbox: string;
let port: number;

/** The configuration in two parts: `head` alone (the buses, no zones) is valid too. */
function parts(pollMs: number): { head: string; tail: string } {
  const head = `${twoRacksConfig({ bus: { tcpPort: port }, device: `pollIntervalMs: ${pollMs}` })}outputs:
  outbox: { path: ${outbox} }
`;
  const tail = `zones:
  - { id: z1, sensors: [r1.temperature, r2.temperature] }
  - { id: z2, sensors: [r2.temperature, r1.temperature] }
`;
  return { head, tail };
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-lifecycle-reload-');
  port = await freePort();
  outbox = join(tmp.path, 'outbox.db');
  file = join(tmp.path, 'rackguard.yaml');
  const { head, tail } = parts(200);
  writeFileSync(file, head + tail);
  expect(parseConfig(head, 'head').zones).toEqual([]); // the premise: the prefix alone is valid
  sim = await startSimulator({ config: parseConfig(head + tail, 'sim'), tcpPort: port });
  agent = await runBuiltAgent(file, { readyLine: /"msg":"device online"/, timeoutMs: 20_000 });
}, 40_000);

afterAll(async () => {
  await agent?.stop('SIGKILL');
  await sim?.stop();
  await tmp?.cleanup();
});

describe('SIGHUP while the configuration file is being written', () => {
  it('waits for the write to finish and applies the whole file, never its valid prefix', async () => {
    const { head, tail } = parts(300);
    const from = agent.lines.length;
    writeFileSync(file, head); // the writer has written the buses so far
    agent.proc.kill('SIGHUP');
    await agent.waitForLine(/SIGHUP: reloading the configuration/, 10_000, from);
    appendFileSync(file, tail); // … and finishes its write just after the signal
    const done = await agent.waitForLine(/configuration reload(ed| refused)/, 15_000, from);
    expect(done).toContain('configuration reloaded');
    expect(done).toContain('2 zones kept (z1, z2)');
    expect(agent.lines.slice(from).some((l) => /0 zones kept/.test(l))).toBe(false);
    expect(agent.proc.exitCode).toBeNull();
  });

  it('a reload that changes the zones names no sink that is not configured', async () => {
    const { head, tail } = parts(300);
    const from = agent.lines.length;
    writeFileSync(file, `${head}${tail}  - { id: z3, sensors: [r1.temperature, r2.temperature] }\n`);
    agent.proc.kill('SIGHUP');
    const done = await agent.waitForLine(/configuration reload(ed| refused)/, 15_000, from);
    expect(done).toContain('2 zones kept (z1, z2), 1 new or changed (z3)');
    // Neither outputs.mqtt nor outputs.influx is configured: "sink mqtt added" would be a false report.
    expect(done).not.toContain('sink');
  });

  it('refuses a file that never stops changing, with an event, and goes on with the configuration it has', async () => {
    const { head, tail } = parts(200);
    const from = agent.lines.length;
    agent.proc.kill('SIGHUP');
    await agent.waitForLine(/SIGHUP: reloading the configuration/, 10_000, from);
    // A writer that keeps appending (a log written to the wrong path, a runaway script).
    writeFileSync(file, head + tail);
    const writer = setInterval(() => appendFileSync(file, '# still writing\n'), 100);
    let refused: string;
    try {
      refused = await agent.waitForLine(/configuration reload(ed| refused)/, 20_000, from);
    } finally {
      clearInterval(writer);
    }
    expect(refused).toContain('kept changing');
    await agent.waitForLine(/still running on the previous configuration/, 5000, from);
    // The agent goes on polling with both zones.
    const polled = agent.lines.length;
    writeFileSync(file, head + tail);
    agent.proc.kill('SIGHUP');
    expect(await agent.waitForLine(/configuration reload(ed| refused)/, 15_000, polled)).toContain('2 zones kept (z1, z2)');

    expect(await agent.stop('SIGTERM')).toBe(0);
    const db = new Database(outbox, { readonly: true });
    try {
      const bodies = db.prepare<[], { body: string }>("SELECT body FROM records WHERE body LIKE '%config_reload_failed%'").all().map((r) => r.body);
      expect(bodies).toHaveLength(1);
      expect(bodies[0]).toContain('kept changing');
    } finally {
      db.close();
    }
  });
});
