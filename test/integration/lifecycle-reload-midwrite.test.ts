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
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
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
let port: number;
let n = 0;

/** The configuration in two parts: `head` alone (the buses, no zones) is valid too. */
function parts(pollMs: number, outbox: string): { head: string; tail: string } {
  const head = `${twoRacksConfig({ bus: { tcpPort: port }, device: `pollIntervalMs: ${pollMs}` })}outputs:
  outbox: { path: ${outbox} }
`;
  const tail = `zones:
  - { id: z1, sensors: [r1.temperature, r2.temperature] }
  - { id: z2, sensors: [r2.temperature, r1.temperature] }
`;
  return { head, tail };
}

interface Case {
  agent: SpawnedProcess;
  file: string;
  outbox: string;
}

/**
 * Runs `body` against an agent of its own (its own file and outbox), stopped after: a retry never
 * meets the agent, the file or the events of a failed attempt.
 */
async function withAgent(body: (c: Case) => Promise<void>): Promise<void> {
  const dir = join(tmp.path, `case${++n}`);
  mkdirSync(dir);
  const outbox = join(dir, 'outbox.db');
  const file = join(dir, 'rackguard.yaml');
  const { head, tail } = parts(200, outbox);
  writeFileSync(file, head + tail);
  const agent = await runBuiltAgent(file, { readyLine: /"msg":"device online"/, timeoutMs: 20_000 });
  try {
    await body({ agent, file, outbox });
  } finally {
    await agent.stop('SIGKILL');
  }
}

/** Appends a comment line every 50 ms, so that the file never stays unchanged for the reload's settle time (500 ms). */
function keepWriting(file: string): () => void {
  const writer = setInterval(() => appendFileSync(file, '# still writing\n'), 50);
  return () => clearInterval(writer);
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-lifecycle-reload-');
  port = await freePort();
  const { head, tail } = parts(200, join(tmp.path, 'unused.db'));
  expect(parseConfig(head, 'head').zones).toEqual([]); // the premise: the prefix alone is valid
  sim = await startSimulator({ config: parseConfig(head + tail, 'sim'), tcpPort: port });
}, 40_000);

afterAll(async () => {
  await sim?.stop();
  await tmp?.cleanup();
});

describe('SIGHUP while the configuration file is being written', () => {
  it('waits for the write to finish and applies the whole file, never its valid prefix', () =>
    withAgent(async ({ agent, file, outbox }) => {
      const { head, tail } = parts(300, outbox);
      const from = agent.lines.length;
      writeFileSync(file, head); // the writer has written the buses so far
      // … and goes on writing for a second after the signal: the file never stays unchanged for the
      // settle time until the tail is in, however slow this test is. (A reload that read at once would
      // read the valid prefix, whereas one that waited for the write to end reads the whole file.)
      const stopWriting = keepWriting(file);
      try {
        agent.proc.kill('SIGHUP');
        await agent.waitForLine(/SIGHUP: reloading the configuration/, 10_000, from);
        await new Promise((r) => setTimeout(r, 1000)); // the rest of the write, not synchronisation
      } finally {
        stopWriting();
      }
      appendFileSync(file, tail); // … and finishes its write
      const done = await agent.waitForLine(/configuration reload(ed| refused)/, 15_000, from);
      expect(done).toContain('configuration reloaded');
      expect(done).toContain('2 zones kept (z1, z2)');
      expect(agent.lines.slice(from).some((l) => /0 zones kept/.test(l))).toBe(false);
      expect(agent.proc.exitCode).toBeNull();
    }));

  it('a reload that changes the zones names no sink that is not configured', () =>
    withAgent(async ({ agent, file, outbox }) => {
      const { head, tail } = parts(300, outbox);
      const from = agent.lines.length;
      writeFileSync(file, `${head}${tail}  - { id: z3, sensors: [r1.temperature, r2.temperature] }\n`);
      agent.proc.kill('SIGHUP');
      const done = await agent.waitForLine(/configuration reload(ed| refused)/, 15_000, from);
      expect(done).toContain('2 zones kept (z1, z2), 1 new or changed (z3)');
      // Neither outputs.mqtt nor outputs.influx is configured: "sink mqtt added" would be a false report.
      expect(done).not.toContain('sink');
    }));

  it('refuses a file that never stops changing, with an event, and goes on with the configuration it has', () =>
    withAgent(async ({ agent, file, outbox }) => {
      const { head, tail } = parts(200, outbox);
      const from = agent.lines.length;
      // A writer that keeps appending (a log written to the wrong path, a runaway script), from
      // before the signal: the file is never still for the settle time, however slow this test is.
      writeFileSync(file, head + tail);
      const stopWriting = keepWriting(file);
      let refused: string;
      try {
        agent.proc.kill('SIGHUP');
        await agent.waitForLine(/SIGHUP: reloading the configuration/, 10_000, from);
        refused = await agent.waitForLine(/configuration reload(ed| refused)/, 20_000, from);
      } finally {
        stopWriting();
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
    }));
});
