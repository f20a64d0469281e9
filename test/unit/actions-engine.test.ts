/**
 * The action engine's rules on detector events built here (the seam: onDetection), with real exec
 * hooks writing marker files and a real incident file in a temp dir: once per incident per level,
 * escalation order, onClear once, the safety gate (single sensor, stale data, blind zone, zone_blind
 * events), restart without re-running, stale events refused, dry run, inhibit file. The integration
 * test (test/integration/actions.test.ts) does the same through the simulator and the real agent.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../agent/clock.js';
import { ActionEngine, MAX_EVENT_AGE_MS } from '../../agent/actions/engine.js';
import { parseConfig } from '../../agent/config/load.js';
import type { DetectorEvent, Level, SensorEvidence } from '../../agent/detection/types.js';
import type { ActionEvent } from '../../agent/outputs/events.js';
import { silentLogger } from '../helpers/agent.js';
import { rackText } from '../helpers/config-text.js';

const root = mkdtempSync(join(tmpdir(), 'rackguard-engine-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

/** A hook appending its name, level and incident to a marker file: one line per run. */
function hook(dir: string): string {
  const f = join(dir, 'hook.sh');
  writeFileSync(f, `#!/bin/sh\nprintf '%s %s %s\\n' "$1" "$RACKGUARD_LEVEL" "$RACKGUARD_INCIDENT" >> ${join(dir, 'marks')}\n`);
  chmodSync(f, 0o755);
  return f;
}

function setup(extra = '', opts: { dryRun?: boolean; runShutdown?: ConstructorParameters<typeof ActionEngine>[1]['runShutdown'] } = {}) {
  const dir = join(root, `case${++n}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const h = hook(dir);
  const text = `${rackText(3, { id: 'za' })}actions:
  stateDir: state
  inhibit: { file: maintenance }
${extra}
  policies:
    - level: warning
      actions: [{ kind: exec, name: warn, argv: ["${h}", warn] }]
    - level: alarm
      actions: [{ kind: exec, name: page, argv: ["${h}", page] }, { kind: exec, name: page2, argv: ["${h}", page2] }]
      onClear: [{ kind: exec, name: unpage, argv: ["${h}", unpage] }]
    - level: critical
      actions: [{ kind: exec, name: failover, argv: ["${h}", failover] }${opts.runShutdown ? ', { kind: shutdown }' : ''}]
${opts.runShutdown ? `  shutdown:\n    failover: [{ kind: exec, name: drain, argv: ["${h}", drain] }]\n    groups: [{ name: g, hosts: [{ via: ipmi, name: h1, address: 127.0.0.1, usernameFile: ${h}, passwordFile: ${h} }] }]\n` : ''}`;
  const config = parseConfig(text, join(dir, 'c.yaml'), { baseDir: dir });
  const records: ActionEvent[] = [];
  const make = (): ActionEngine =>
    new ActionEngine(config.actions!, { clock: systemClock, logger: silentLogger, site: 's', gateway: 'g', zones: config.zones, record: (e) => records.push(e), ...(opts.dryRun ? { dryRun: true } : {}), ...(opts.runShutdown ? { runShutdown: opts.runShutdown } : {}) });
  const marks = (): string[] => (existsSync(join(dir, 'marks')) ? readFileSync(join(dir, 'marks'), 'utf8').trim().split('\n') : []);
  return { dir, config, records, make, marks };
}

const sensor = (id: string, status: string, flags: string[]): SensorEvidence => ({ pointId: id, tempC: 30, status, rateShortCPerMin: 2, rateLongCPerMin: 1, etaCriticalS: 60, flags });

/** A zone_level event; `crit` sensors good and flagged critical, `staleCrit` flagged but stale. */
function lvl(from: Level, level: Level, o: { crit?: number; staleCrit?: number; k?: number; agreeing?: number; ts?: number; mono?: number } = {}): DetectorEvent {
  const crit = o.crit ?? (level === 'critical' ? 2 : 0);
  const sensors = [
    ...Array.from({ length: crit }, (_, i) => sensor(`r${i + 1}.temperature`, 'good', ['alarm_temp', 'critical_temp'])),
    ...Array.from({ length: o.staleCrit ?? 0 }, (_, i) => sensor(`s${i}.temperature`, 'stale', ['critical_temp'])),
  ];
  return {
    kind: 'zone_level',
    zone: 'za',
    from,
    level,
    reason: `to ${level}`,
    mono: o.mono ?? performance.now(),
    ts: o.ts ?? Date.now(),
    evidence: { sensors, chillers: [], agreeingAlarm: crit, agreeingCritical: o.agreeing ?? crit + (o.staleCrit ?? 0), k: o.k ?? 2, etaCriticalS: 60 },
  };
}

/** Waits for the zone's queue: the records say when the last expected action finished. */
async function settle(records: ActionEvent[], count: number, pred: (e: ActionEvent) => boolean): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (records.filter(pred).length >= count) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out; records: ${records.map((r) => `${r.action}:${r.status}`).join(' ')}`);
}
const done = (e: ActionEvent): boolean => ['succeeded', 'failed', 'timeout', 'inhibited', 'dry-run', 'skipped'].includes(e.status) && e.action !== 'incident';

const engines: ActionEngine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.stop();
});
function started(make: () => ActionEngine): Promise<ActionEngine> {
  const e = make();
  engines.push(e);
  return e.start().then(() => e);
}

describe('action engine', () => {
  it('once per incident per level, in order; a drop and rise again runs nothing twice; onClear once; the incident id on every record', async () => {
    const s = setup();
    const eng = await started(s.make);
    eng.onDetection(lvl('normal', 'warning'));
    eng.onDetection(lvl('warning', 'alarm'));
    eng.onDetection(lvl('alarm', 'warning'));
    eng.onDetection(lvl('warning', 'alarm'));
    eng.onDetection(lvl('alarm', 'critical'));
    eng.onDetection(lvl('critical', 'alarm'));
    eng.onDetection(lvl('alarm', 'critical'));
    await settle(s.records, 4, done);
    eng.onDetection(lvl('critical', 'normal'));
    await settle(s.records, 5, done);
    const marks = s.marks();
    expect(marks.map((m) => m.split(' ').slice(0, 2).join(' '))).toEqual(['warn warning', 'page alarm', 'page2 alarm', 'failover critical', 'unpage normal']);
    const ids = new Set(marks.map((m) => m.split(' ')[2]));
    expect(ids.size).toBe(1);
    const id = [...ids][0]!;
    expect(id).toMatch(/^za-\d{8}T\d{6}Z-[0-9a-f]{6}$/);
    expect(s.records.every((r) => r.incident === id)).toBe(true);
    expect(s.records.filter((r) => r.action === 'incident').map((r) => r.status)).toEqual(['opened', 'escalated', 'escalated', 'cleared']);
    expect(s.records.filter((r) => r.action === 'page').map((r) => r.status)).toEqual(['started', 'succeeded']);
    expect(s.records.find((r) => r.action === 'page' && r.status === 'succeeded')!.detail).toMatchObject({ exitCode: 0, kind: 'exec', level: 'alarm' });
    // A new episode is a new incident: its actions run again.
    eng.onDetection(lvl('normal', 'warning'));
    await settle(s.records, 6, done);
    expect(s.marks()[5]!.split(' ')[2]).not.toBe(id);
  });

  it('a jump straight to critical runs the lower levels first (warning, alarm, critical), each once', async () => {
    const s = setup();
    const eng = await started(s.make);
    eng.onDetection(lvl('normal', 'critical'));
    await settle(s.records, 4, done);
    expect(s.marks().map((m) => m.split(' ')[0])).toEqual(['warn', 'page', 'page2', 'failover']);
  });

  it.each([
    ['a single sensor (k lowered to 1)', { crit: 1, k: 1 }],
    ['stale data agreeing', { crit: 1, staleCrit: 1 }],
    ['no quorum', { crit: 2, k: 3, agreeing: 2 }],
  ])('the safety gate refuses critical actions on %s, and a later event with quorum still fires them', async (_name, o) => {
    const s = setup();
    const eng = await started(s.make);
    eng.onDetection(lvl('alarm', 'critical', o));
    await settle(s.records, 4, done);
    expect(s.marks().map((m) => m.split(' ')[0])).toEqual(['warn', 'page', 'page2']);
    const skipped = s.records.find((r) => r.action === 'failover' && r.status === 'skipped')!;
    expect(skipped.message).toMatch(/safety gate/);
    eng.onDetection(lvl('alarm', 'critical'));
    await settle(s.records, 5, done);
    expect(s.marks().map((m) => m.split(' ')[0])).toEqual(['warn', 'page', 'page2', 'failover']);
  });

  it('a blind zone: critical refused; a zone_blind event triggers nothing', async () => {
    const s = setup();
    const eng = await started(s.make);
    const blind: DetectorEvent = { ...(lvl('normal', 'warning') as Extract<DetectorEvent, { kind: 'zone_level' }>), kind: 'zone_blind', blind: true, level: 'warning' } as unknown as DetectorEvent;
    eng.onDetection(blind);
    eng.onDetection(lvl('alarm', 'critical'));
    await settle(s.records, 4, done);
    expect(s.marks().map((m) => m.split(' ')[0])).toEqual(['warn', 'page', 'page2']);
    expect(s.records.find((r) => r.action === 'failover')!.message).toMatch(/blind/);
  });

  it('an event older than 2 minutes (monotonic) is not acted on', async () => {
    const s = setup();
    const eng = await started(s.make);
    eng.onDetection(lvl('normal', 'warning', { mono: performance.now() - MAX_EVENT_AGE_MS - 1000 }));
    // Judged at once (onDetection is synchronous): no incident opened, nothing queued. Counting marks
    // alone could not tell: the fresh event below would find its level already handled.
    expect(s.records).toEqual([]);
    eng.onDetection(lvl('normal', 'warning'));
    await settle(s.records, 1, done);
    expect(s.marks()).toHaveLength(1);
  });

  it('a fresh event stamped before a wall-clock step (NTP moved the clock two weeks on) is acted on', async () => {
    const s = setup();
    const eng = await started(s.make);
    eng.onDetection(lvl('normal', 'warning', { ts: Date.now() - 14 * 86_400_000 }));
    await settle(s.records, 1, done);
    expect(s.marks()).toHaveLength(1);
  });

  it('after a restart, an incident already handled is not run again (persisted before the actions start)', async () => {
    const s = setup();
    const eng = await started(s.make);
    eng.onDetection(lvl('normal', 'alarm'));
    await settle(s.records, 3, done);
    await eng.stop();
    const id = s.marks()[0]!.split(' ')[2];
    // The detector starts at normal after a restart and escalates again: the same incident, nothing repeated.
    const again = await started(s.make);
    expect(s.records.filter((r) => r.action === 'incident').map((r) => r.status)).toEqual(['opened', 'resumed']);
    again.onDetection(lvl('normal', 'warning'));
    again.onDetection(lvl('warning', 'alarm'));
    again.onDetection(lvl('alarm', 'critical'));
    await settle(s.records, 4, done);
    expect(s.marks().map((m) => `${m.split(' ')[0]} ${m.split(' ')[2]}`)).toEqual([`warn ${id}`, `page ${id}`, `page2 ${id}`, `failover ${id}`]);
  });

  it('dry run: nothing runs, every action is recorded as dry-run', async () => {
    const s = setup('', { dryRun: true });
    const eng = await started(s.make);
    eng.onDetection(lvl('normal', 'critical'));
    await settle(s.records, 4, done);
    expect(s.marks()).toEqual([]);
    expect(s.records.filter((r) => r.status === 'dry-run').map((r) => r.action)).toEqual(['warn', 'page', 'page2', 'failover']);
  });

  it('inhibit file: actions held back (inhibited records), the inhibition itself on and off as events', async () => {
    const s = setup();
    writeFileSync(join(s.dir, 'maintenance'), '');
    const eng = await started(s.make);
    eng.onDetection(lvl('normal', 'alarm'));
    await settle(s.records, 3, done);
    expect(s.marks()).toEqual([]);
    expect(s.records.filter((r) => r.status === 'inhibited').map((r) => r.action)).toEqual(['warn', 'page', 'page2']);
    expect(s.records.find((r) => r.action === 'inhibit')!.status).toBe('on');
    rmSync(join(s.dir, 'maintenance'));
    await settle(s.records, 1, (r) => r.action === 'inhibit' && r.status === 'off');
    eng.onDetection(lvl('alarm', 'critical'));
    await settle(s.records, 4, done);
    expect(s.marks().map((m) => m.split(' ')[0])).toEqual(['failover']);
  });

  it('the shutdown kind calls the coordinator (after the gate) with its hooks and records; in dry run its hooks do not run', async () => {
    const calls: Array<{ dryRun: boolean; hook: string }> = [];
    const runShutdown: NonNullable<Parameters<typeof setup>[1]>['runShutdown'] = async (ctx, deps) => {
      const r = await deps.runHook(deps.config.failover[0]!, ctx);
      calls.push({ dryRun: ctx.dryRun, hook: r.status });
      deps.record({ action: 'shutdown', status: 'group-done', zone: ctx.zone, incident: ctx.incident, message: 'g done' });
      return { groups: [], failover: [r], final: [], aborted: false };
    };
    const s = setup('', { runShutdown });
    const eng = await started(s.make);
    eng.onDetection(lvl('alarm', 'critical', { crit: 1, k: 1 }));
    await settle(s.records, 5, done);
    expect(calls).toEqual([]);
    eng.onDetection(lvl('alarm', 'critical'));
    await settle(s.records, 1, (r) => r.action === 'shutdown' && r.status === 'succeeded');
    expect(calls).toEqual([{ dryRun: false, hook: 'succeeded' }]);
    expect(s.marks().map((m) => m.split(' ')[0])).toEqual(['warn', 'page', 'page2', 'failover', 'drain']);
    const trail = s.records.filter((r) => r.action === 'shutdown').map((r) => r.status);
    expect(trail).toEqual(['skipped', 'started', 'group-done', 'succeeded']);
    expect(new Set(s.records.map((r) => r.incident)).size).toBe(1);

    const d = setup('', { runShutdown, dryRun: true });
    const dry = await started(d.make);
    calls.length = 0;
    dry.onDetection(lvl('alarm', 'critical'));
    await settle(d.records, 1, (r) => r.action === 'shutdown' && r.status === 'group-done');
    expect(calls).toEqual([{ dryRun: true, hook: 'dry-run' }]);
    expect(d.marks()).toEqual([]);
  });
});
