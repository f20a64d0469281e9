/**
 * The action engine across a configuration reload (SIGHUP → Agent.reload), on the real agent with a
 * serial-stream sensor through the `opener` seam and VirtualClock. A reload that changes a zone's
 * detection parameters rebuilds that zone's machine (Detector.adopt): it starts normal and not blind
 * and emits nothing until it changes. The engine must neither keep that zone's incident open for ever
 * (the next real failure would find every level handled and run nothing) nor remember a blindness
 * from before (the gate would refuse critical actions for ever). A reload that changes `actions:` is
 * refused rather than silently ignored (the engine is never rebuilt under an incident).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import { RESUME_WINDOW_MS } from '../../agent/actions/engine.js';
import { VirtualClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import type { DetectorEvent, Level } from '../../agent/detection/types.js';
import type { ActionEvent } from '../../agent/outputs/events.js';
import { silentLogger } from '../helpers/agent.js';
import { fakeOpener, settle } from '../helpers/fake-serial.js';

const dirs: string[] = [];
const agents: Agent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function configText(dir: string, o: { dwellS?: number; policyName?: string } = {}): string {
  return `version: 1
buses:
  - id: probe
    type: serial-stream
    path: /dev/ttyFAKE0
    pattern: '^(?<t1>\\d+(?:\\.\\d+)?),(?<t2>\\d+(?:\\.\\d+)?)$'
    timeoutMs: 5000
    points:
      - { name: t1, group: t1, unit: "°C", kind: temperature }
      - { name: t2, group: t2, unit: "°C", kind: temperature }
zones:
  - id: za
    sensors: [probe.t1, probe.t2]
    detection: { dwellS: ${o.dwellS ?? 30} }
actions:
  stateDir: ${join(dir, 'state')}
  policies:
    - level: critical
      actions: [{ kind: exec, name: ${o.policyName ?? 'drain'}, argv: [/bin/true] }]
`;
}

async function startAgent() {
  const dir = mkdtempSync(join(tmpdir(), 'rackguard-actions-reload-'));
  dirs.push(dir);
  const clock = new VirtualClock({ startWallMs: Date.now() });
  const opener = fakeOpener(clock);
  const config = parseConfig(configText(dir), join(dir, 'c.yaml'), { baseDir: dir });
  // Dry run: the records say "would run" for every action the engine decides to run, without processes.
  const agent = createAgent(config, { logger: silentLogger, clock, opener, actionsDryRun: true });
  agents.push(agent);
  const records: ActionEvent[] = [];
  agent.on('action', (e) => records.push(e));
  await agent.start();
  await settle();
  expect(opener.ports.length).toBe(1);
  const port = opener.ports[0]!;
  /** Normal readings every second for `ms` of virtual time. */
  const normalFor = async (ms: number): Promise<void> => {
    for (let t = 0; t < ms; t += 1000) {
      port.receive(Buffer.from('22.0,22.1\n'));
      await settle();
      clock.advance(1000);
      await settle();
    }
  };
  return { dir, clock, agent, records, normalFor };
}

const evidence = (crit: number) => ({
  sensors: ['probe.t1', 'probe.t2'].map((id, i) => ({ pointId: id, tempC: 36, status: 'good', rateShortCPerMin: 2, rateLongCPerMin: 1, etaCriticalS: 0, flags: i < crit ? ['alarm_temp', 'critical_temp'] : [] })),
  chillers: [],
  agreeingAlarm: crit,
  agreeingCritical: crit,
  k: 2,
  etaCriticalS: 0,
});

const critical = (clock: VirtualClock, from: Level = 'alarm'): DetectorEvent => ({ kind: 'zone_level', zone: 'za', from, level: 'critical', reason: 'to critical', mono: clock.monoMs(), ts: clock.wallMs(), evidence: evidence(2) });

const wouldRun = (records: ActionEvent[]) => records.filter((r) => r.action === 'drain' && r.status === 'dry-run');

describe('action engine across a reload', () => {
  it('an incident of a zone the reload rebuilt closes once the zone stays normal; the next failure runs its actions again', async () => {
    const { dir, clock, agent, records, normalFor } = await startAgent();
    await normalFor(3000);
    agent.emit('detection', critical(clock));
    await settle();
    expect(wouldRun(records)).toHaveLength(1);
    const first = wouldRun(records)[0]!.incident;

    const changes = await agent.reload(parseConfig(configText(dir, { dwellS: 45 }), join(dir, 'c.yaml'), { baseDir: dir }));
    expect(changes.join('; ')).toContain('1 new or changed (za)');
    // The rebuilt zone is normal and stays so: its old incident must end (no `normal` event will come).
    await normalFor(RESUME_WINDOW_MS + 5000);
    expect(records.filter((r) => r.action === 'incident' && r.status === 'cleared').map((r) => r.incident)).toEqual([first]);

    // A real failure later is a new incident, and its actions run.
    agent.emit('detection', critical(clock));
    await settle();
    expect(wouldRun(records)).toHaveLength(2);
    expect(wouldRun(records)[1]!.incident).not.toBe(first);
  });

  it('a zone that escalates again after the reload continues its incident: nothing runs twice', async () => {
    const { dir, clock, agent, records, normalFor } = await startAgent();
    await normalFor(2000);
    agent.emit('detection', critical(clock));
    await settle();
    await agent.reload(parseConfig(configText(dir, { dwellS: 45 }), join(dir, 'c.yaml'), { baseDir: dir }));
    await normalFor(5000);
    agent.emit('detection', critical(clock, 'normal'));
    await settle();
    await normalFor(RESUME_WINDOW_MS + 5000);
    expect(wouldRun(records)).toHaveLength(1);
    expect(records.filter((r) => r.action === 'incident' && r.status === 'cleared')).toHaveLength(0);
  });

  it('a blindness reported before the reload does not refuse critical actions of the rebuilt zone for ever', async () => {
    const { dir, clock, agent, records, normalFor } = await startAgent();
    await normalFor(2000);
    agent.emit('detection', { kind: 'zone_blind', zone: 'za', blind: true, level: 'warning', reason: 'blind', mono: clock.monoMs(), ts: clock.wallMs(), evidence: evidence(0) });
    await agent.reload(parseConfig(configText(dir, { dwellS: 45 }), join(dir, 'c.yaml'), { baseDir: dir }));
    await normalFor(2000);
    agent.emit('detection', critical(clock, 'normal'));
    await settle();
    expect(records.filter((r) => r.action === 'drain').map((r) => r.status)).toEqual(['dry-run']);
  });

  it('a reload that changes actions: is refused (E_RELOAD_NEEDS_RESTART), not silently ignored', async () => {
    const { dir, agent } = await startAgent();
    await expect(agent.reload(parseConfig(configText(dir, { policyName: 'drain2' }), join(dir, 'c.yaml'), { baseDir: dir }))).rejects.toMatchObject({ code: 'E_RELOAD_NEEDS_RESTART', message: expect.stringContaining('actions changed') });
  });
});
