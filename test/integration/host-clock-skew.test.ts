/**
 * A gateway whose wall clock is wrong must still get its hosts shut down (issue 8 with issue 9's clock
 * sanity): a Raspberry Pi without a real-time clock, cut off from NTP in the incident it must act on,
 * can be days behind, and a host agent then refuses every command as expired. The gateway takes the
 * host's clock from its signed refusal and sends the command again, once, in the host's time; the
 * trail and the log say so. The same for a lost counter file (`replayed`) on a clock that is behind.
 *
 * The real host agent (dist/agent/main.js `host`, so `npm run build` first) on a real mosquitto; the
 * gateway is the production transport (createHostAgentTransport) with a clock that is off.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHostAgentTransport } from '../../agent/actions/host-transport.js';
import { commandTopic, replyTopic, signCommand, signReply } from '../../agent/actions/host-protocol.js';
import type { ActionContext, HostOutcome } from '../../agent/actions/types.js';
import { systemClock, type Clock } from '../../agent/clock.js';
import { agentHostSchema } from '../../agent/config/actions-schema.js';
import { writeScript } from '../helpers/cli-run.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'agent', 'main.js');
const BASE = 'rg-skew';
const SECRET = randomBytes(32).toString('hex');
const DAY_MS = 86_400_000;

let broker: Mosquitto;
let tmp: TempDir;
let gw: MqttClient;
let attempt = 0;

beforeAll(async () => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);
  broker = await startMosquitto();
  tmp = await tempDir('rackguard-host-skew-');
  writeFileSync(join(tmp.path, 'db-01.secret'), `${SECRET}\n`, { mode: 0o600 });
  gw = mqtt.connect(broker.url, { clientId: 'skew-gateway', protocolVersion: 5, clean: true, reconnectPeriod: 200 });
  await new Promise<void>((r) => gw.once('connect', () => r()));
}, 30_000);

afterAll(async () => {
  await gw?.endAsync(true);
  await broker?.cleanup();
  await tmp?.cleanup();
});

/** A host agent of its own (own state, own marker directory), so that every attempt starts clean. */
async function startHost(): Promise<{ host: SpawnedProcess; dir: string; runs: () => string[] }> {
  const dir = join(tmp.path, `attempt-${++attempt}`);
  mkdirSync(join(dir, 'markers'), { recursive: true });
  const shutdown = writeScript(dir, 'shutdown.sh', `touch "${dir}/markers/shutdown-$RACKGUARD_SEQ"\necho down`);
  const file = join(dir, 'host.yaml');
  writeFileSync(
    file,
    `version: 1
host: db-01
mqtt: { url: "${broker.url}", reconnectMs: 200 }
baseTopic: ${BASE}
secretFile: ${join(tmp.path, 'db-01.secret')}
stateDir: ${join(dir, 'state')}
maxClockSkewS: 2
commands: { shutdown: [${shutdown}] }
`,
  );
  const host = await spawnAndWait(process.execPath, [MAIN, 'host', '--config', file], { readyLine: /host agent ready/, timeoutMs: 20_000, cwd: dir });
  return { host, dir, runs: () => readdirSync(join(dir, 'markers')).sort() };
}

/** The gateway's side: the production transport, with its own counter file and a clock `offsetMs` off. */
function gateway(dir: string, offsetMs: number, counter = 'gw-seq') {
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const clock: Clock = { ...systemClock, wallMs: () => Date.now() + offsetMs };
  const transport = createHostAgentTransport({ logger, clock, gateway: 'gw-1', stateDir: join(dir, counter), hostsBaseTopic: BASE, mqtt: gw });
  mkdirSync(join(dir, counter), { recursive: true });
  const def = agentHostSchema.parse({ via: 'agent', name: 'db-01', secretFile: join(tmp.path, 'db-01.secret') });
  const ctx: ActionContext = { incident: `inc-${attempt}`, zone: 'z1', level: 'critical', etaS: 120, reason: 'test', ts: clock.wallMs(), dryRun: false };
  const shutdown = async (): Promise<{ first: HostOutcome; final: HostOutcome }> => {
    let resolveFinal!: (o: HostOutcome) => void;
    const final = new Promise<HostOutcome>((r) => (resolveFinal = r));
    const first = await transport.shutdown(def, ctx, { test: false, ackTimeoutMs: 10_000, signal: new AbortController().signal, onLater: resolveFinal });
    return { first, final: first.status === 'acknowledged' ? await final : first };
  };
  return { logs, shutdown, close: () => transport.close() };
}

describe('host commands from a gateway whose clock is wrong', () => {
  it.each([
    ['two weeks behind (a Pi without an RTC, no NTP)', -14 * DAY_MS, 'expired'],
    ['an hour ahead', 3_600_000, 'not-yet-valid'],
  ])('%s: the host refuses, the gateway sends again in the host\'s time, and the host shuts down', async (_name, offsetMs, reason) => {
    const { host, dir, runs } = await startHost();
    const g = gateway(dir, offsetMs);
    try {
      const { first, final } = await g.shutdown();
      expect(first).toMatchObject({ host: 'db-01', status: 'acknowledged', detail: { reissued: { reason } } });
      const reissued = first.detail!.reissued as { seq: number; hostClockOffsetMs: number };
      // The offset the gateway measured is its own error, seen from the host (within the round trip).
      expect(Math.abs(reissued.hostClockOffsetMs + offsetMs)).toBeLessThan(10_000);
      expect(first.message).toContain(`sent again in the host's time after "${reason}"`);
      expect(final).toMatchObject({ status: 'acknowledged', detail: { final: true, reply: 'done' } });
      // Exactly one shutdown ran, for the second command; the refused one never did.
      expect(runs()).toEqual([`shutdown-${first.detail!.seq as number}`]);
      expect(first.detail!.seq).not.toBe(reissued.seq);
      const warn = g.logs.find((l) => l.refusedSeq === reissued.seq);
      expect(warn).toMatchObject({ level: 40, host: 'db-01', reason });
      expect(String(warn?.msg)).toMatch(/check NTP on the gateway/);
    } finally {
      g.close();
      await host.stop();
    }
  });

  it.each([
    // A minute behind: the command is still inside its 120 s validity, only its seq is below the host's.
    ['a minute behind', -60_000, 'replayed'],
    // Two weeks behind: refused as expired first, then (dated in the host's time) as replayed.
    ['two weeks behind', -14 * DAY_MS, 'replayed'],
  ])('a lost counter file (a replaced SD card) on a clock %s: sent again above the host\'s seq', async (_name, offsetMs, reason) => {
    const { host, dir, runs } = await startHost();
    // A gateway with a right clock shuts the host down once: the host's last seq is now its wall time.
    const right = gateway(dir, 0, 'first-card');
    const behind = gateway(dir, offsetMs, 'replaced-card');
    try {
      expect((await right.shutdown()).final).toMatchObject({ status: 'acknowledged', detail: { reply: 'done' } });
      const { first, final } = await behind.shutdown();
      expect(first).toMatchObject({ status: 'acknowledged', detail: { reissued: { reason } } });
      expect(final).toMatchObject({ status: 'acknowledged', detail: { reply: 'done' } });
      expect(runs()).toHaveLength(2);
    } finally {
      right.close();
      behind.close();
      await host.stop();
    }
  });

  it('a refusal the host\'s clock cannot explain is reported as it is, and nothing is sent again', async () => {
    const { host, dir, runs } = await startHost();
    const g = gateway(dir, 0);
    try {
      // The host has accepted a seq ten days ahead of every clock (a gateway once far in the future).
      const ahead = signCommand({ v: 1, host: 'db-01', action: 'shutdown', incident: 'ahead', seq: Date.now() + 10 * DAY_MS, issuedAtMs: Date.now(), expiresAtMs: Date.now() + 30_000, dryRun: false, gateway: 'gw-0' }, SECRET);
      await gw.publishAsync(commandTopic(BASE, 'db-01'), JSON.stringify(ahead), { qos: 1 });
      await host.waitForLine(/"msg":"command accepted"/, 10_000);
      await expect.poll(runs, { timeout: 10_000 }).toEqual([`shutdown-${ahead.seq}`]);
      const { first } = await g.shutdown();
      expect(first).toMatchObject({ status: 'rejected', detail: { reason: 'replayed' } });
      expect(first.detail!.reissued).toBeUndefined();
      expect(g.logs.some((l) => l.refusedSeq !== undefined)).toBe(false);
      expect(runs()).toEqual([`shutdown-${ahead.seq}`]);
    } finally {
      g.close();
      await host.stop();
    }
  });

  describe('refusals from a host the gateway must not follow (a scripted host on the same broker)', () => {
    /** A "host" that refuses every command with `refusal(cmd)`, signed with the real secret, and counts them. */
    async function fakeHost(refusal: (cmd: { seq: number; issuedAtMs: number }) => { reason: string; detail: string; tsMs: number }) {
      const seen: Array<{ seq: number; issuedAtMs: number }> = [];
      const c = mqtt.connect(broker.url, { clientId: `skew-fake-${++attempt}`, protocolVersion: 5, clean: true });
      await new Promise<void>((r) => c.once('connect', () => r()));
      await c.subscribeAsync(commandTopic(BASE, 'fake-01'), { qos: 1 });
      c.on('message', (_topic, payload, packet) => {
        const cmd = JSON.parse(payload.toString()) as { seq: number; issuedAtMs: number; incident: string };
        seen.push(cmd);
        const r = refusal(cmd);
        const reply = signReply({ v: 1, host: 'fake-01', seq: cmd.seq, incident: cmd.incident, status: 'rejected', final: true, reason: r.reason as 'expired', detail: r.detail, tsMs: r.tsMs }, SECRET);
        void c.publishAsync(replyTopic(BASE, 'fake-01'), JSON.stringify(reply), { qos: 1, properties: { correlationData: packet.properties?.correlationData } });
      });
      return { seen, close: () => c.endAsync(true) };
    }

    async function shutdownFake(dir: string): Promise<{ outcome: HostOutcome; counter: number }> {
      const logger = pino({ level: 'silent' });
      mkdirSync(join(dir, 'state'), { recursive: true });
      const transport = createHostAgentTransport({ logger, clock: systemClock, gateway: 'gw-1', stateDir: join(dir, 'state'), hostsBaseTopic: BASE, mqtt: gw });
      try {
        const def = agentHostSchema.parse({ via: 'agent', name: 'fake-01', secretFile: join(tmp.path, 'db-01.secret') });
        const ctx: ActionContext = { incident: `fake-${attempt}`, zone: 'z1', level: 'critical', etaS: 60, reason: 'test', ts: Date.now(), dryRun: false };
        const outcome = await transport.shutdown(def, ctx, { test: false, ackTimeoutMs: 10_000, signal: new AbortController().signal });
        const counter = (JSON.parse(readFileSync(join(dir, 'state', 'host-command-seq.json'), 'utf8')) as { lastSeq: number }).lastSeq;
        return { outcome, counter };
      } finally {
        transport.close();
      }
    }

    it.each([
      ['a host clock ten years ahead', () => ({ reason: 'expired', detail: 'expired', tsMs: Date.now() + 3650 * DAY_MS })],
      ['a host clock at the end of time', () => ({ reason: 'not-yet-valid', detail: 'not yet valid', tsMs: Number.MAX_SAFE_INTEGER - 1 })],
    ])('%s: not believed, the refusal is reported, and the gateway\'s counter stays its own', async (_name, refusal) => {
      const dir = join(tmp.path, `fake-${++attempt}`);
      const fake = await fakeHost(refusal);
      try {
        const before = Date.now();
        const { outcome, counter } = await shutdownFake(dir);
        expect(outcome).toMatchObject({ status: 'rejected' });
        expect(outcome.detail?.reissued).toBeUndefined();
        expect(fake.seen).toHaveLength(1);
        expect(counter).toBeLessThan(before + 60_000);
      } finally {
        await fake.close();
      }
    });

    it('the same refusal twice: sent again once, then reported as it is', async () => {
      const dir = join(tmp.path, `fake-${++attempt}`);
      // A host an hour ahead that refuses everything as expired, even in its own time.
      const fake = await fakeHost(() => ({ reason: 'expired', detail: 'expired', tsMs: Date.now() + 3_600_000 }));
      try {
        const { outcome, counter } = await shutdownFake(dir);
        expect(outcome).toMatchObject({ status: 'rejected', detail: { reason: 'expired', reissued: { reason: 'expired' } } });
        expect(fake.seen).toHaveLength(2);
        // Dated in the host's time, numbered on the gateway's own counter.
        expect(fake.seen[1]!.issuedAtMs - fake.seen[0]!.issuedAtMs).toBeGreaterThan(3_500_000);
        expect(counter).toBe(fake.seen[1]!.seq);
        expect(counter).toBeLessThan(Date.now() + 60_000);
      } finally {
        await fake.close();
      }
    });

    it('`replayed` for this very seq (a redelivery of a command the host already took): not sent again', async () => {
      const dir = join(tmp.path, `fake-${++attempt}`);
      const fake = await fakeHost((cmd) => ({ reason: 'replayed', detail: `seq ${cmd.seq} is not above the last accepted seq ${cmd.seq}`, tsMs: Date.now() + 5000 }));
      try {
        const { outcome } = await shutdownFake(dir);
        expect(outcome).toMatchObject({ status: 'rejected', detail: { reason: 'replayed' } });
        expect(outcome.detail?.reissued).toBeUndefined();
        expect(fake.seen).toHaveLength(1);
      } finally {
        await fake.close();
      }
    });
  });
});
