/**
 * Faults on the host-command path, with real parts: a real mosquitto (stopped and restarted on its
 * port), the host agent (HostAgent, in process) running a real local script, and the gateway side
 * (the registry's host-agent transport, sendHostCommand) on its own MQTT client.
 *
 * - The broker is down when the shutdown step must send: the trail must not say "not asked" about a
 *   command mqtt.js still holds and delivers once the broker is back; what the host then does is
 *   recorded (onLater), because it happened.
 * - A QoS 1 redelivery of an accepted command: one execution, and no `rejected` reply for the copy
 *   that would make the gateway believe the host refused (or that its shutdown failed).
 * - The host's state file cannot be written: the host refuses (`state-write-failed`) and runs nothing.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../agent/clock.js';
import { agentHostSchema } from '../../agent/config/actions-schema.js';
import { parseHostConfig } from '../../agent/config/host-schema.js';
import { HostAgent } from '../../agent/actions/host-agent.js';
import { HostReplyRouter, sendHostCommand } from '../../agent/actions/host-client.js';
import { commandTopic } from '../../agent/actions/host-protocol.js';
import { FileSeqStore } from '../../agent/actions/seq-file.js';
import { TransportRegistry } from '../../agent/actions/transports.js';
import type { ActionContext, HostOutcome } from '../../agent/actions/types.js';
import { silentLogger } from '../helpers/agent.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const BASE = 'rg-faults';
let broker: Mosquitto;
let tmp: TempDir;
const cleanups: Array<() => Promise<void> | void> = [];
/** The broker is brought back after a test that failed while it was down (the next test needs it). */
let brokerDown = false;
const stopBroker = async (): Promise<void> => {
  brokerDown = true;
  await broker.stop();
};
const startBroker = async (): Promise<void> => {
  await broker.restart();
  brokerDown = false;
};

beforeAll(async () => {
  broker = await startMosquitto();
  tmp = await tempDir('rackguard-faults-hostcmd-');
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  if (brokerDown) await startBroker();
});
afterAll(async () => {
  await broker?.cleanup();
  await tmp?.cleanup();
});

const ctx = (incident: string): ActionContext => ({ incident, zone: 'z1', level: 'critical', etaS: 60, reason: 'fault test', ts: Date.now(), dryRun: false });

/** A host agent in process whose shutdown command appends a line to `marks` (after `gate` exists, when given). */
let hostDirs = 0;
async function hostAgent(host: string, opts: { gate?: string } = {}) {
  // A directory of its own per call: a retried test must not find the last attempt's marks or state.
  const dir = join(tmp.path, `${host}-${++hostDirs}`);
  mkdirSync(dir, { recursive: true });
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const marks = join(dir, 'marks');
  const script = join(dir, 'shutdown.sh');
  const wait = opts.gate ? `while [ ! -e "${opts.gate}" ]; do sleep 0.02; done\n` : '';
  writeFileSync(script, `#!/bin/sh\n${wait}echo "$RACKGUARD_SEQ $RACKGUARD_ACTION" >> "${marks}"\n`);
  chmodSync(script, 0o755);
  const config = parseHostConfig(
    `version: 1
host: ${host}
mqtt: { url: "${broker.url}", reconnectMs: 200 }
baseTopic: ${BASE}
secretFile: ${secretFile}
stateDir: ${join(dir, 'state')}
commands: { shutdown: ["${script}"] }
`,
    join(dir, 'host.yaml'),
    dir,
  );
  // The agent's log tells when its subscription is in place (a command sent before it would be lost).
  const log = new EventEmitter();
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => (lines.push(l), log.emit('line')) });
  let agent: HostAgent;
  const launch = async (): Promise<void> => {
    const before = lines.length;
    agent = new HostAgent(config, { logger });
    await agent.start();
    await waitFor(log, 'line', () => lines.slice(before).some((l) => l.includes('host agent ready')), 10_000, `${host} subscribed`);
  };
  await launch();
  cleanups.push(() => agent.stop());
  return {
    secretFile,
    stateDir: join(dir, 'state'),
    marks: (): string[] => (existsSync(marks) ? readFileSync(marks, 'utf8').trim().split('\n') : []),
    lines,
    stop: () => agent.stop(),
    /** A new HostAgent on the same config, state and MQTT session (clean: false). */
    restart: launch,
  };
}

async function gatewayClient(id: string): Promise<MqttClient> {
  const c = mqtt.connect(broker.url, { clientId: id, protocolVersion: 5, clean: true, reconnectPeriod: 200 });
  await new Promise<void>((r) => c.once('connect', () => r()));
  cleanups.push(() => c.endAsync(true));
  return c;
}


describe('host commands under faults (real mosquitto, real host agent)', () => {
  /** The registry's host-agent transport on a fresh gateway client, and what it hands to onLater. */
  async function gateway(id: string, host: string, secretFile: string) {
    const gw = await gatewayClient(id);
    const registry = new TransportRegistry({ logger: silentLogger, clock: systemClock, gateway: 'gw-1', stateDir: join(tmp.path, `${id}-state`), hostsBaseTopic: BASE, mqtt: gw }, { commandTtlS: 60 });
    cleanups.push(() => registry.close());
    const def = agentHostSchema.parse({ via: 'agent', name: host, secretFile, forceOffAfterS: 30 });
    const later: HostOutcome[] = [];
    const laterEv = new EventEmitter();
    const ask = (incident: string, ackTimeoutMs: number, test = false) =>
      registry.forHost(def).shutdown(def, ctx(incident), { test, ackTimeoutMs, signal: new AbortController().signal, onLater: (o) => (later.push(o), laterEv.emit('later')) });
    return { gw, ask, later, laterEv };
  }

  it('broker down when the shutdown step starts and back within hostSyncS: the host is asked once it is back, and acknowledges', async () => {
    const h = await hostAgent('web-01');
    const g = await gateway('faults-gw-1', 'web-01', h.secretFile);
    await stopBroker();
    await waitFor(g.gw, 'close', () => !g.gw.connected, 10_000, 'the gateway client to see the broker gone');
    const asking = g.ask('inc-broker-blip', 20_000);
    await startBroker();
    const o = await asking;
    expect([o.status, o.message]).toEqual(['acknowledged', expect.stringMatching(/accepted/)]);
    // The acknowledgement comes when the command is accepted; its final report once it has run.
    await waitFor(g.laterEv, 'later', () => g.later.some((l) => l.detail?.final === true), 20_000, 'the final report', () => JSON.stringify({ later: g.later, marks: h.marks() }));
    expect(h.marks()).toHaveLength(1);
  }, 60_000);

  it('broker down past hostSyncS: recorded "not asked", and then truly never delivered (the host does not act when the broker returns)', async () => {
    const h = await hostAgent('web-04');
    const g = await gateway('faults-gw-4', 'web-04', h.secretFile);
    // A first command (a test) subscribes the reply topic: the next one finds it in place.
    expect((await g.ask('inc-probe', 10_000, true)).status).toBe('would-act');
    await stopBroker();
    await waitFor(g.gw, 'close', () => !g.gw.connected, 10_000, 'the gateway client to see the broker gone');
    const o = await g.ask('inc-broker-down', 1500);
    expect([o.status, o.message]).toEqual(['unreachable', expect.stringMatching(/not asked/)]);
    await startBroker();
    // Commands are judged in arrival order: once this later test is answered, anything queued before it arrived.
    expect((await g.ask('inc-probe-2', 10_000, true)).status).toBe('would-act');
    expect(h.marks()).toEqual([]);
  }, 60_000);

  it('a host agent that is away past hostSyncS and acts on the command when it returns: its late acknowledgement and report are recorded', async () => {
    const h = await hostAgent('web-05');
    const g = await gateway('faults-gw-5', 'web-05', h.secretFile);
    await h.stop();
    const o = await g.ask('inc-host-away', 1000);
    expect(o.status).toBe('timeout');
    // Its persistent session kept the command; it is still valid, so the host acts on it.
    await h.restart();
    await waitFor(g.laterEv, 'later', () => g.later.some((l) => l.detail?.final === true), 20_000, 'the late reply and the final report in the trail', () => JSON.stringify({ later: g.later, marks: h.marks() }));
    expect(g.later.map((l) => [l.status, l.detail?.late ?? false, l.detail?.final ?? false])).toEqual([
      ['acknowledged', true, false],
      ['acknowledged', false, true],
    ]);
    expect(h.marks()).toHaveLength(1);
  }, 60_000);

  it('a QoS 1 redelivery of an accepted shutdown runs it once, and the copy does not turn the gateway\'s final report into a rejection', async () => {
    const gate = join(tmp.path, `gate-web-02-${++hostDirs}`);
    const h = await hostAgent('web-02', { gate });
    const gw = await gatewayClient('faults-gw-2');
    const secret = readFileSync(h.secretFile, 'utf8').trim();
    const router = new HostReplyRouter(gw, BASE, silentLogger);
    cleanups.push(() => router.detach());
    const opts = { secret, seqStore: new FileSeqStore(join(tmp.path, 'gw2-seq.json')), replies: router, baseTopic: BASE, gateway: 'gw-2', ackTimeoutMs: 10_000, finalTimeoutMs: 20_000 };
    const first = await sendHostCommand(gw, 'web-02', { action: 'shutdown', incident: 'inc-dup', dryRun: false, ttlS: 60 }, opts);
    expect(first.ack.kind === 'reply' && first.ack.reply.status).toBe('accepted');

    // The broker delivers the same PUBLISH again (a QoS 1 resend after a lost PUBACK looks like this to the host).
    const resend = await mqtt.connectAsync(broker.url, { clientId: 'faults-resend', protocolVersion: 5 });
    cleanups.push(() => resend.endAsync(true));
    await resend.publishAsync(commandTopic(BASE, 'web-02'), JSON.stringify(first.command), { qos: 1, properties: { responseTopic: `${BASE}/hosts/web-02/reply` } });
    // The host judges commands in arrival order: once a later command is answered, the copy was judged.
    const probe = await sendHostCommand(gw, 'web-02', { action: 'test', incident: 'inc-dup', dryRun: true, ttlS: 60 }, opts);
    expect(probe.ack.kind === 'reply' && probe.ack.reply.status).toBe('would-act');

    writeFileSync(gate, '');
    const final = await first.final;
    expect(final.kind === 'reply' && [final.reply.status, final.reply.reason]).toEqual(['done', undefined]);
    expect(h.marks()).toEqual([`${first.command.seq} shutdown`]);
  }, 60_000);

  it('a host whose seq state cannot be written refuses the command (state-write-failed) and runs nothing', async () => {
    const h = await hostAgent('web-03');
    const gw = await gatewayClient('faults-gw-3');
    const secret = readFileSync(h.secretFile, 'utf8').trim();
    const router = new HostReplyRouter(gw, BASE, silentLogger);
    cleanups.push(() => router.detach());
    // The state file becomes a directory under the running agent: the atomic rename over it fails.
    rmSync(join(h.stateDir, 'last-seq.json'), { force: true });
    mkdirSync(join(h.stateDir, 'last-seq.json'), { recursive: true });
    const sent = await sendHostCommand(gw, 'web-03', { action: 'shutdown', incident: 'inc-state', dryRun: false, ttlS: 60 }, { secret, seqStore: new FileSeqStore(join(tmp.path, 'gw3-seq.json')), replies: router, baseTopic: BASE, gateway: 'gw-3', ackTimeoutMs: 10_000 });
    expect(sent.ack.kind === 'reply' && [sent.ack.reply.status, sent.ack.reply.reason, sent.ack.reply.final]).toEqual(['rejected', 'state-write-failed', true]);
    expect(h.marks()).toEqual([]);
  }, 30_000);
});
