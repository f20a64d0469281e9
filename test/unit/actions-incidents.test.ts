/**
 * The incident file (agent/actions/incidents.ts) read back after a restart: an entry that parses as
 * JSON but lacks fields (an older or hand-edited file) must not make the engine throw inside the
 * detector's event path (it runs synchronously in the agent's `detection` listeners, next to the
 * acquisition loop) and must not stop the zone's actions: the malformed entry is dropped with a
 * record, and the zone's next escalation is a new incident that runs its actions.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ActionEngine } from '../../agent/actions/engine.js';
import { INCIDENTS_FILE } from '../../agent/actions/incidents.js';
import { VirtualClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import type { ActionEvent } from '../../agent/outputs/events.js';
import { silentLogger } from '../helpers/agent.js';
import { settle } from '../helpers/fake-serial.js';
import { rackText } from '../helpers/config-text.js';

const dirs: string[] = [];
const engines: ActionEngine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Two sensors in zone za, and an exec action `name` (/bin/true) at `level` (and more `extra`); state in <dir>/state. */
function configFor(dir: string, level: 'alarm' | 'critical', name: string, extra: Array<[level: 'alarm' | 'critical', name: string]> = []) {
  return parseConfig(
    `${rackText(2, { id: 'za' })}actions:
  stateDir: state
  policies:
${[[level, name], ...extra].map(([l, n]) => `    - level: ${l}\n      actions: [{ kind: exec, name: ${n}, argv: [/bin/true] }]\n`).join('')}`,
    join(dir, 'c.yaml'),
    { baseDir: dir },
  );
}

describe('incident file read back after a restart', () => {
  it('a parseable entry with missing fields is dropped, not thrown from onDetection; the zone still acts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rackguard-incidents-'));
    dirs.push(dir);
    const clock = new VirtualClock({ startWallMs: Date.now() });
    mkdirSync(join(dir, 'state'));
    // No `fired`, no `highest`, no `startedTs`: as an older or hand-edited file could have it.
    writeFileSync(join(dir, 'state', INCIDENTS_FILE), JSON.stringify({ version: 1, incidents: [{ id: 'za-old', zone: 'za', handled: [], aliveTs: clock.wallMs() }] }));
    const config = configFor(dir, 'alarm', 'page');
    const records: ActionEvent[] = [];
    const engine = new ActionEngine(config.actions!, { clock, logger: silentLogger, site: 's', gateway: 'g', zones: config.zones, record: (e) => records.push(e), dryRun: true });
    engines.push(engine);
    await engine.start();
    const ev = { sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 0, k: 2, etaCriticalS: null };
    expect(() => engine.onDetection({ kind: 'zone_level', zone: 'za', from: 'warning', level: 'alarm', reason: 'to alarm', mono: clock.monoMs(), ts: clock.wallMs(), evidence: ev })).not.toThrow();
    await settle();
    expect(records.filter((r) => r.action === 'page').map((r) => r.status)).toEqual(['dry-run']);
    expect(records.find((r) => r.action === 'incident' && r.status === 'failed')?.message).toContain('malformed entry za-old dropped');
  });

  describe('resume after a restart: how long the agent was down', () => {
    const MIN = 60_000;
    const sensor = (pointId: string) => ({ pointId, tempC: 34, status: 'good', rateShortCPerMin: 3, rateLongCPerMin: 2, etaCriticalS: 20, flags: ['critical_eta'] });
    const evidence = { sensors: [sensor('r1.temperature'), sensor('r2.temperature')], chillers: [], agreeingAlarm: 2, agreeingCritical: 2, k: 2, etaCriticalS: 20 };

    /**
     * A first run handles `critical` (the room's shutdown) and stops; a second starts with the given wall
     * clock, boot and clock state, and the zone goes critical again. Returns the second run's records.
     */
    async function restart(second: { wallShiftMs: number; bootId: string; uptimeMs: number; clockSynced: boolean }): Promise<ActionEvent[]> {
      const dir = mkdtempSync(join(tmpdir(), 'rackguard-incidents-'));
      dirs.push(dir);
      mkdirSync(join(dir, 'state'));
      const config = configFor(dir, 'critical', 'shutdown-room');
      const clock = new VirtualClock({ startWallMs: Date.UTC(2026, 10, 30, 2) });
      const firstRecords: ActionEvent[] = [];
      const first = new ActionEngine(config.actions!, { clock, logger: silentLogger, site: 's', gateway: 'g', zones: config.zones, record: (e) => firstRecords.push(e), dryRun: true, boot: () => ({ bootId: 'boot-a', uptimeMs: 3_600_000 }), clockSynced: () => true });
      await first.start();
      first.onDetection({ kind: 'zone_level', zone: 'za', from: 'alarm', level: 'critical', reason: 'to critical', mono: clock.monoMs(), ts: clock.wallMs(), evidence });
      for (let i = 0; i < 50 && !firstRecords.some((r) => r.action === 'shutdown-room'); i++) await settle();
      await settle();
      expect(firstRecords.map((r) => `${r.action}:${r.status}`)).toContain('shutdown-room:dry-run');
      await first.stop();

      clock.stepWall(second.wallShiftMs);
      const records: ActionEvent[] = [];
      const engine = new ActionEngine(config.actions!, { clock, logger: silentLogger, site: 's', gateway: 'g', zones: config.zones, record: (e) => records.push(e), dryRun: true, boot: () => ({ bootId: second.bootId, uptimeMs: second.uptimeMs }), clockSynced: () => second.clockSynced });
      engines.push(engine);
      await engine.start();
      engine.onDetection({ kind: 'zone_level', zone: 'za', from: 'alarm', level: 'critical', reason: 'to critical', mono: clock.monoMs(), ts: clock.wallMs(), evidence });
      await settle();
      return records;
    }
    const ranAgain = (records: ActionEvent[]): boolean => records.some((r) => r.action === 'shutdown-room');
    const status = (records: ActionEvent[]): string | undefined => records.find((r) => r.action === 'incident')?.status;

    it('same boot, 2 min later by uptime: the incident resumes and the shutdown is not repeated, whatever the wall clock did', async () => {
      const r = await restart({ wallShiftMs: -3 * 3_600_000, bootId: 'boot-a', uptimeMs: 3_600_000 + 2 * MIN, clockSynced: false });
      expect(status(r)).toBe('resumed');
      expect(ranAgain(r)).toBe(false);
    });

    it('same boot, 30 min later by uptime although the wall clock says 1 min: closed, and the new failure is acted on', async () => {
      const r = await restart({ wallShiftMs: 1 * MIN, bootId: 'boot-a', uptimeMs: 3_600_000 + 30 * MIN, clockSynced: false });
      expect(status(r)).toBe('closed');
      expect(ranAgain(r)).toBe(true);
    });

    it('after a reboot on an unsynchronised clock (fake-hwclock restored a time just after the old one): closed as unknown, and acted on', async () => {
      const r = await restart({ wallShiftMs: 1 * MIN, bootId: 'boot-b', uptimeMs: 40_000, clockSynced: false });
      expect(status(r)).toBe('closed');
      expect(records0(r)).toContain('not known to be synchronised');
      expect(ranAgain(r)).toBe(true);
    });

    it('after a reboot on a synchronised clock: the wall clock decides (2 min: resumed; 20 min: closed)', async () => {
      const soon = await restart({ wallShiftMs: 2 * MIN, bootId: 'boot-b', uptimeMs: 40_000, clockSynced: true });
      expect(status(soon)).toBe('resumed');
      expect(ranAgain(soon)).toBe(false);
      const late = await restart({ wallShiftMs: 20 * MIN, bootId: 'boot-b', uptimeMs: 40_000, clockSynced: true });
      expect(status(late)).toBe('closed');
      expect(ranAgain(late)).toBe(true);
    });

    const records0 = (records: ActionEvent[]): string => records.find((r) => r.action === 'incident')?.message ?? '';

    it('an incident file from before `completed` existed: after two restarts the old level is still not run again', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'rackguard-incidents-'));
      dirs.push(dir);
      mkdirSync(join(dir, 'state'));
      const config = configFor(dir, 'alarm', 'page', [['critical', 'shutdown-room']]);
      const clock = new VirtualClock({ startWallMs: Date.UTC(2026, 10, 30, 2) });
      // Written by an older version: `alarm` handled (and ran to its end), no `completed` field.
      writeFileSync(join(dir, 'state', INCIDENTS_FILE), JSON.stringify({ version: 1, incidents: [{ id: 'za-1', zone: 'za', startedTs: clock.wallMs() - 60_000, highest: 'alarm', handled: ['alarm'], fired: [0], aliveTs: clock.wallMs() - 30_000, aliveBoot: { bootId: 'boot-a', uptimeMs: 1_000_000 } }] }));
      const records: ActionEvent[] = [];
      const make = (uptimeMs: number) => {
        const e = new ActionEngine(config.actions!, { clock, logger: silentLogger, site: 's', gateway: 'g', zones: config.zones, record: (r) => records.push(r), dryRun: true, boot: () => ({ bootId: 'boot-a', uptimeMs }), clockSynced: () => true });
        engines.push(e);
        return e;
      };
      const first = make(1_030_000);
      await first.start();
      first.onDetection({ kind: 'zone_level', zone: 'za', from: 'alarm', level: 'critical', reason: 'to critical', mono: clock.monoMs(), ts: clock.wallMs(), evidence });
      for (let i = 0; i < 50 && !records.some((r) => r.action === 'shutdown-room'); i++) await settle();
      await settle();
      await first.stop();
      const second = make(1_060_000);
      await second.start();
      second.onDetection({ kind: 'zone_level', zone: 'za', from: 'normal', level: 'alarm', reason: 'to alarm', mono: clock.monoMs(), ts: clock.wallMs(), evidence });
      second.onDetection({ kind: 'zone_level', zone: 'za', from: 'alarm', level: 'critical', reason: 'to critical', mono: clock.monoMs(), ts: clock.wallMs(), evidence });
      for (let i = 0; i < 20; i++) await settle();
      expect(records.filter((r) => r.action === 'page')).toEqual([]);
      expect(records.filter((r) => r.action === 'shutdown-room').map((r) => r.status)).toEqual(['dry-run']);
      expect(records.filter((r) => r.action === 'incident').map((r) => r.status)).toEqual(['resumed', 'escalated', 'resumed']);
    });
  });
});
