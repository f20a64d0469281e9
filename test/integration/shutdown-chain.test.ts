/**
 * The coordinated shutdown end to end: runShutdown with the registry's host-agent transport, over a
 * real mosquitto, against three `rackguard host` processes (dist/agent/main.js: `npm run build`
 * first) whose local shutdown command writes a marker with a nanosecond timestamp. The failover hook
 * is a real script (run by an exec-like runHook defined here). A fourth host is configured but not
 * running: it delays the next group by hostSyncS at most.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../agent/clock.js';
import { shutdownSchema, type HookDef } from '../../agent/config/actions-schema.js';
import { runShutdown, type ShutdownRecord } from '../../agent/actions/shutdown.js';
import { TransportRegistry } from '../../agent/actions/transports.js';
import type { ActionContext, ActionResult } from '../../agent/actions/types.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';
import { writeScript } from '../helpers/cli-run.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'agent', 'main.js');
const BASE = 'rg-chain';
const RUNNING = ['web-01', 'web-02', 'db-01'] as const;
const logger = pino({ level: 'silent' });

let broker: Mosquitto;
let tmp: TempDir;
let gw: MqttClient;
let registry: TransportRegistry;
const hosts: SpawnedProcess[] = [];
let attempts = 0;
/** An incident id of its own per attempt: a retry's markers and replies are never the failed attempt's. */
const incident = (name: string): string => `${name}-${++attempts}`;
let staleHost: SpawnedProcess | undefined;

const markers = (): string => join(tmp.path, 'markers');
/** The wall-clock ns a marker holds (written by `date +%s%N` in the script). */
const markerNs = (name: string): bigint => BigInt(readFileSync(join(markers(), name), 'utf8').trim().split('\n')[0]!);
const secretFile = (host: string): string => join(tmp.path, `${host}.secret`);

const script = (name: string, body: string): string => writeScript(tmp.path, name, body);

/** An exec-like hook runner: spawns the hook's argv (no shell) and waits for its exit. */
function runHook(hook: HookDef, ctx: ActionContext): Promise<ActionResult> {
  if (hook.kind !== 'exec') throw new Error('only exec hooks in this test');
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(hook.argv[0]!, hook.argv.slice(1), { stdio: 'ignore', env: { PATH: process.env.PATH, RACKGUARD_INCIDENT: ctx.incident } });
    child.once('error', (err) => resolve({ status: 'failed', message: err.message, durationMs: performance.now() - t0, detail: {} }));
    child.once('exit', (code) => resolve({ status: code === 0 ? 'succeeded' : 'failed', message: `exit ${String(code)}`, durationMs: performance.now() - t0, detail: { exitCode: code } }));
  });
}

const ctx = (incident: string): ActionContext => ({ incident, zone: 'z1', level: 'critical', etaS: 60, reason: 'chain test', ts: Date.now(), dryRun: false });

/** `name:secret` picks another secret file for that host (a gateway with the wrong key). */
const agentHost = (spec: string) => {
  const [name, secret] = spec.split(':') as [string, string | undefined];
  return { via: 'agent' as const, name, secretFile: secret ? join(tmp.path, secret) : secretFile(name) };
};

/** Runs a sequence, and waits for every running host's final report (its local command has exited). */
async function runSequence(incident: string, groups: Array<{ name: string; hosts: string[] }>, hostSyncS: number) {
  const records: ShutdownRecord[] = [];
  const events = new EventEmitter();
  const config = shutdownSchema.parse({
    failover: [{ kind: 'exec', name: 'drain', argv: [join(tmp.path, 'failover.sh')] }],
    groups: groups.map((g) => ({ name: g.name, hosts: g.hosts.map(agentHost) })),
    hostSyncS,
    commandTtlS: 30,
  });
  const report = await runShutdown(
    ctx(incident),
    { config, transports: registry, runHook, record: (e) => (records.push(e), events.emit('record')), clock: systemClock, logger },
    new AbortController().signal,
  );
  const running = groups.flatMap((g) => g.hosts).filter((h) => (RUNNING as readonly string[]).includes(h) && report.groups.some((g) => g.hosts.some((o) => o.host === h && o.status === 'acknowledged')));
  await waitFor(events, 'record', () => running.every((h) => records.some((r) => r.detail?.step === 'host-later' && r.detail.host === h)), 20_000, 'the final reports of every running host', () => JSON.stringify(records.map((r) => r.message)));
  return { report, records };
}

function startHostAgent(host: string): Promise<SpawnedProcess> {
  const file = join(tmp.path, `${host}.yaml`);
  writeFileSync(
    file,
    `version: 1
host: ${host}
mqtt: { url: "${broker.url}", reconnectMs: 200 }
baseTopic: ${BASE}
secretFile: ${secretFile(host)}
stateDir: ${join(tmp.path, `${host}-state`)}
commands: { shutdown: [${join(tmp.path, 'host-shutdown.sh')}] }
`,
  );
  return spawnAndWait(process.execPath, [MAIN, 'host', '--config', file], { readyLine: /host agent ready/, timeoutMs: 20_000, cwd: tmp.path });
}

beforeAll(async () => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);
  broker = await startMosquitto();
  tmp = await tempDir('rackguard-chain-');
  mkdirSync(markers());
  const m = markers();
  // The failover hook takes a moment on purpose: every host must wait for its end.
  script('failover.sh', `date +%s%N > "${m}/$RACKGUARD_INCIDENT-failover-start"\nsleep 0.3\ndate +%s%N > "${m}/$RACKGUARD_INCIDENT-failover-end"`);
  script('host-shutdown.sh', `date +%s%N > "${m}/$RACKGUARD_INCIDENT-$RACKGUARD_HOST"\necho "$RACKGUARD_ACTION $RACKGUARD_DRY_RUN" >> "${m}/$RACKGUARD_INCIDENT-$RACKGUARD_HOST"`);
  for (const host of [...RUNNING, 'ghost-01']) writeFileSync(secretFile(host), `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  hosts.push(...(await Promise.all(RUNNING.map(startHostAgent))));
  gw = mqtt.connect(broker.url, { clientId: 'chain-gateway', protocolVersion: 5, clean: true, reconnectPeriod: 200 });
  await new Promise<void>((r) => gw.once('connect', () => r()));
  registry = new TransportRegistry({ logger, clock: systemClock, gateway: 'gw-1', stateDir: join(tmp.path, 'gateway-state'), hostsBaseTopic: BASE, mqtt: gw }, { commandTtlS: 30 });
});

afterAll(async () => {
  registry?.close();
  await Promise.all(hosts.map((h) => h.stop()));
  await gw?.endAsync(true);
  await broker?.cleanup();
  await tmp?.cleanup();
});

describe('coordinated shutdown through real host agents', () => {
  it('runs the failover hook to its end first, then group 1 (both acknowledge), then group 2, each host running its local command', async () => {
    const inc = incident('inc-order');
    const { report, records } = await runSequence(inc, [
      { name: 'web', hosts: ['web-01', 'web-02'] },
      { name: 'storage', hosts: ['db-01'] },
    ], 20);
    expect(report.failover.map((r) => r.status)).toEqual(['succeeded']);
    expect(report.groups.map((g) => [g.name, g.hosts.map((o) => `${o.host}:${o.status}`)])).toEqual([
      ['web', ['web-01:acknowledged', 'web-02:acknowledged']],
      ['storage', ['db-01:acknowledged']],
    ]);
    const failoverEnd = markerNs(`${inc}-failover-end`);
    const [w1, w2, db] = [markerNs(`${inc}-web-01`), markerNs(`${inc}-web-02`), markerNs(`${inc}-db-01`)];
    expect(failoverEnd).toBeLessThan(w1);
    expect(failoverEnd).toBeLessThan(w2);
    expect(w1).toBeLessThan(db);
    expect(w2).toBeLessThan(db);
    expect(readFileSync(join(markers(), `${inc}-db-01`), 'utf8')).toContain('shutdown 0');
    // Group 2 was asked only after both acknowledgements of group 1 were in.
    const idx = (pred: (r: ShutdownRecord) => boolean): number => records.findIndex(pred);
    const askedDb = idx((r) => r.status === 'asked' && r.detail?.host === 'db-01');
    expect(idx((r) => r.status === 'acknowledged' && r.detail?.host === 'web-01')).toBeLessThan(askedDb);
    expect(idx((r) => r.status === 'acknowledged' && r.detail?.host === 'web-02')).toBeLessThan(askedDb);
    // The final reports: the local command exited 0 on every host.
    const finals = records.filter((r) => r.detail?.step === 'host-later');
    expect(finals.map((r) => [r.detail?.host, r.detail?.reply, r.detail?.exitCode]).sort()).toEqual([
      ['db-01', 'done', 0],
      ['web-01', 'done', 0],
      ['web-02', 'done', 0],
    ]);
    expect(records.every((r) => r.incident === inc)).toBe(true);
  });

  it('a configured host that is not running times out at hostSyncS and the next group goes on', async () => {
    // Long enough for the running hosts to acknowledge on a loaded machine (they answer in ms), so the
    // only timeout is the ghost's.
    const hostSyncS = 6;
    const inc = incident('inc-ghost');
    const { report, records } = await runSequence(inc, [
      { name: 'web', hosts: ['web-01', 'ghost-01', 'web-02'] },
      { name: 'storage', hosts: ['db-01'] },
    ], hostSyncS);
    const shown = JSON.stringify(report.groups);
    expect(report.groups.map((g) => g.hosts.map((o) => `${o.host}:${o.status}`)), shown).toEqual([['web-01:acknowledged', 'ghost-01:timeout', 'web-02:acknowledged'], ['db-01:acknowledged']]);
    const web = report.groups[0]!;
    // At most hostSyncS (plus scheduling slack on a loaded machine), and not before it: the ghost was waited for.
    expect(web.endedAtMs - web.startedAtMs, shown).toBeGreaterThanOrEqual(hostSyncS * 1000 - 5);
    expect(web.endedAtMs - web.startedAtMs, shown).toBeLessThan(hostSyncS * 1000 + 5000);
    expect(markerNs(`${inc}-failover-end`)).toBeLessThan(markerNs(`${inc}-web-01`));
    expect(markerNs(`${inc}-web-02`)).toBeLessThan(markerNs(`${inc}-db-01`));
    expect(existsSync(join(markers(), `${inc}-ghost-01`))).toBe(false);
    expect(records.find((r) => r.status === 'timeout' && r.detail?.host === 'ghost-01')?.message).toContain(`hostSyncS (${hostSyncS} s)`);
    expect(records.at(-1)).toMatchObject({ status: 'failed', detail: { step: 'sequence' } });
  });

  it('a host that rejects the command (its seq state is ahead: replayed) or cannot be asked (no secret file) does not hold its group beyond its verdict', async () => {
    // A host whose accepted seq is far ahead of this gateway's counter (say, a gateway replaced
    // with a wrong clock): it refuses every command as a replay, with a signed, verifiable reply.
    // Started once: a retry reuses it (a second one would answer as the same host).
    if (!staleHost) {
      writeFileSync(secretFile('stale-01'), `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
      mkdirSync(join(tmp.path, 'stale-01-state'), { recursive: true });
      writeFileSync(join(tmp.path, 'stale-01-state', 'last-seq.json'), `${JSON.stringify({ v: 1, lastSeq: 9e15 })}\n`);
      staleHost = await startHostAgent('stale-01');
      hosts.push(staleHost);
    }
    const inc = incident('inc-reject');
    const { report, records } = await runSequence(inc, [
      { name: 'web', hosts: ['stale-01', 'web-02:missing.secret'] },
      { name: 'storage', hosts: ['db-01'] },
    ], 20);
    const [rejected, unasked] = report.groups[0]!.hosts;
    expect(rejected).toMatchObject({ host: 'stale-01', status: 'rejected', detail: { reason: 'replayed' } });
    expect(unasked).toMatchObject({ host: 'web-02', status: 'failed' });
    expect(unasked!.message).toContain('missing.secret');
    expect(report.groups[1]!.hosts[0]).toMatchObject({ host: 'db-01', status: 'acknowledged' });
    // Moved on at the verdicts, long before hostSyncS (20 s).
    expect(report.groups[0]!.endedAtMs - report.groups[0]!.startedAtMs).toBeLessThan(10_000);
    expect(existsSync(join(markers(), `${inc}-stale-01`))).toBe(false);
    expect(existsSync(join(markers(), `${inc}-web-02`))).toBe(false);
    expect(existsSync(join(markers(), `${inc}-db-01`))).toBe(true);
    expect(records.find((r) => r.status === 'rejected')?.message).toContain('rejected: replayed');
  });

  it('a reply that does not verify with the gateway\'s key for that host is not believed: the host times out', async () => {
    writeFileSync(join(tmp.path, 'wrong.secret'), `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    const inc = incident('inc-wrongkey');
    const { report } = await runSequence(inc, [{ name: 'web', hosts: ['web-01:wrong.secret'] }], 1);
    expect(report.groups[0]!.hosts[0]).toMatchObject({ host: 'web-01', status: 'timeout' });
    expect(existsSync(join(markers(), `${inc}-web-01`))).toBe(false);
  });
});
