/**
 * SIGTERM during a broker outage, with the real binary (issue 9 item 3): the agent stops polling,
 * gives the sinks what the stop deadline allows, and exits 0 within stopTimeoutS; the outbox it leaves
 * holds the whole backlog with consistent cursors, and the next start delivers it.
 */
import Database from 'better-sqlite3';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import type { StateJson } from '../../agent/observe/state.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { startSubscriber, type Subscriber } from '../helpers/mqtt.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { twoRacksConfig, ZONE_Z1 } from '../helpers/two-racks.js';

const ROOT = join(import.meta.dirname, '..', '..');
const BASE = 'rackguard/lab/gw1';
const STOP_TIMEOUT_S = 3;
const POLL_MS = 250;

/** Longest pause between two polls of r1 the test accepts: a few cycles, with a timed-out read (500 ms) among them. */
const MAX_GAP_MS = 2000;

async function startAgent(file: string, agents: SpawnedProcess[]): Promise<{ agent: SpawnedProcess; url: string }> {
  const agent = await spawnAndWait(process.execPath, ['--import', 'tsx', join(ROOT, 'agent/main.ts'), 'run', '--config', file], { readyLine: /status page and metrics on/, timeoutMs: 20_000 });
  agents.push(agent);
  return { agent, url: (JSON.parse(agent.readyLine) as { url: string }).url };
}

async function state(url: string): Promise<StateJson> {
  return (await (await fetch(`${url}api/state`)).json()) as StateJson;
}

describe('SIGTERM during an outage', () => {
  it('exits 0 within stopTimeoutS, leaves the backlog intact in the outbox, and the next start delivers it', async () => {
    // Everything per attempt: a retry never meets a previous attempt's agent, stopped broker, outbox or messages.
    let tmp: TempDir | undefined;
    let pty: PtyPair | undefined;
    let sim: Simulator | undefined;
    let broker: Mosquitto | undefined;
    let sub: Subscriber | undefined;
    const agents: SpawnedProcess[] = [];
    try {
      tmp = await tempDir('rackguard-sigterm-outage-');
      [pty, broker] = await Promise.all([startPtyPair(), startMosquitto()]);
      const outboxPath = join(tmp.path, 'outbox.db');
      const text = `${twoRacksConfig({ bus: { serialPath: pty.a }, top: `stopTimeoutS: ${STOP_TIMEOUT_S}\n`, device: `pollIntervalMs: ${POLL_MS}` })}${ZONE_Z1}outputs:
  outbox: { path: ${outboxPath} }
  mqtt: { url: '${broker.url}', clientId: rg-sigterm, reconnectInitialMs: 200, reconnectMaxMs: 1000 }
http: { port: 0 }
`;
      const file = join(tmp.path, 'agent.yaml');
      writeFileSync(file, text);
      sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b });
      const watcher = (sub = await startSubscriber(broker.url, { clientId: 'sigterm-watcher', topic: `${BASE}/sensors/#` }));
      const sampleTimes = (point: string): number[] =>
        watcher.messages.filter((m) => m.topic === `${BASE}/sensors/${point}`).map((m) => (JSON.parse(m.payload) as { tsMs: number }).tsMs);

      const first = await startAgent(file, agents);
      await expect.poll(() => sampleTimes('r1.temperature').length, { timeout: 15_000 }).toBeGreaterThan(4);

      await broker.stop();
      const outageFrom = Date.now();
      await expect.poll(async () => (await state(first.url)).outputs.sinks.mqtt!.depth, { timeout: 15_000, interval: 300 }).toBeGreaterThan(60);
      const depthBefore = (await state(first.url)).outputs.sinks.mqtt!.depth;

      const t0 = performance.now();
      first.agent.proc.kill('SIGTERM');
      const exit = await first.agent.exited;
      const stopMs = performance.now() - t0;
      const stoppedAt = Date.now();
      expect(exit).toEqual({ code: 0, signal: null });
      // The agent's own deadline is judged by its log below; this bounds the whole process exit, with
      // room for a loaded machine, well short of a drain that waited for the broker.
      expect(stopMs).toBeLessThan(STOP_TIMEOUT_S * 1000 + 3000);
      expect(first.agent.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(true);
      expect(first.agent.lines.some((l) => /did not stop within the stop deadline/.test(l))).toBe(false);

      // The file as the next start will find it.
      let backlog: number[];
      const db = new Database(outboxPath, { readonly: true });
      try {
        expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
        const cursor = (db.prepare("SELECT seq FROM cursors WHERE sink = 'mqtt'").get() as { seq: number }).seq;
        const { maxSeq, minSeq } = db.prepare('SELECT MAX(seq) AS maxSeq, MIN(seq) AS minSeq FROM records').get() as { maxSeq: number; minSeq: number };
        expect(cursor).toBeLessThan(maxSeq);
        expect(minSeq).toBeLessThanOrEqual(cursor + 1); // nothing unacknowledged was pruned
        const behind = (db.prepare('SELECT COUNT(*) AS n FROM records WHERE seq > ?').get(cursor) as { n: number }).n;
        expect(behind).toBeGreaterThanOrEqual(depthBefore);
        expect(behind).toBe(maxSeq - cursor); // no hole in the unacknowledged seqs
        backlog = (db.prepare("SELECT ts FROM records WHERE seq > ? AND point = 'r1.temperature' ORDER BY seq").all(cursor) as { ts: number }[]).map((r) => r.ts);
      } finally {
        db.close();
      }
      expect(backlog.length).toBeGreaterThan(10);

      await broker.restart();
      const second = await startAgent(file, agents);
      await expect.poll(() => Math.max(0, ...sampleTimes('r1.temperature')), { timeout: 30_000, interval: 500 }).toBeGreaterThan(stoppedAt);
      // Every r1 sample the outbox held at the stop arrived.
      const arrived = new Set(sampleTimes('r1.temperature'));
      expect(backlog.filter((t) => !arrived.has(t))).toEqual([]);
      // Polling went on through the outage up to the stop: no pause beyond a few slow cycles.
      const times = [...arrived].sort((a, b) => a - b).filter((t) => t >= outageFrom - 1000 && t <= stoppedAt - 1000);
      const gaps = times.slice(1).map((t, i) => t - times[i]!);
      expect(times.length).toBeGreaterThan(10);
      expect(Math.max(...gaps)).toBeLessThan(MAX_GAP_MS);
      expect(await second.agent.stop('SIGTERM')).toBe(0);
    } finally {
      for (const a of agents) await a.stop('SIGKILL');
      await sub?.stop();
      await sim?.stop();
      await Promise.all([pty?.stop(), broker?.cleanup()]);
      await tmp?.cleanup();
    }
  }, 120_000);
});
