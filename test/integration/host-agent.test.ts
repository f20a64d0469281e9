/**
 * `rackguard host` as a real separate process (dist/agent/main.js, so `npm run build` first) on a real
 * mosquitto, driven by the gateway side (sendHostCommand) and by raw publishes for the commands a
 * gateway would never send: every rejection reason arrives as a published reply and in the host's
 * log, only the locally configured command ever runs, a hung command dies at its timeout with its
 * children, and the retained status turns offline through the last will when the host agent is killed.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostReplyRouter, sendHostCommand, type HostClientOptions } from '../../agent/actions/host-client.js';
import { commandTopic, signCommand, signReply, type HostCommand, type UnsignedHostCommand } from '../../agent/actions/host-protocol.js';
import { FileSeqStore } from '../../agent/actions/seq-file.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { until, waitFor } from '../helpers/wait.js';
import { writeScript } from '../helpers/cli-run.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'agent', 'main.js');
const BASE = 'rg-test';
const SECRET = randomBytes(32).toString('hex');
const HANG_SECRET = randomBytes(32).toString('hex');
/** A value a shell would act on, if one were involved anywhere. */
const NASTY_INCIDENT = `inc-1; touch PWNED $(touch PWNED) \`touch PWNED\` "dq" 'sq' \\ end`;

let broker: Mosquitto;
let tmp: TempDir;
let gw: MqttClient;
let router: HostReplyRouter;
let watcher: { client: MqttClient; messages: Array<{ topic: string; payload: string; retain: boolean; corr?: string }> };
let db: SpawnedProcess;
let hang: SpawnedProcess | undefined;
let dbConfig: string;
let hangConfig: string;
let firstCommand: HostCommand;

const markerDir = (): string => join(tmp.path, 'markers');
const shutdownRuns = (): string[] => readdirSync(markerDir()).filter((f) => f.startsWith('shutdown-'));
const testRuns = (): string[] => readdirSync(markerDir()).filter((f) => f.startsWith('test-'));

const script = (name: string, body: string): string => writeScript(tmp.path, name, body);

function hostYaml(file: string, host: string, secretFile: string, over: string): string {
  writeFileSync(
    file,
    `version: 1
host: ${host}
mqtt: { url: "${broker.url}", reconnectMs: 200 }
baseTopic: ${BASE}
secretFile: ${secretFile}
stateDir: ${join(tmp.path, `${host}-state`)}
maxClockSkewS: 2
${over}
`,
  );
  return file;
}

const startHost = (config: string, ...extra: string[]): Promise<SpawnedProcess> =>
  spawnAndWait(process.execPath, [MAIN, 'host', '--config', config, ...extra], { readyLine: /host agent ready/, timeoutMs: 20_000, cwd: tmp.path });

const opts = (over: Partial<HostClientOptions> = {}): HostClientOptions => ({
  secret: SECRET,
  seqStore: new FileSeqStore(join(tmp.path, 'gateway-seq.json')),
  replies: router,
  baseTopic: BASE,
  gateway: 'gw-1',
  ackTimeoutMs: 10_000,
  finalTimeoutMs: 20_000,
  ...over,
});

/** Publishes raw bytes to db-01's command topic (MQTT 5, with a correlation) and awaits the reply that carries it. */
async function rawSend(payload: string | Buffer, host = 'db-01'): Promise<Record<string, unknown>> {
  const corr = randomBytes(8);
  const from = watcher.messages.length;
  await gw.publishAsync(commandTopic(BASE, host), payload, { qos: 1, properties: { responseTopic: `${BASE}/hosts/${host}/reply`, correlationData: corr } });
  // The watcher also sees the command itself (same correlation): only the reply topic counts.
  const isReply = (m: { topic: string; corr?: string }): boolean => m.topic.endsWith('/reply') && m.corr === corr.toString('hex');
  await waitFor(watcher.client, 'message', () => watcher.messages.slice(from).some(isReply), 10_000, `reply to correlation ${corr.toString('hex')}`);
  return JSON.parse(watcher.messages.slice(from).find(isReply)!.payload) as Record<string, unknown>;
}

const unsigned = (over: Partial<UnsignedHostCommand> = {}): UnsignedHostCommand => ({
  v: 1,
  host: 'db-01',
  action: 'shutdown',
  incident: 'inc-raw',
  seq: Date.now() * 10,
  issuedAtMs: Date.now(),
  expiresAtMs: Date.now() + 30_000,
  dryRun: false,
  gateway: 'gw-1',
  ...over,
});

beforeAll(async () => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);
  broker = await startMosquitto();
  tmp = await tempDir('rackguard-host-');
  mkdirSync(markerDir());
  writeFileSync(join(tmp.path, 'db-01.secret'), `${SECRET}\n`, { mode: 0o600 });
  writeFileSync(join(tmp.path, 'hang-01.secret'), `${HANG_SECRET}\n`, { mode: 0o600 });
  const m = markerDir();
  const shutdown = script('shutdown.sh', `printf '%s\\n' "$RACKGUARD_INCIDENT" "$RACKGUARD_ACTION" "$RACKGUARD_DRY_RUN" "$RACKGUARD_SEQ" > "${m}/shutdown-$RACKGUARD_SEQ"\necho "shutting down for $RACKGUARD_INCIDENT"`);
  const check = script('check.sh', `printf '%s\\n' "$RACKGUARD_ACTION" "$RACKGUARD_DRY_RUN" > "${m}/test-$RACKGUARD_SEQ"\necho check ok`);
  // The hung command: a child that even ignores SIGTERM, and a leader waiting for it.
  const hung = script('hang.sh', `(trap '' TERM; exec sleep 1000) &\necho $! > "${tmp.path}/hang-child.pid"\necho $$ > "${tmp.path}/hang-leader.pid"\necho started\nwait`);
  dbConfig = hostYaml(join(tmp.path, 'db-01.yaml'), 'db-01', 'db-01.secret', `commands: { shutdown: [${shutdown}], test: [${check}] }\ncommandTimeoutS: 20`);
  hangConfig = hostYaml(join(tmp.path, 'hang-01.yaml'), 'hang-01', 'hang-01.secret', `commands: { shutdown: [${hung}] }\ncommandTimeoutS: 1\nkillGraceS: 0.5`);

  watcher = { client: mqtt.connect(broker.url, { clientId: 'test-watcher', protocolVersion: 5, clean: true, reconnectPeriod: 200 }), messages: [] };
  watcher.client.on('message', (topic, payload, packet) => {
    watcher.messages.push({ topic, payload: payload.toString(), retain: packet.retain, corr: packet.properties?.correlationData?.toString('hex') });
  });
  await new Promise<void>((r) => watcher.client.once('connect', () => r()));
  await watcher.client.subscribeAsync(`${BASE}/#`, { qos: 1 });

  gw = mqtt.connect(broker.url, { clientId: 'test-gateway', protocolVersion: 5, clean: true, reconnectPeriod: 200 });
  await new Promise<void>((r) => gw.once('connect', () => r()));
  router = new HostReplyRouter(gw, BASE);
  db = await startHost(dbConfig);
});

afterAll(async () => {
  await db?.stop();
  await hang?.stop('SIGKILL');
  await gw?.endAsync(true);
  await watcher?.client.endAsync(true);
  await broker?.cleanup();
  await tmp?.cleanup();
});

describe('rackguard host: accepted commands', () => {
  it('acknowledges `accepted`, runs the configured command with the event in its environment, literally, then reports `done`', async () => {
    const h = await sendHostCommand(gw, 'db-01', { action: 'shutdown', incident: NASTY_INCIDENT, dryRun: false, ttlS: 30 }, opts());
    firstCommand = h.command;
    expect(h.ack).toMatchObject({ kind: 'reply', reply: { status: 'accepted', final: false, seq: h.command.seq, host: 'db-01' } });
    const final = await h.final;
    expect(final).toMatchObject({ kind: 'reply', reply: { status: 'done', final: true, exitCode: 0, seq: h.command.seq, incident: NASTY_INCIDENT } });
    if (final.kind === 'reply') expect(final.reply.outputTail).toBe(`shutting down for ${NASTY_INCIDENT}\n`);
    const lines = readFileSync(join(markerDir(), `shutdown-${h.command.seq}`), 'utf8').split('\n');
    expect(lines.slice(0, 4)).toEqual([NASTY_INCIDENT, 'shutdown', '0', String(h.command.seq)]);
    // Nothing in the incident was executed by anyone.
    expect(existsSync(join(tmp.path, 'PWNED'))).toBe(false);
    expect(existsSync(join(markerDir(), 'PWNED'))).toBe(false);
  });

  it('confirms a dry-run shutdown and a test with `would-act`, runs only the test command, never the shutdown', async () => {
    const before = shutdownRuns().length;
    for (const [action, dryRun] of [['shutdown', true], ['test', false]] as const) {
      const h = await sendHostCommand(gw, 'db-01', { action, incident: `dry-${action}`, dryRun, ttlS: 30 }, opts());
      expect(h.ack).toMatchObject({ kind: 'reply', reply: { status: 'would-act', final: false } });
      const final = await h.final;
      expect(final).toMatchObject({ kind: 'reply', reply: { status: 'done', exitCode: 0, outputTail: 'check ok\n' } });
      expect(readFileSync(join(markerDir(), `test-${h.command.seq}`), 'utf8')).toBe(`${action}\n1\n`);
    }
    expect(shutdownRuns().length).toBe(before);
  });
});

describe('rackguard host: rejections, each published with its reason and logged', () => {
  const cases: Array<[string, () => string | Buffer]> = [
    ['unsigned', () => JSON.stringify(unsigned())],
    ['bad-signature', () => JSON.stringify(signCommand(unsigned(), 'not-the-host-secret-but-long-enough-0123'))],
    ['wrong-host', () => JSON.stringify(signCommand(unsigned({ host: 'db-02' }), SECRET))],
    ['expired', () => JSON.stringify(signCommand(unsigned({ issuedAtMs: Date.now() - 60_000, expiresAtMs: Date.now() - 30_000 }), SECRET))],
    ['replayed', () => JSON.stringify(firstCommand)],
    ['replayed', () => JSON.stringify(signCommand(unsigned({ seq: firstCommand.seq - 1 }), SECRET))],
    ['malformed', () => '{"v":1,"host":"db-01",'],
    ['oversized', () => JSON.stringify({ ...signCommand(unsigned(), SECRET), pad: 'x'.repeat(5000) })],
  ];
  it.each(cases)('%s', async (reason, payload) => {
    const runs = shutdownRuns().length;
    const fromLine = db.lines.length;
    const reply = await rawSend(payload());
    expect(reply).toMatchObject({ v: 1, host: 'db-01', status: 'rejected', final: true, reason });
    await db.waitForLine((l) => l.includes(`command rejected: ${reason}`), 5000, fromLine);
    expect(shutdownRuns().length).toBe(runs);
  });

  it('answers an MQTT 3.1.1 command (no response topic) on the fixed reply topic', async () => {
    const v4 = mqtt.connect(broker.url, { clientId: 'test-v4', protocolVersion: 4, clean: true });
    try {
      await new Promise<void>((r) => v4.once('connect', () => r()));
      const from = watcher.messages.length;
      await v4.publishAsync(commandTopic(BASE, 'db-01'), JSON.stringify(unsigned({ seq: 77 })), { qos: 1 });
      await waitFor(watcher.client, 'message', () => watcher.messages.slice(from).some((m) => m.topic === `${BASE}/hosts/db-01/reply` && m.payload.includes('"seq":77')), 10_000, 'v4 reply');
      const m = watcher.messages.slice(from).find((x) => x.topic.endsWith('/reply') && x.payload.includes('"seq":77'))!;
      expect(JSON.parse(m.payload)).toMatchObject({ status: 'rejected', reason: 'unsigned', seq: 77 });
      expect(m.corr).toBeUndefined();
    } finally {
      await v4.endAsync(true);
    }
  });

  it('still rejects the replay after the host agent restarts (the seq is on disk), and accepts the next seq', async () => {
    // A clean stop: exit 0, and the retained status says offline (not the will's form: it has tsMs).
    const from = watcher.messages.length;
    expect(await db.stop('SIGTERM')).toBe(0);
    const isStatus = (m: { topic: string }): boolean => m.topic === `${BASE}/hosts/db-01/status`;
    await waitFor(watcher.client, 'message', () => watcher.messages.slice(from).some(isStatus), 5000, 'offline status');
    expect(JSON.parse(watcher.messages.slice(from).find(isStatus)!.payload)).toMatchObject({ state: 'offline', tsMs: expect.any(Number) });
    db = await startHost(dbConfig);
    for (const payload of [JSON.stringify(firstCommand), JSON.stringify(signCommand(unsigned({ seq: firstCommand.seq - 1 }), SECRET))]) {
      expect(await rawSend(payload)).toMatchObject({ status: 'rejected', reason: 'replayed' });
    }
    // The gateway's own counter survives its restart too: a new store on the same file goes on rising.
    const h = await sendHostCommand(gw, 'db-01', { action: 'shutdown', incident: 'after-restart', dryRun: false, ttlS: 30 }, opts());
    expect(h.ack).toMatchObject({ kind: 'reply', reply: { status: 'accepted' } });
    expect(h.command.seq).toBeGreaterThan(firstCommand.seq);
    expect(await h.final).toMatchObject({ kind: 'reply', reply: { status: 'done' } });
  });

  it('`--dry-run` on the command line: confirms and never runs the shutdown command', async () => {
    await db.stop('SIGTERM');
    db = await startHost(dbConfig, '--dry-run');
    try {
      const runs = shutdownRuns().length;
      const h = await sendHostCommand(gw, 'db-01', { action: 'shutdown', incident: 'cli-dry', dryRun: false, ttlS: 30 }, opts());
      expect(h.ack).toMatchObject({ kind: 'reply', reply: { status: 'would-act' } });
      expect(await h.final).toMatchObject({ kind: 'reply', reply: { status: 'done' } });
      expect(shutdownRuns().length).toBe(runs);
      expect(testRuns()).toContain(`test-${h.command.seq}`);
    } finally {
      // Back to the normal host even after a failure: what follows (and a retry) expects it.
      await db.stop('SIGTERM');
      db = await startHost(dbConfig);
    }
  });
});

describe('gateway side', () => {
  it('ignores a reply that does not verify with the host secret (a forged `accepted`), and takes the genuine one after it', async () => {
    const ghostSecret = randomBytes(32).toString('hex');
    const forger = mqtt.connect(broker.url, { clientId: 'test-forger', protocolVersion: 5, clean: true });
    await new Promise<void>((r) => forger.once('connect', () => r()));
    await forger.subscribeAsync(commandTopic(BASE, 'ghost-01'), { qos: 1 });
    forger.on('message', (_topic, payload) => {
      const c = JSON.parse(payload.toString()) as HostCommand;
      const body = { v: 1 as const, host: 'ghost-01', seq: c.seq, incident: c.incident, tsMs: Date.now() };
      const forged = signReply({ ...body, status: 'accepted', final: false }, 'the-wrong-secret-but-long-enough-01234567');
      const genuine = signReply({ ...body, status: 'rejected', final: true, reason: 'replayed', detail: 'genuine' }, ghostSecret);
      // One publisher, one topic, QoS 1: the forged reply arrives first.
      void forger.publishAsync(`${BASE}/hosts/ghost-01/reply`, JSON.stringify(forged), { qos: 1 }).then(() =>
        forger.publishAsync(`${BASE}/hosts/ghost-01/reply`, JSON.stringify(genuine), { qos: 1 }),
      );
    });
    try {
      const h = await sendHostCommand(gw, 'ghost-01', { action: 'shutdown', incident: 'forgery', dryRun: false, ttlS: 30 }, opts({ secret: ghostSecret }));
      expect(h.ack).toMatchObject({ kind: 'reply', reply: { status: 'rejected', detail: 'genuine' } });
      expect(await h.final).toMatchObject({ kind: 'reply', reply: { detail: 'genuine' } });
    } finally {
      await forger.endAsync(true);
    }
  });

  it('reports a host that never answers as a timeout', async () => {
    const h = await sendHostCommand(gw, 'silent-01', { action: 'shutdown', incident: 'silence', dryRun: false, ttlS: 30 }, opts({ ackTimeoutMs: 300, finalTimeoutMs: 300 }));
    expect(h.ack).toMatchObject({ kind: 'timeout' });
    expect(await h.final).toMatchObject({ kind: 'timeout' });
  });
});

describe('rackguard host: configuration', () => {
  it('exits 2 on a bad host.yaml, listing every problem with its path, before connecting', () => {
    const bad = join(tmp.path, 'bad.yaml');
    writeFileSync(bad, `version: 1\nhost: db-01\nmqtt: { url: "${broker.url}" }\nsecretFile: nope.secret\ncommands: { shutdown: [poweroff] }\nmaxClockSkewS: -1\n`);
    const r = spawnSync(process.execPath, [MAIN, 'host', '--config', bad], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('maxClockSkewS: must be ≥ 0');
    writeFileSync(bad, `version: 1\nhost: db-01\nmqtt: { url: "${broker.url}" }\nsecretFile: nope.secret\ncommands: { shutdown: [poweroff] }\n`);
    const r2 = spawnSync(process.execPath, [MAIN, 'host', '--config', bad], { encoding: 'utf8', timeout: 20_000 });
    expect(r2.status).toBe(2);
    expect(r2.stderr).toContain(`secretFile: cannot read ${join(tmp.path, 'nope.secret')}: ENOENT`);
    expect(r2.stderr).toContain('commands.shutdown[0]: expected an absolute path, got "poweroff"');
  });

  it('refuses to start with a secret that is too short (exit 2, E_SECRET_READ)', () => {
    writeFileSync(join(tmp.path, 'short.secret'), 'tooshort\n');
    const cfg = hostYaml(join(tmp.path, 'short.yaml'), 'db-09', 'short.secret', 'commands: { shutdown: [/bin/true] }');
    const r = spawnSync(process.execPath, [MAIN, 'host', '--config', cfg], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/E_SECRET_READ: .*short\.secret: the secret has 8 characters, at least 32/);
  });
});

describe('rackguard host: a hung command and availability', () => {
  const alive = (pid: number): boolean => {
    try {
      // A zombie (killed, not yet reaped by init) counts as gone.
      return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      return false;
    }
  };

  it('kills a hung command at its timeout with its whole process group, and reports `failed` (timeout)', async () => {
    // A retry stops the failed attempt's host first: two host agents of one name would share its client
    // id and seq file.
    await hang?.stop('SIGKILL');
    hang = await startHost(hangConfig);
    const h = await sendHostCommand(gw, 'hang-01', { action: 'shutdown', incident: 'hang', dryRun: false, ttlS: 30 }, opts({ secret: HANG_SECRET }));
    expect(h.ack).toMatchObject({ kind: 'reply', reply: { status: 'accepted' } });
    const final = await h.final;
    expect(final).toMatchObject({ kind: 'reply', reply: { status: 'failed', reason: 'timeout', final: true } });
    if (final.kind === 'reply') expect(final.reply.outputTail).toContain('started');
    const leader = Number(readFileSync(join(tmp.path, 'hang-leader.pid'), 'utf8'));
    const child = Number(readFileSync(join(tmp.path, 'hang-child.pid'), 'utf8'));
    // The kernel delivers SIGKILL to the group at once; only the reaping is asynchronous.
    await until(() => !alive(leader) && !alive(child), 5000, `leader ${leader} and child ${child} gone`);
  });

  it('publishes a retained `online` status, and its last will says `offline` when the host agent is SIGKILLed', async () => {
    const topic = `${BASE}/hosts/hang-01/status`;
    // The host of the test before; a retry of this test (its host SIGKILLed by the failed attempt) or a
    // failed test before starts one.
    if (hang === undefined || hang.proc.exitCode !== null || hang.proc.signalCode !== null) {
      await hang?.stop('SIGKILL');
      hang = await startHost(hangConfig);
    }
    const probe = mqtt.connect(broker.url, { clientId: 'test-status-probe', protocolVersion: 5, clean: true });
    const seen: Array<{ payload: string; retain: boolean }> = [];
    probe.on('message', (t, p, packet) => t === topic && seen.push({ payload: p.toString(), retain: packet.retain }));
    try {
      await new Promise<void>((r) => probe.once('connect', () => r()));
      await probe.subscribeAsync(topic, { qos: 1 });
      await waitFor(probe, 'message', () => seen.length > 0, 5000, 'retained status');
      expect(seen[0]!.retain).toBe(true);
      expect(JSON.parse(seen[0]!.payload)).toMatchObject({ v: 1, host: 'hang-01', state: 'online', dryRun: false });
      await hang!.stop('SIGKILL');
      await waitFor(probe, 'message', () => seen.some((s) => JSON.parse(s.payload).state === 'offline'), 10_000, 'last will');
      expect(JSON.parse(seen.at(-1)!.payload)).toEqual({ v: 1, host: 'hang-01', state: 'offline' });
    } finally {
      await probe.endAsync(true);
    }
  });
});
