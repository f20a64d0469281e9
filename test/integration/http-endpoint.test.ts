/**
 * The local HTTP endpoint (issue 10 item 1) in process, against real parts: the simulator on a socat
 * pty and a Modbus TCP port, a SQLite outbox, promtool, and real HTTP on free loopback ports.
 */
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import { parseConfig } from '../../agent/config/load.js';
import type { EventJson, StateJson } from '../../agent/observe/state.js';
import { parseScenario, startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { batchOf, SampleLog } from '../helpers/agent.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import { freePort } from '../helpers/ports.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { SseReader } from '../helpers/sse.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { until, waitFor } from '../helpers/wait.js';

const POLL_MS = 200;
const TOKEN = 's3cret-token-for-tests';

let tmp: TempDir;
let n = 0;
const agents: Agent[] = [];
const cleanups: Array<() => Promise<void> | void> = [];

interface Rig {
  pty: PtyPair;
  sim: Simulator;
}

/**
 * A rack of three temperature sensors (one zone) on a pty and a chiller on Modbus TCP. The simulator
 * runs in this process: a request deadline of one second, so that a loaded machine stalling this process
 * does not turn a reply into a timeout (a device going failing and back would add device_state events).
 */
function configText(o: { ptyPath: string; tcpPort: number; http?: string; outboxPath?: string; detection?: string; mqtt?: string }): string {
  const id = ++n;
  return `version: 1
site: lab
gateway: http${id}
logging: { samples: false, healthIntervalS: 3600 }
buses:
  - id: l
    type: serial
    path: ${o.ptyPath}
    devices:
      - { id: r1, unitId: 1, profile: xy-md02, pollIntervalMs: ${POLL_MS}, timeoutMs: 1000 }
      - { id: r2, unitId: 2, profile: xy-md02, pollIntervalMs: ${POLL_MS}, timeoutMs: 1000 }
      - { id: r3, unitId: 3, profile: xy-md02, pollIntervalMs: ${POLL_MS}, timeoutMs: 1000 }
  - id: net
    type: tcp
    host: 127.0.0.1
    port: ${o.tcpPort}
    devices:
      - { id: chiller1, profile: generic-chiller, unitId: 1, pollIntervalMs: ${POLL_MS} }
zones:
  - id: z1
    sensors: [r1.temperature, r2.temperature, r3.temperature]
${o.detection ?? ''}
chillers:
  - { id: ch1, running: chiller1.running, alarm: chiller1.alarm_code, supplyTemp: chiller1.supply_temp, zones: [z1] }
outputs:
  outbox: { path: ${o.outboxPath ?? join(tmp.path, `outbox-${id}.db`)}, reopenInitialMs: 100, reopenMaxMs: 200 }
${o.mqtt ? `  mqtt: { url: '${o.mqtt}' }\n` : ''}http: ${o.http ?? '{ port: 0 }'}
`;
}

async function rig(scenarioText?: string, timeScale = 1): Promise<Rig> {
  const pty = await startPtyPair();
  cleanups.push(() => pty.stop());
  const simConfig = parseConfig(configText({ ptyPath: pty.a, tcpPort: 1502 }), 'sim');
  const scenario = scenarioText ? parseScenario(scenarioText, 'scenario', { config: simConfig }) : undefined;
  const sim = await startSimulator({ config: simConfig, serialPath: pty.b, tcpPort: 0, timeScale, ...(scenario ? { scenario } : {}) });
  cleanups.push(() => sim.stop());
  return { pty, sim };
}

/** A logger whose JSON lines the test can read and await. */
function capture(): { logger: Logger; lines: Array<Record<string, unknown>>; bus: EventEmitter } {
  const lines: Array<Record<string, unknown>> = [];
  const bus = new EventEmitter();
  const logger = pino({ level: 'info' }, {
    write: (s: string) => {
      lines.push(JSON.parse(s) as Record<string, unknown>);
      bus.emit('line');
    },
  });
  return { logger, lines, bus };
}

function agentOn(r: Rig, o: { http?: string; outboxPath?: string; detection?: string; mqtt?: string } = {}): { agent: Agent; log: ReturnType<typeof capture> } {
  const log = capture();
  const agent = createAgent(parseConfig(configText({ ptyPath: r.pty.a, tcpPort: r.sim.tcpPort!, ...o }), 'cfg'), { logger: log.logger });
  agents.push(agent);
  return { agent, log };
}

/** The URL the server logged (port 0 → the real port). */
async function urlOf(log: ReturnType<typeof capture>, from = 0): Promise<string> {
  return waitFor(log.bus, 'line', () => log.lines.slice(from).find((l) => typeof l.url === 'string' && /status page and metrics on/.test(String(l.msg)))?.url as string | undefined, 10_000, 'the HTTP server URL in the log');
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-http-');
});

afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop();
});

afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await tmp?.cleanup();
});

describe('HTTP endpoint', () => {
  let r: Rig;
  beforeAll(async () => {
    r = await rig();
  });

  it('healthz, readyz (flips to 200 when the outbox opens), api/state matching the simulator, metrics passing promtool', async () => {
    // The outbox's directory is a regular file at first: the outbox runs from memory, unavailable.
    // Its own per attempt: after a failure the agent may have made it the outbox's directory.
    const blocker = join(tmp.path, `blocker-${n + 1}`);
    writeFileSync(blocker, 'not a directory');
    const broker = await startMosquitto();
    cleanups.push(() => broker.cleanup());
    const { agent, log } = agentOn(r, { outboxPath: join(blocker, 'outbox.db'), mqtt: broker.url });
    const samples = new SampleLog(agent);
    await agent.start();
    const base = await urlOf(log);
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const health = await fetch(`${base}healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });

    const notReady = await fetch(`${base}readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ ready: false, reasons: ['outbox unavailable'] });

    rmSync(blocker);
    const ready = await until(async () => {
      const res = await fetch(`${base}readyz`);
      return res.status === 200 ? ((await res.json()) as unknown) : undefined;
    }, 10_000, '/readyz 200 once the outbox opened');
    expect(ready).toEqual({ ready: true });

    // The simulator serves fixed values: /api/state shows exactly them, and the chiller.
    r.sim.rack.setValue('r1.temperature', 23.4);
    r.sim.rack.setValue('r2.temperature', 24.1);
    await samples.next((b) => b.some((s) => s.pointId === 'r1.temperature' && s.value === 23.4), 10_000, 'r1 at 23.4 °C');
    await samples.next((b) => b.some((s) => s.pointId === 'r2.temperature' && s.value === 24.1), 10_000, 'r2 at 24.1 °C');
    await samples.next(batchOf('chiller1', 'good'), 10_000, 'a chiller poll');
    const res = await fetch(`${base}api/state`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const state = (await res.json()) as StateJson;
    expect(state).toMatchObject({ site: 'lab', ready: true, version: expect.any(String) });
    expect(state.zones.map((z) => z.zone)).toEqual(['z1']);
    const z1 = state.zones[0]!;
    expect(z1.level).toBe('normal');
    const sensor = (p: string) => z1.sensors.find((s) => s.point === p)!;
    expect(sensor('r1.temperature').tempC).toBe(23.4);
    expect(sensor('r2.temperature').tempC).toBe(24.1);
    expect(sensor('r1.temperature').history.at(-1)?.[1]).toBe(23.4);
    expect(state.chillers).toEqual([expect.objectContaining({ id: 'ch1', running: true, alarmCode: 0 })]);
    expect(state.chillers[0]!.supplyTempC).toBeCloseTo(r.sim.rack.pointValue('chiller1.supply_temp')!, 0);
    expect(state.devices.map((d) => d.id).sort()).toEqual(['chiller1', 'r1', 'r2', 'r3']);
    for (const d of state.devices) {
      expect(d.state).toBe('online');
      expect(d.counters.responses).toBeGreaterThan(0);
    }
    expect(state.outputs.outbox?.state).toBe('open');
    expect(state.outputs.sinks.mqtt).toMatchObject({ depth: expect.any(Number), lagMs: expect.any(Number) });

    const metrics = await fetch(`${base}metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const body = await metrics.text();
    expect(body).toMatch(/^rackguard_device_requests_total\{device="r1",bus="l"\} [1-9]\d*$/m);
    expect(body).toMatch(/^rackguard_device_latency_seconds_count\{device="r1",bus="l"\} [1-9]\d*$/m);
    expect(body).toMatch(/^rackguard_zone_level\{zone="z1"\} 0$/m);
    expect(body).toMatch(/^rackguard_zone_state\{zone="z1",level="normal"\} 1$/m);
    expect(body).toMatch(/^rackguard_sensor_temperature_celsius\{point="r1\.temperature"\} 23\.4$/m);
    expect(body).toMatch(/^rackguard_outbox_state\{state="open"\} 1$/m);
    expect(body).toMatch(/^rackguard_ready 1$/m);
    expect(body).toMatch(/^rackguard_chiller_running\{chiller="ch1"\} 1$/m);
    expect(body).toMatch(/^rackguard_outbox_rows \d+$/m);
    expect(body).toMatch(/^rackguard_sink_depth_records\{sink="mqtt"\} \d+$/m);
    expect(body).toMatch(/^rackguard_sink_lag_seconds\{sink="mqtt"\} [\d.e-]+$/m);
    expect(body).toMatch(/^process_cpu_seconds_total /m);
    const promtool = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: body, encoding: 'utf8' });
    expect(promtool.stdout + promtool.stderr).toBe('');
    expect(promtool.status).toBe(0);

    const events = await fetch(`${base}api/events`);
    expect(events.status).toBe(200);
    const list = (await events.json()) as EventJson[];
    // Every device went unknown → online: one event each, numbered in order.
    expect(list.filter((e) => e.kind === 'device_state' && e.state === 'online').map((e) => e.deviceId).sort()).toEqual(['chiller1', 'r1', 'r2', 'r3']);
    expect(list.map((e) => e.seq)).toEqual([...list.keys()].map((i) => i + 1));

    expect((await fetch(`${base}nope`)).status).toBe(404);
    expect((await fetch(`${base}api/state`, { method: 'POST' })).status).toBe(405);
    const page = await fetch(base);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
  });

  it('a token file: 401 without or with a wrong token on every route, 200 with it (header or ?token=)', async () => {
    const tokenFile = join(tmp.path, 'http-token');
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const { agent, log } = agentOn(r, { http: `{ port: 0, tokenFile: ${tokenFile} }` });
    await agent.start();
    const base = await urlOf(log);
    expect(JSON.stringify(log.lines)).not.toContain(TOKEN);
    await until(async () => (await fetch(`${base}readyz`, { headers: { authorization: `Bearer ${TOKEN}` } })).status === 200, 10_000, 'ready');
    for (const path of ['', 'healthz', 'readyz', 'metrics', 'api/state', 'api/events', 'api/events/stream', 'nope']) {
      const none = await fetch(`${base}${path}`);
      expect(none.status, `${path} without a token`).toBe(401);
      expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
      await none.body?.cancel();
      const wrong = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${TOKEN}x` } });
      expect(wrong.status, `${path} with a wrong token`).toBe(401);
      await wrong.body?.cancel();
      const wrongQuery = await fetch(`${base}${path}?token=${TOKEN.slice(0, -1)}`);
      expect(wrongQuery.status, `${path} with a wrong ?token=`).toBe(401);
      await wrongQuery.body?.cancel();
      if (path === 'api/events/stream') continue; // read below as a stream
      const good = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(good.status, `${path} with the token`).toBe(path === 'nope' ? 404 : 200);
      await good.body?.cancel();
      const query = await fetch(`${base}${path}?token=${encodeURIComponent(TOKEN)}`);
      expect(query.status, `${path} with ?token=`).toBe(path === 'nope' ? 404 : 200);
      await query.body?.cancel();
    }
    for (const headers of [{ authorization: `Bearer ${TOKEN}` }, {}] as Array<Record<string, string>>) {
      const sse = await SseReader.open(`${base}api/events/stream${'authorization' in headers ? '' : `?token=${TOKEN}`}`, headers);
      expect(sse.response.status).toBe(200);
      const first = await sse.next((m) => m.event === 'state', 5000, 'the first state message');
      expect((JSON.parse(first.data) as StateJson).gateway).toMatch(/^http\d+$/);
      sse.close();
    }
  });

  it('a port in use: an error naming address and port, monitoring goes on, and the endpoint comes up once the port is free', async () => {
    const port = await freePort();
    const squatter: Server = createServer();
    await new Promise<void>((resolve) => squatter.listen(port, '127.0.0.1', resolve));
    const { agent, log } = agentOn(r, { http: `{ port: ${port} }` });
    const samples = new SampleLog(agent);
    await agent.start();
    const err = await waitFor(log.bus, 'line', () => log.lines.find((l) => l.level === 50 && l.code === 'EADDRINUSE'), 5000, 'the bind error');
    expect(err.msg).toContain(`cannot listen on 127.0.0.1:${port}: EADDRINUSE`);
    await samples.next(batchOf('r1', 'good'), 10_000, 'r1 polled while the endpoint is down');
    await new Promise<void>((resolve) => squatter.close(() => resolve()));
    const base = await urlOf(log);
    expect(base).toBe(`http://127.0.0.1:${port}/`);
    expect((await fetch(`${base}healthz`)).status).toBe(200);
  });

  it('stop ends the SSE streams and closes the port; start after stop serves again', async () => {
    const { agent, log } = agentOn(r);
    await agent.start();
    const base = await urlOf(log);
    const sse = await SseReader.open(`${base}api/events/stream`);
    await sse.next((m) => m.event === 'state', 5000, 'the first state message');
    // A state message follows within about a second of new samples.
    await sse.next((m, i = sse.messages.indexOf(m)) => m.event === 'state' && i > 0, 5000, 'a second state message');
    await agent.stop();
    await sse.ended;
    await expect(fetch(`${base}healthz`)).rejects.toThrow();
    const from = log.lines.length;
    await agent.start();
    const again = await urlOf(log, from);
    expect((await fetch(`${again}healthz`)).status).toBe(200);
  });
});

describe('HTTP endpoint, live zone events', () => {
  it('a chiller trip in the simulator reaches an SSE client as a zone event, and the state follows', async () => {
    // Ten simulated seconds per second: the trip at 60 s comes 6 s in, the room heats at ~20 °C/min
    // in the agent's time; short windows so the detector has the coverage it needs within seconds.
    const r = await rig('name: trip\nseed: 1\nroom: { itLoadKw: 100, initialRiseCPerMin: 2, noiseC: 0 }\nevents:\n  - { at: 60, chiller: trip }\n', 10);
    const detection = '    detection: { shortWindowS: 5, longWindowS: 20, dwellS: 1, staleAfterS: 10 }';
    const { agent, log } = agentOn(r, { detection });
    await agent.start();
    const base = await urlOf(log);
    const sse = await SseReader.open(`${base}api/events/stream`);
    const polled = (m: { event: string; data: string }) => m.event === 'state' && (JSON.parse(m.data) as StateJson).chillers[0]?.running === true;
    const first = JSON.parse((await sse.next(polled, 10_000, 'a state with the chiller running')).data) as StateJson;
    expect(first.zones[0]!.level).toBe('normal');
    const msg = await sse.next((m) => m.event === 'event' && (JSON.parse(m.data) as EventJson).kind === 'zone_level' && ['alarm', 'critical'].includes((JSON.parse(m.data) as EventJson).level!), 60_000, 'a zone_level alarm event');
    const e = JSON.parse(msg.data) as EventJson;
    expect(e).toMatchObject({ kind: 'zone_level', zone: 'z1', seq: Number(msg.id) });
    expect(e.message).toContain('zone z1');
    const after = await sse.next((m) => m.event === 'state' && sse.messages.indexOf(m) > sse.messages.indexOf(msg), 5000, 'a state after the event');
    const st = JSON.parse(after.data) as StateJson;
    expect(['alarm', 'critical']).toContain(st.zones[0]!.level);
    expect(st.chillers[0]!.running).toBe(false);
    sse.close();
  });
});
