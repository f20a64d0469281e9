/**
 * The status page in a real headless Chromium, against a scripted Server-Sent Events stream that follows
 * the observability contract (agent/observe/status-page.ts; the stub plays the agent's HTTP server so
 * every step is deterministic). What an engineer relies on:
 * - live values render (zones, sensors with sparklines and rates, ETA, chillers, devices, outbox);
 * - a zone turns to alarm on the page without a reload when a `state` message says so;
 * - `event` messages are prepended, and text from a device is shown as text, never run as markup;
 * - the `?token=` of the page URL reaches every API request;
 * - "disconnected — retrying" when the stream drops, and back to "live" by itself, also after a 401.
 * Then end to end, with the built agent (dist/agent/main.js: run `npm run build` first) serving the page
 * with a token, and the simulator on a socat pty: a chiller trip turns the zone to alarm on the page
 * without a reload.
 * Screenshots (laptop and phone) are kept in test-artifacts/.
 */
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statusPageHtml } from '../../agent/observe/status-page.js';
import { ARTIFACTS_DIR, startChromium, type Chromium, type Page } from '../helpers/chromium.js';
import { parseConfig } from '../../agent/config/load.js';
import { parseScenario, startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const TOKEN = 'tok+en/with=odd&chars';

type Level = 'normal' | 'warning' | 'alarm' | 'critical';

function history(nowMs: number, base: number, risePerMin: number, n = 120): Array<[number, number]> {
  return Array.from({ length: n }, (_, i) => {
    const t = nowMs - (n - 1 - i) * 2000;
    const riseFrom = n * 0.6;
    return [t, +(base + Math.sin(i / 7) * 0.15 + (i > riseFrom ? ((i - riseFrom) * 2 * risePerMin) / 60 : 0)).toFixed(2)];
  });
}

/** A /api/state document as in the contract; `level` of zone cold-aisle-a is what the test drives. */
function state(level: Level, nowMs = Date.now()): Record<string, unknown> {
  const hot = level !== 'normal';
  const sensor = (point: string, base: number) => ({
    point,
    tempC: hot ? base + 3.1 : base,
    status: 'good',
    rateShortCPerMin: hot ? 1.9 : 0.02,
    rateLongCPerMin: hot ? 1.2 : 0.01,
    etaCriticalS: hot ? 212 : null,
    history: history(nowMs, base, hot ? 1.9 : 0),
  });
  return {
    site: 'lab',
    gateway: 'gw-page',
    ts: new Date(nowMs).toISOString(),
    tsMs: nowMs,
    ready: true,
    version: '0.1.0',
    zones: [
      {
        zone: 'cold-aisle-a', level, blind: false, sinceS: 12.3, etaCriticalS: hot ? 212 : null, k: 2,
        agreeingAlarm: hot ? 2 : 0, agreeingCritical: 0,
        sensors: [sensor('rack01.temperature', 23.4), sensor('rack02.temperature', 24.1), sensor('rack03.temperature', 22.8)],
      },
      {
        zone: 'cold-aisle-b', level: 'warning', blind: true, sinceS: 400, etaCriticalS: null, k: 2, agreeingAlarm: 0, agreeingCritical: 0,
        sensors: [
          { point: 'rack05.temperature', tempC: 23.9, status: 'good', rateShortCPerMin: 0.1, rateLongCPerMin: 0.05, etaCriticalS: null, history: history(nowMs, 23.9, 0) },
          { point: 'rack07.temperature', tempC: null, status: 'comm_error', rateShortCPerMin: null, rateLongCPerMin: null, etaCriticalS: null, history: [] },
        ],
      },
    ],
    chillers: [
      { id: 'crac-1', running: !hot, alarmCode: hot ? 17 : 0, supplyTempC: hot ? 15.3 : 12.1, supplyRateCPerMin: hot ? 0.8 : 0.0, corroborates: hot, reason: hot ? 'stopped, alarm 17' : 'running' },
    ],
    devices: [
      { id: 'rack01', bus: 'rs485-a', state: 'online', lastError: null, counters: { requests: 1200, responses: 1200, timeouts: 0, crcErrors: 0, exceptions: 0, badFrames: 0, portErrors: 0, latencyLastMs: 11, latencyAvgMs: 10.4, latencyMaxMs: 31 } },
      { id: 'rack07', bus: 'rs485-a', state: 'failing', lastError: 'CRC mismatch <b>0x1f</b>', counters: { requests: 1180, responses: 1002, timeouts: 3, crcErrors: 175, exceptions: 0, badFrames: 0, portErrors: 0, latencyLastMs: 12, latencyAvgMs: 12.9, latencyMaxMs: 40 } },
    ],
    outputs: {
      outbox: { state: 'open', rows: 5321, bytes: 1, maxBytes: 2, lastSeq: 9000, pending: 0, commits: 100, droppedTelemetry: 0, droppedEvents: 0, sinks: {} },
      sinks: { mqtt: { cursor: 8990, depth: 10, lagMs: 1500 }, influx: { cursor: 9000, depth: 0, lagMs: 0 } },
    },
  };
}

/** The agent's side of the contract, scripted: the test pushes states and events to connected pages. */
class StubAgent extends EventEmitter {
  readonly server: Server;
  /** Stream connections answered with an error status. */
  refused = 0;
  readonly requests: string[] = [];
  readonly streams = new Set<ServerResponse>();
  /** Status for the next stream connections (e.g. 401 to make EventSource give up). */
  streamStatus = 200;
  recentEvents: unknown[] = [];
  current: Record<string, unknown> = state('normal');

  constructor() {
    super();
    this.server = createServer((req, res) => this.handle(req, res));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.requests.push(req.url ?? '');
    const url = new URL(req.url ?? '/', 'http://stub');
    if (url.searchParams.get('token') !== TOKEN) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"token required"}');
      return;
    }
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(statusPageHtml());
    } else if (url.pathname === '/api/events') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(this.recentEvents));
    } else if (url.pathname === '/api/events/stream') {
      if (this.streamStatus !== 200) {
        this.refused++;
        this.emit('refused');
        res.writeHead(this.streamStatus, { 'content-type': 'application/json' }).end('{"error":"unavailable"}');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      // A short retry keeps the browser's own reconnection quick in this test.
      res.write('retry: 300\n\n');
      res.write(`event: state\ndata: ${JSON.stringify(this.current)}\n\n`);
      this.streams.add(res);
      res.on('close', () => this.streams.delete(res));
    } else {
      res.writeHead(404).end();
    }
  }

  pushState(s: Record<string, unknown>): void {
    this.current = s;
    for (const r of this.streams) r.write(`event: state\ndata: ${JSON.stringify(s)}\n\n`);
  }

  pushEvent(e: unknown): void {
    this.recentEvents.push(e);
    for (const r of this.streams) r.write(`event: event\ndata: ${JSON.stringify(e)}\n\n`);
  }

  /** Drops every open stream, as a restarting agent or a broken link would. */
  dropStreams(): void {
    for (const r of this.streams) r.destroy();
    this.streams.clear();
  }

  async close(): Promise<void> {
    this.dropStreams();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

let stub: StubAgent;
let base: string;
let browser: Chromium;
let page: Page;

const zoneLevel = (zone: string) => `document.querySelector('[data-zone="${zone}"]')?.getAttribute('data-level')`;
const connState = `document.getElementById('conn').getAttribute('data-state')`;

beforeAll(async () => {
  stub = new StubAgent();
  stub.recentEvents = [
    { seq: 1, kind: 'device_state', ts: new Date().toISOString(), tsMs: Date.now() - 5000, deviceId: 'rack07', state: 'failing', message: 'rack07 failing: CRC mismatch' },
  ];
  base = await stub.listen();
  browser = await startChromium();
  page = await browser.newPage();
  await page.viewport(1366, 900);
}, 60_000);

afterAll(async () => {
  await browser?.stop();
  await stub?.close();
});

describe('status page in Chromium, against a scripted stream', () => {
  it('renders live values from the first state message, with the token on every request', async () => {
    await page.goto(`${base}/?token=${encodeURIComponent(TOKEN)}`);
    // The recent events come from their own fetch, which may land after the first state message.
    await page.waitFor(`${connState} === 'live' && ${zoneLevel('cold-aisle-a')} === 'normal' && document.querySelector('#events li[data-seq]') !== null`, 15_000, 'the page live with zone cold-aisle-a normal and its recent events');
    const view = await page.evaluate<Record<string, unknown>>(`(() => {
      const q = (s) => document.querySelector(s);
      const row = (sel) => [...q(sel).querySelectorAll('td')].map((td) => td.textContent);
      return {
        conn: q('#conn').textContent,
        zoneA: q('[data-zone="cold-aisle-a"] .zone-level').textContent,
        zoneBShade: q('[data-zone="cold-aisle-b"]').className,
        zoneBLabel: q('[data-zone="cold-aisle-b"] .zone-level').textContent,
        sensor: row('[data-point="rack01.temperature"]'),
        sparkPoints: q('[data-point="rack01.temperature"] svg polyline').getAttribute('points').trim().split(/\\s+/).length,
        deadSensor: row('[data-point="rack07.temperature"]'),
        chiller: row('[data-chiller="crac-1"]'),
        device: row('[data-device="rack07"]'),
        sink: row('[data-sink="mqtt"]'),
        events: [...document.querySelectorAll('#events li')].map((li) => li.getAttribute('data-seq')),
        site: q('#site').textContent,
      };
    })()`);
    expect(view).toMatchObject({
      conn: 'live',
      zoneA: 'normal',
      zoneBShade: expect.stringContaining('level-blind') as unknown,
      zoneBLabel: 'warning · blind',
      site: 'lab / gw-page',
      events: ['1'],
    });
    expect(view.sensor).toEqual(['rack01.temperature', '23.4', '+0.02', '+0.01', '—', '']);
    expect(view.sparkPoints).toBe(120);
    // No reading: its status instead, no value invented for it, and no sparkline without history.
    expect(view.deadSensor).toEqual(['rack07.temperaturecomm_error', '—', '—', '—', '—', '—']);
    expect(view.chiller).toEqual(['crac-1', 'running', '0', '12.1', '0.00', 'no', 'running']);
    expect(view.device).toEqual(['rack07', 'rs485-a', 'failing', '1180', '3', '175', '0', '12.9', 'CRC mismatch <b>0x1f</b>']);
    expect(view.sink).toEqual(['mqtt', '10', '1.5 s']);
    // Every API call carried the token (the page itself too, or the stub would have refused it).
    const api = stub.requests.filter((u) => u.startsWith('/api/'));
    expect(api.some((u) => u.startsWith('/api/events/stream?'))).toBe(true);
    expect(api.some((u) => u.startsWith('/api/events?'))).toBe(true);
    for (const u of api) expect(new URL(u, 'http://stub').searchParams.get('token'), u).toBe(TOKEN);
    await page.screenshot(join(ARTIFACTS_DIR, 'status-page-normal.png'));
  });

  it('turns the zone to alarm without a reload, and shows the zone ETA', async () => {
    await page.evaluate(`window.__sameDocument = 'yes'`);
    stub.pushState(state('alarm'));
    await page.waitFor(`${zoneLevel('cold-aisle-a')} === 'alarm'`, 10_000, 'zone cold-aisle-a alarm on the page');
    const after = await page.evaluate<Record<string, unknown>>(`({
      same: window.__sameDocument,
      cls: document.querySelector('[data-zone="cold-aisle-a"]').className,
      eta: document.querySelector('[data-zone="cold-aisle-a"] .zone-eta').textContent,
      color: getComputedStyle(document.querySelector('[data-zone="cold-aisle-a"] .zone-level')).backgroundColor,
      chiller: document.querySelector('[data-chiller="crac-1"] td:nth-child(2)').textContent,
      title: document.title,
    })`);
    expect(after).toEqual({ same: 'yes', cls: 'card zone level-alarm', eta: '3 min 32 s', color: 'rgb(214, 40, 40)', chiller: 'stopped', title: 'ALARM · rackguard gw-page' });
    stub.pushState(state('critical'));
    await page.waitFor(`${zoneLevel('cold-aisle-a')} === 'critical'`, 10_000, 'zone cold-aisle-a critical on the page');
    expect(await page.evaluate(`getComputedStyle(document.querySelector('[data-zone="cold-aisle-a"]')).animationName`)).toBe('flash');
    await page.screenshot(join(ARTIFACTS_DIR, 'status-page-critical.png'));
  });

  it('prepends events, showing device text as text', async () => {
    const hostile = '<img src=x onerror="window.__pwned=1">rack07 says <script>window.__pwned=2</script>';
    stub.pushEvent({ seq: 2, kind: 'zone_level', ts: new Date().toISOString(), tsMs: Date.now(), zone: 'cold-aisle-a', level: 'alarm', from: 'warning', message: 'cold-aisle-a: warning → alarm' });
    stub.pushEvent({ seq: 3, kind: 'device_state', ts: new Date().toISOString(), tsMs: Date.now(), deviceId: 'rack07', state: 'exceptions', message: hostile });
    await page.waitFor(`document.querySelector('#events li')?.getAttribute('data-seq') === '3'`, 10_000, 'event 3 at the top of the list');
    const ev = await page.evaluate<Record<string, unknown>>(`({
      seqs: [...document.querySelectorAll('#events li')].map((li) => li.getAttribute('data-seq')),
      text: document.querySelector('#events li span:last-child').textContent,
      markup: document.querySelectorAll('#events img, #events script').length,
      pwned: window.__pwned === undefined ? null : window.__pwned,
      alarmRow: document.querySelector('#events li[data-seq="2"]').className,
    })`);
    expect(ev).toEqual({ seqs: ['3', '2', '1'], text: hostile, markup: 0, pwned: null, alarmRow: 'level-alarm' });
  });

  it('shows "disconnected — retrying" when the stream drops and goes live again by itself, also after a 401', async () => {
    await page.evaluate(`window.__sameDocument = 'still'`);
    // EventSource gives up for good on an HTTP error status: the page must retry by itself.
    stub.streamStatus = 401;
    stub.dropStreams();
    await page.waitFor(`${connState} === 'retrying' && document.getElementById('conn').textContent === 'disconnected — retrying'`, 10_000, 'the disconnected indicator');
    // The browser's own reconnection meets the 401; only the page's retry can bring it back now.
    await waitFor(stub, 'refused', () => stub.refused > 0, 10_000, 'a stream request refused with 401');
    expect(await page.evaluate(`document.getElementById('conn').getAttribute('data-state')`)).toBe('retrying');
    const refusedBefore = stub.requests.filter((u) => u.startsWith('/api/events/stream')).length;
    // The agent is back, with a new state: the page reconnects, fetches the events again, renders it.
    stub.recentEvents.push({ seq: 4, kind: 'zone_level', ts: new Date().toISOString(), tsMs: Date.now(), zone: 'cold-aisle-a', level: 'normal', from: 'critical', message: 'cold-aisle-a: critical → normal' });
    stub.current = state('normal');
    stub.streamStatus = 200;
    await page.waitFor(`${connState} === 'live' && ${zoneLevel('cold-aisle-a')} === 'normal'`, 20_000, 'the page live again with the new state');
    await page.waitFor(`document.querySelector('#events li')?.getAttribute('data-seq') === '4'`, 10_000, 'the missed event 4 fetched after the reconnect');
    expect(stub.requests.filter((u) => u.startsWith('/api/events/stream')).length).toBeGreaterThan(refusedBefore);
    expect(await page.evaluate(`window.__sameDocument`)).toBe('still');
    expect(await page.evaluate(`[...document.querySelectorAll('#events li')].map((li) => li.getAttribute('data-seq'))`)).toEqual(['4', '3', '2', '1']);
  });

  it('is readable on a phone: no horizontal scroll of the page itself', async () => {
    await page.viewport(390, 844, 2, true);
    stub.pushState(state('alarm'));
    await page.waitFor(`${zoneLevel('cold-aisle-a')} === 'alarm'`, 10_000, 'zone alarm on the phone layout');
    const overflow = await page.evaluate<number>(`document.documentElement.scrollWidth - document.documentElement.clientWidth`);
    expect(overflow).toBeLessThanOrEqual(0);
    await page.screenshot(join(ARTIFACTS_DIR, 'status-page-phone.png'));
    expect(page.messages.filter((m) => m.kind === 'exception')).toEqual([]);
  });
});

describe('status page in Chromium, served by the real agent, with the simulator', () => {
  const MAIN = join(import.meta.dirname, '..', '..', 'dist', 'agent', 'main.js');
  const AGENT_TOKEN = 'page-e2e-token';

  it('a chiller trip turns the zone to alarm on the page without a reload', async () => {
    // Agent, simulator and pty per attempt: a retry never meets the chiller the failed attempt tripped.
    let tmp: TempDir | undefined;
    let pty: PtyPair | undefined;
    let sim: Simulator | undefined;
    let agent: SpawnedProcess | undefined;
    let url: string;
    try {
      tmp = await tempDir('rackguard-page-');
      pty = await startPtyPair();
      const tokenFile = join(tmp.path, 'token');
      writeFileSync(tokenFile, `${AGENT_TOKEN}\n`, { mode: 0o600 });
      // Short windows and dwell so the detector judges within seconds of the trip (defaults need minutes).
      const text = `version: 1
site: lab
gateway: gw-e2e
logging: { samples: false, healthIntervalS: 3600 }
buses:
  - id: rs485-a
    type: serial
    path: ${pty.a}
    devices:
      - { id: rack01, unitId: 1, profile: xy-md02, pollIntervalMs: 500 }
      - { id: rack02, unitId: 2, profile: xy-md02, pollIntervalMs: 500 }
      - { id: rack03, unitId: 3, profile: xy-md02, pollIntervalMs: 500 }
      - { id: chiller1, unitId: 10, profile: generic-chiller, pollIntervalMs: 500 }
zones:
  - { id: cold-aisle-a, sensors: [rack01.temperature, rack02.temperature, rack03.temperature] }
chillers:
  - { id: crac-1, running: chiller1.running, alarm: chiller1.alarm_code, supplyTemp: chiller1.supply_temp, returnTemp: chiller1.return_temp, zones: [cold-aisle-a] }
detection: { k: 2, shortWindowS: 10, longWindowS: 30, dwellS: 2, staleAfterS: 10 }
outputs:
  outbox: { path: ${join(tmp.path, 'outbox.db')} }
http: { port: 0, tokenFile: ${tokenFile} }
`;
      const file = join(tmp.path, 'agent.yaml');
      writeFileSync(file, text);
      const config = parseConfig(text, file);
      // No scheduled events: the test trips the chiller once the page shows the zone calm. No sensor
      // noise, so nothing but the trip can raise the level.
      const scenario = parseScenario('name: page-trip\nseed: 1\nroom: { itLoadKw: 100, initialRiseCPerMin: 5, noiseC: 0 }\nevents: []\n', 'inline', { config });
      sim = await startSimulator({ config, serialPath: pty.b, scenario });
      agent = await spawnAndWait(process.execPath, [MAIN, 'run', '--config', file], { readyLine: /status page and metrics on/, timeoutMs: 20_000 });
      url = (JSON.parse(agent.readyLine) as { url: string }).url;
      await page.viewport(1366, 900);
      await page.goto(`${url}?token=${encodeURIComponent(AGENT_TOKEN)}`);
      // Calm first: live, readings and a sparkline from the agent's history, the chiller running.
      await page.waitFor(
        `${connState} === 'live' && ['normal', 'warning'].includes(${zoneLevel('cold-aisle-a')})
          && document.querySelectorAll('[data-zone="cold-aisle-a"] svg.spark').length === 3
          && document.querySelector('[data-chiller="crac-1"] td:nth-child(2)')?.textContent === 'running'`,
        30_000,
        'the page live with three sparklines and the chiller running',
      );
      const calm = await page.evaluate<{ temps: number[]; device: string | undefined }>(`({
        temps: [...document.querySelectorAll('[data-zone="cold-aisle-a"] tbody tr td:nth-child(2)')].map((td) => Number(td.textContent)),
        device: document.querySelector('[data-device="rack01"] td:nth-child(3)')?.textContent,
      })`);
      for (const t of calm.temps) expect(t).toBeGreaterThan(10);
      expect(calm.device).toBe('online');
      await page.evaluate(`window.__sameDocument = 'e2e'`);

      sim.rack.applyEvent({ kind: 'chiller', action: 'trip' });
      await page.waitFor(`['alarm', 'critical'].includes(${zoneLevel('cold-aisle-a')})`, 90_000, 'zone cold-aisle-a alarm on the page after the trip');
      // The step to alarm came in as an event too (the zone may be critical a second later), with its colour.
      await page.waitFor(`document.querySelector('#events li[data-kind="zone_level"].level-alarm') !== null`, 10_000, 'the alarm event in the list');
      const after = await page.evaluate<Record<string, unknown>>(`({
        same: window.__sameDocument,
        shade: document.querySelector('[data-zone="cold-aisle-a"]').className,
        chiller: document.querySelector('[data-chiller="crac-1"] td:nth-child(2)').textContent,
        conn: document.getElementById('conn').textContent,
      })`);
      expect(after).toMatchObject({ same: 'e2e', chiller: 'stopped', conn: 'live' });
      expect(after.shade).toMatch(/level-(alarm|critical)/);
      await page.screenshot(join(ARTIFACTS_DIR, 'status-page-agent-alarm.png'));
      expect(page.messages.filter((m) => m.kind === 'exception')).toEqual([]);
    } finally {
      await agent?.stop('SIGTERM');
      await sim?.stop();
      await pty?.stop();
      await tmp?.cleanup();
    }
  }, 150_000);
});
