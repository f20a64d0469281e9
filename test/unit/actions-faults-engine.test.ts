/**
 * Fault review of the action engine (issue 8), with real exec hooks writing marker files, a real
 * incident file and a real inhibit file in a temp dir; detector events are built here (the engine's
 * seam, onDetection).
 *
 * - The operator's brake: a maintenance inhibit set while a shutdown sequence runs (a false alarm
 *   seen in time) stops it before its next step; no further host is asked, no final hook runs.
 * - A restart in the middle of a level's actions (a shutdown with groups not yet asked): the level is
 *   due again after the restart, so a zone still critical finishes it; levels that ended are not repeated.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../agent/clock.js';
import { ActionEngine } from '../../agent/actions/engine.js';
import { parseConfig } from '../../agent/config/load.js';
import type { DetectorEvent, Level } from '../../agent/detection/types.js';
import type { ActionEvent } from '../../agent/outputs/events.js';
import { silentLogger } from '../helpers/agent.js';

const root = mkdtempSync(join(tmpdir(), 'rackguard-faults-engine-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

function script(dir: string, name: string, body: string): string {
  const f = join(dir, name);
  writeFileSync(f, `#!/bin/sh\n${body}\n`);
  chmodSync(f, 0o755);
  return f;
}

/** A zone_level event with `crit` good sensors flagged critical (quorum for k = 2). */
function lvl(from: Level, level: Level, crit = level === 'critical' ? 2 : 0): DetectorEvent {
  const s = (id: string) => ({ pointId: id, tempC: 36, status: 'good', rateShortCPerMin: 2, rateLongCPerMin: 1, etaCriticalS: 0, flags: ['alarm_temp', 'critical_temp'] });
  return { kind: 'zone_level', zone: 'za', from, level, reason: `to ${level}`, mono: performance.now(), ts: Date.now(), evidence: { sensors: Array.from({ length: crit }, (_, i) => s(`r${i + 1}.temperature`)), chillers: [], agreeingAlarm: crit, agreeingCritical: crit, k: 2, etaCriticalS: 0 } };
}

function setup(policies: string, shutdown = '') {
  const dir = join(root, `case${++n}`);
  mkdirSync(dir, { recursive: true });
  const text = `version: 1
buses:
  - id: l
    type: serial
    path: /dev/null
    devices: [{ id: r1, unitId: 1, profile: xy-md02 }, { id: r2, unitId: 2, profile: xy-md02 }, { id: r3, unitId: 3, profile: xy-md02 }]
zones:
  - { id: za, sensors: [r1.temperature, r2.temperature, r3.temperature] }
actions:
  stateDir: state
  inhibit: { file: maintenance }
  policies:
${policies}
${shutdown}`;
  const config = parseConfig(text, join(dir, 'c.yaml'), { baseDir: dir });
  const records: ActionEvent[] = [];
  const make = (): ActionEngine => new ActionEngine(config.actions!, { clock: systemClock, logger: silentLogger, site: 's', gateway: 'g', zones: config.zones, record: (e) => records.push(e) });
  const marks = (): string[] => (existsSync(join(dir, 'marks')) ? readFileSync(join(dir, 'marks'), 'utf8').trim().split('\n') : []);
  return { dir, records, make, marks };
}

async function until(records: ActionEvent[], pred: (e: ActionEvent) => boolean, what: string): Promise<void> {
  await expect
    .poll(() => records.some(pred), { timeout: 20_000, interval: 10 })
    .toBe(true)
    .catch((err: unknown) => {
      throw new Error(`${what}: ${(err as Error).message}; ${records.map((r) => `${r.action}:${r.status}`).join(' ')}`);
    });
}

const engines: ActionEngine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.stop();
});

describe('action engine faults', () => {
  it('an inhibit set while the shutdown sequence runs stops it before its next step: no host asked, no final hook', async () => {
    const dir = join(root, `case${n + 1}`);
    mkdirSync(dir, { recursive: true });
    // The failover hook stands for the operator: while it runs, the maintenance file appears.
    const failover = script(dir, 'failover.sh', `echo failover >> "${dir}/marks"\ntouch "${dir}/maintenance"`);
    const final = script(dir, 'final.sh', `echo final >> "${dir}/marks"`);
    const cred = script(dir, 'cred', 'x');
    const s = setup(
      '    - { level: critical, actions: [{ kind: shutdown }] }',
      `  shutdown:
    failover: [{ kind: exec, name: drain, argv: ["${failover}"] }]
    groups:
      - { name: compute, hosts: [{ via: ipmi, name: h1, address: 127.0.0.1, port: 9, usernameFile: ${cred}, passwordFile: ${cred} }] }
    final: [{ kind: exec, name: last-word, argv: ["${final}"] }]
    hostSyncS: 1
`,
    );
    const eng = s.make();
    engines.push(eng);
    await eng.start();
    eng.onDetection(lvl('alarm', 'critical'));
    await until(s.records, (r) => r.action === 'shutdown' && r.status !== 'started' && r.detail?.kind === 'shutdown', 'the shutdown action to end');
    expect(s.marks()).toEqual(['failover']);
    expect(s.records.filter((r) => r.status === 'asked')).toEqual([]);
    expect(s.records.find((r) => r.detail?.step === 'sequence' && r.status !== 'started')).toMatchObject({ status: 'inhibited', message: expect.stringMatching(/before group compute.*maintenance inhibit.*groups not asked: compute.*final hooks not run: last-word/) });
    expect(s.records.find((r) => r.detail?.kind === 'shutdown' && r.status !== 'started')?.status).toBe('inhibited');
    expect(s.records.some((r) => r.action === 'inhibit' && r.status === 'on')).toBe(true);
  }, 30_000);

  it('the agent stopped in the middle of the critical actions: after the restart, the zone still critical runs them again; the alarm page is not repeated', async () => {
    const dir = join(root, `case${n + 1}`);
    mkdirSync(dir, { recursive: true });
    const gate = join(dir, 'gate');
    const slow = script(dir, 'slow.sh', `echo "$1 start" >> "${dir}/marks"\nwhile [ ! -e "${gate}" ]; do sleep 0.02; done\necho "$1 end" >> "${dir}/marks"`);
    const quick = script(dir, 'quick.sh', `echo "$1" >> "${dir}/marks"`);
    const s = setup(`    - { level: alarm, actions: [{ kind: exec, name: page, argv: ["${quick}", page] }] }
    - { level: critical, actions: [{ kind: exec, name: drain, argv: ["${slow}", drain] }, { kind: exec, name: hosts-off, argv: ["${quick}", hosts-off] }] }`);
    const first = s.make();
    engines.push(first);
    await first.start();
    first.onDetection(lvl('normal', 'alarm'));
    first.onDetection(lvl('alarm', 'critical'));
    await expect.poll(() => s.marks(), { timeout: 10_000, interval: 10 }).toEqual(['page', 'drain start']);
    // A restart (systemctl restart, a watchdog) while drain runs: hosts-off was never started.
    await first.stop();

    const second = s.make();
    engines.push(second);
    await second.start();
    const resumed = s.records.find((r) => r.action === 'incident' && r.status === 'resumed');
    expect(resumed?.detail).toMatchObject({ handled: ['alarm'], interrupted: ['critical'] });
    writeFileSync(gate, '');
    // The restarted detector sees the zone again: alarm, then critical with quorum.
    second.onDetection(lvl('normal', 'alarm'));
    second.onDetection(lvl('alarm', 'critical'));
    await until(s.records, (r) => r.action === 'hosts-off' && r.status === 'succeeded', 'hosts-off to run after the restart');
    expect(s.marks()).toEqual(['page', 'drain start', 'drain start', 'drain end', 'hosts-off']);
    expect(new Set(s.records.filter((r) => r.incident).map((r) => r.incident)).size).toBe(1);

    // Once it ran to its end, a further restart repeats nothing.
    await second.stop();
    const third = s.make();
    engines.push(third);
    await third.start();
    third.onDetection(lvl('normal', 'critical'));
    expect(s.records.filter((r) => r.action === 'incident' && r.status === 'resumed').at(-1)?.detail).toMatchObject({ handled: ['alarm', 'critical'], interrupted: [] });
    await third.stop();
    expect(s.marks()).toEqual(['page', 'drain start', 'drain start', 'drain end', 'hosts-off']);
  }, 30_000);
});
