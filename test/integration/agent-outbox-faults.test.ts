/**
 * The outbox's faults, with the built agent (dist/agent/main.js), the simulator on a socat pty and a
 * real mosquitto:
 * - an outbox path that is a directory, and a read-only filesystem: the agent starts anyway, polls,
 *   detects, reports the problem once as an error and as an event on MQTT, and opens the outbox as
 *   soon as it is fixed, writing the events it held in memory;
 * - an 8 MB tmpfs filled up during a chiller trip: every zone event reaches MQTT while the disk is
 *   full and the outbox file once space is back, with ONE gap event and a bounded number of error lines.
 *
 * Real filesystems need root (mount -t tmpfs, remount ro): root ignores chmod, not a read-only mount.
 * Where mount is impossible the test fails and says why; it never skips.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { parseScenario, startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { labRackConfig } from '../helpers/two-racks.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'agent', 'main.js');

interface Msg {
  topic: string;
  text: string;
}

let tmp: TempDir;
let broker: Mosquitto;
let sub: MqttClient;
const msgs: Msg[] = [];
const cleanups: Array<() => Promise<void> | void> = [];
// Each attempt of a test (vitest retries a failed one) gets its own directory and gateway name (so its
// own topics): a retry must not meet the outbox file, mount or messages of the attempt before it.
let attempts = 0;
const fresh = (name: string): string => `${name}${++attempts}`;

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(`\`${cmd} ${args.join(' ')}\` failed (${r.error?.message ?? r.stderr.trim()}): this test needs root and mount(8) for a real tmpfs; it does not skip`);
  }
}

/** A tmpfs of its own at `dir`, unmounted after the test. */
function mountTmpfs(dir: string, options: string): void {
  mkdirSync(dir, { recursive: true });
  sh('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]);
  cleanups.push(() => {
    spawnSync('umount', ['-l', dir]);
  });
}

function waitMsg(pred: (m: Msg) => boolean, timeoutMs: number, what: string, from = 0): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const hit = msgs.slice(from).find(pred);
    if (hit) return resolve(hit);
    const timer = setTimeout(() => {
      sub.off('message', on);
      reject(new Error(`timed out waiting for ${what}; last: ${msgs.slice(-3).map((m) => `${m.topic} ${m.text.slice(0, 100)}`).join(' | ')}`));
    }, timeoutMs);
    const on = (): void => {
      const m = msgs[msgs.length - 1]!;
      if (!pred(m)) return;
      clearTimeout(timer);
      sub.off('message', on);
      resolve(m);
    };
    sub.on('message', on);
  });
}

interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

function jsonLines(agent: SpawnedProcess): LogLine[] {
  return agent.lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });
}

/** Events in the outbox file, after the agent stopped. */
function fileEvents(path: string): Array<{ kind: string; code?: string; zone?: string; level?: string; deviceId?: string; state?: string; detail?: Record<string, unknown> }> {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .prepare<[], { body: string }>('SELECT body FROM records WHERE cls = 1 ORDER BY seq')
      .all()
      .map((r) => (JSON.parse(r.body) as { event: { kind: string } }).event);
  } finally {
    db.close();
  }
}

interface Rig {
  pty: PtyPair;
  sim: Simulator;
  file: string;
  base: string;
}

async function rig(name: string, outbox: string, opts: { scenario?: string; zones?: boolean } = {}): Promise<Rig> {
  const pty = await startPtyPair();
  cleanups.push(() => pty.stop());
  const text = `${labRackConfig({ gateway: name, serialPath: pty.a, racks: 4, pollIntervalMs: 500, chiller: true, healthIntervalS: 600 })}zones:
  - { id: za, sensors: [r1.temperature, r2.temperature] }
  - { id: zb, sensors: [r3.temperature, r4.temperature] }
chillers:
  - { id: ch1, running: chiller1.running, alarm: chiller1.alarm_code, supplyTemp: chiller1.supply_temp, returnTemp: chiller1.return_temp, zones: [za, zb] }
detection: { k: 2, dwellS: 5 }
outputs:
  outbox: { path: ${outbox}, reopenInitialMs: 200, reopenMaxMs: 1000, maxQueuedEvents: 100, reserveBytes: 65536 }
  mqtt: { url: '${broker.url}', clientId: rg-${name}, reconnectInitialMs: 200, reconnectMaxMs: 1000 }
`;
  const file = join(tmp.path, `${name}.yaml`);
  writeFileSync(file, text);
  const config = parseConfig(text, file);
  const sim = await startSimulator({ config, serialPath: pty.b, ...(opts.scenario ? { scenario: parseScenario(opts.scenario, 'inline', { config }) } : {}) });
  cleanups.push(() => sim.stop());
  return { pty, sim, file, base: `rackguard/lab/${name}` };
}

async function startAgent(r: Rig): Promise<SpawnedProcess> {
  const agent = await spawnAndWait(process.execPath, [MAIN, 'run', '--config', r.file], { readyLine: /rackguard starting/, timeoutMs: 20_000 });
  cleanups.push(async () => {
    await agent.stop('SIGKILL');
  });
  return agent;
}

/** Outbox errors the agent logged (level error or above, about the outbox). */
const outboxErrors = (agent: SpawnedProcess): LogLine[] => jsonLines(agent).filter((l) => l.level >= 50 && /outbox/.test(l.msg));

beforeAll(async () => {
  // The binary under test is the built one: a stale dist/ would test old code.
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first`);
  if (statSync(join(ROOT, 'dist/agent/outputs/outbox.js')).mtimeMs < statSync(join(ROOT, 'agent/outputs/outbox.ts')).mtimeMs) {
    throw new Error('dist/ is older than agent/outputs/outbox.ts: run `npm run build` first');
  }
  tmp = await tempDir('rackguard-outbox-faults-');
  broker = await startMosquitto();
  sub = mqtt.connect(broker.url, { clientId: 'faults-watcher', clean: true });
  sub.on('message', (topic, payload) => msgs.push({ topic, text: payload.toString() }));
  await new Promise<void>((resolve, reject) => {
    sub.once('connect', () => sub.subscribe('rackguard/#', { qos: 1 }, (err) => (err ? reject(err) : resolve())));
    sub.once('error', reject);
  });
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  await sub?.endAsync();
  await broker?.cleanup();
  await tmp?.cleanup();
});

const isEvent = (base: string, code: string) => (m: Msg) => m.topic === `${base}/events` && m.text.includes(`"${code}"`);

describe('the agent never refuses to start because of its outbox', () => {
  it('outbox path is a directory: starts, polls, reports once (log + event), opens when fixed and writes the held events', async () => {
    const name = fresh('gwdir');
    const path = join(tmp.path, name, 'outbox.db');
    mkdirSync(path, { recursive: true }); // the path IS a directory
    const r = await rig(name, path);
    const agent = await startAgent(r);
    const error = JSON.parse(await agent.waitForLine(/cannot be opened/, 10_000)) as LogLine;
    expect(error).toMatchObject({ level: 50, path, stage: 'open' });
    // Reported to the live sink, and acquisition runs: samples and device states flow over MQTT.
    await waitMsg(isEvent(r.base, 'outbox_unavailable'), 15_000, 'outbox_unavailable event');
    await waitMsg((m) => m.topic === `${r.base}/sensors/r1.temperature`, 15_000, 'an r1 sample over MQTT');
    // Every device came online while the outbox was unusable: those device states are held in memory
    // (the file check below needs all five, so wait for all five, not just one).
    for (const d of ['r1', 'r2', 'r3', 'r4', 'chiller1']) await waitMsg((m) => m.topic === `${r.base}/devices/${d}/availability` && m.text === 'online', 15_000, `${d} online`);
    expect(existsSync(path) && statSync(path).isDirectory()).toBe(true);

    // Fix it: the agent opens the outbox on its next retry and writes what it held.
    const mark = agent.lines.length;
    rmSync(path, { recursive: true });
    await agent.waitForLine(/"msg":"outbox open"/, 10_000, mark);
    await agent.waitForLine(/outbox writable again/, 10_000, mark);
    expect(outboxErrors(agent)).toHaveLength(1);
    expect(await agent.stop('SIGTERM')).toBe(0);
    const events = fileEvents(path);
    expect(events.filter((e) => e.code === 'outbox_unavailable')).toHaveLength(1);
    for (const d of ['r1', 'r2', 'r3', 'r4', 'chiller1']) expect(events.some((e) => e.kind === 'device_state' && e.deviceId === d && e.state === 'online')).toBe(true);
  });

  it('read-only filesystem: starts, polls, reports once, opens after remount rw and writes the held events', async () => {
    const name = fresh('gwro');
    const mnt = join(tmp.path, name);
    mountTmpfs(mnt, 'size=1m');
    sh('mount', ['-o', 'remount,ro', mnt]);
    // Root is refused too: this is the case chmod cannot make.
    expect(() => writeFileSync(join(mnt, 'probe'), 'x')).toThrow(/EROFS/);
    const path = join(mnt, 'outbox.db');
    const r = await rig(name, path);
    const agent = await startAgent(r);
    expect(JSON.parse(await agent.waitForLine(/cannot be opened/, 10_000)) as LogLine).toMatchObject({ level: 50, stage: 'open' });
    await waitMsg(isEvent(r.base, 'outbox_unavailable'), 15_000, 'outbox_unavailable event');
    await waitMsg((m) => m.topic === `${r.base}/sensors/r3.temperature`, 15_000, 'an r3 sample over MQTT');
    for (const d of ['r1', 'r2', 'r3', 'r4']) await waitMsg((m) => m.topic === `${r.base}/devices/${d}/availability` && m.text === 'online', 15_000, `${d} online`);

    const mark = agent.lines.length;
    sh('mount', ['-o', 'remount,rw', mnt]);
    await agent.waitForLine(/"msg":"outbox open"/, 10_000, mark);
    await agent.waitForLine(/outbox writable again/, 10_000, mark);
    expect(outboxErrors(agent)).toHaveLength(1);
    expect(await agent.stop('SIGTERM')).toBe(0);
    const events = fileEvents(path);
    expect(events.filter((e) => e.code === 'outbox_unavailable')).toHaveLength(1);
    for (const d of ['r1', 'r2', 'r3', 'r4']) expect(events.some((e) => e.kind === 'device_state' && e.deviceId === d && e.state === 'online')).toBe(true);
  });
});

describe('no event is lost while the outbox cannot be written', () => {
  it('8 MB tmpfs full during a chiller trip: zone events reach MQTT live and the file afterwards, one gap event, few error lines', async () => {
    const name = fresh('gwfull');
    const mnt = join(tmp.path, name);
    mountTmpfs(mnt, 'size=8m');
    const path = join(mnt, 'outbox.db');
    // The chiller trips 20 s in; the room heats fast (a high-density room), so both zones climb to critical within the budget.
    const r = await rig(name, path, {
      scenario: 'name: fast-trip\ndurationS: 1200\nseed: 3\nroom: { itLoadKw: 100, initialRiseCPerMin: 5 }\nevents:\n  - { at: 20, chiller: trip }\n',
    });
    const agent = await startAgent(r);
    await agent.waitForLine(/"msg":"outbox open"/, 10_000);
    await waitMsg((m) => m.topic === `${r.base}/sensors/r1.temperature`, 15_000, 'samples before the fill');

    // Fill the filesystem to the last block.
    const fill = join(mnt, 'fill');
    spawnSync('dd', ['if=/dev/zero', `of=${fill}`, 'bs=64k'], { encoding: 'utf8' });
    const st = statfsSync(mnt);
    expect(Number(st.bavail) * Number(st.bsize)).toBeLessThan(64 * 1024);
    const fullMark = agent.lines.length;
    const msgMark = msgs.length;
    expect(JSON.parse(await agent.waitForLine(/cannot be written/, 15_000, fullMark)) as LogLine).toMatchObject({ level: 50, stage: 'write' });
    await waitMsg(isEvent(r.base, 'outbox_unavailable'), 15_000, 'outbox_unavailable event', msgMark);

    // The trip, while the disk is full: both zones go normal → warning → alarm → critical, live.
    const zoneEvents = (): Array<{ zone: string; level: string }> =>
      msgs
        .slice(msgMark)
        .filter((m) => m.topic === `${r.base}/events` && m.text.includes('"zone_level"'))
        .map((m) => JSON.parse(m.text) as { zone: string; level: string });
    await expect
      .poll(() => zoneEvents().filter((e) => e.level === 'critical').length, { timeout: 150_000, interval: 500 })
      .toBe(2)
      .catch((err: unknown) => {
        throw new Error(`${(err as Error).message}; zone events so far: ${JSON.stringify(zoneEvents())}; agent: ${agent.lines.slice(-5).join('\n')}`);
      });
    const live = zoneEvents();
    expect(live.length).toBeGreaterThanOrEqual(6);
    // The zone log lines carry pino's numeric level and the zone's level under its own key (issue 7, item 10).
    const zoneLine = agent.lines.find((l) => /"msg":"zone za: \w+ → critical: /.test(l))!;
    expect(zoneLine.match(/"level":/g)).toHaveLength(1);
    expect(JSON.parse(zoneLine)).toMatchObject({ level: 50, zone: 'za', zoneLevel: 'critical' });
    // Still full: nothing of it could be written.
    expect(existsSync(fill)).toBe(true);
    expect(agent.lines.slice(fullMark).some((l) => l.includes('outbox writable again'))).toBe(false);

    // Space comes back: the held events are written first, and the telemetry hole is one gap event.
    const backMark = agent.lines.length;
    rmSync(fill);
    await agent.waitForLine(/outbox writable again/, 15_000, backMark);
    expect(await agent.stop('SIGTERM')).toBe(0);
    const events = fileEvents(path);
    const stored = events.filter((e) => e.kind === 'zone_level').map((e) => `${e.zone}:${e.level}`);
    for (const e of live) expect(stored).toContain(`${e.zone}:${e.level}`);
    expect(events.filter((e) => e.code === 'outbox_gap')).toHaveLength(1);
    const gap = events.find((e) => e.code === 'outbox_gap')!;
    expect(gap.detail!.droppedCount as number).toBeGreaterThan(0);
    expect(events.filter((e) => e.code === 'outbox_unavailable')).toHaveLength(1);
    // The failure is logged once (plus at most a summary a minute), never per commit; no stack traces.
    const errors = outboxErrors(agent);
    expect(errors.length).toBeGreaterThanOrEqual(1);
    expect(errors.length).toBeLessThanOrEqual(4);
    expect(agent.lines.filter((l) => l.includes('"stack"')).length).toBe(0);
  }, 240_000);
});
