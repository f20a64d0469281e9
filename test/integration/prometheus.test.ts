/**
 * A real Prometheus scrapes a real agent process (the built dist/agent/main.js), which polls the
 * simulator over a socat pty while a firmware-sim scenario makes one device answer with bad CRCs
 * and another not at all, then both normally again. Prometheus's query API must return the CRC errors and
 * timeouts the simulator caused, equal to the agent's own /api/state counters once they stop moving.
 */
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import type { StateJson } from '../../agent/observe/state.js';
import { parseScenario, startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { freePort } from '../helpers/ports.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const ROOT = join(import.meta.dirname, '..', '..');
/**
 * r2 answers with bad CRCs and r3 not at all from 0 s; both are healthy from 8 s. Two devices, not
 * one fault after the other on one: after a few failed reads the RTU line holds a unit's reads back
 * for up to LATE_REPLY_HORIZON_MS (60 s, late replies may still come), so a second fault on the same
 * unit would not reach the wire within the test. Once the faults end the counters stand still.
 */
const HEALTHY_AT_S = 8;
const SCENARIO = `name: crc-and-silent
events:
  - { at: 0, device: r2, fault: crc }
  - { at: 0, device: r3, fault: silent }
  - { at: ${HEALTHY_AT_S}, device: r2, fault: none }
  - { at: ${HEALTHY_AT_S}, device: r3, fault: none }
`;

let tmp: TempDir;
let pty: PtyPair;
let sim: Simulator;
let agent: SpawnedProcess | undefined;
let prometheus: SpawnedProcess | undefined;
let agentUrl: string;
let promUrl: string;

function configText(path: string): string {
  return `version: 1
site: lab
gateway: prom
logging: { samples: false }
buses:
  - id: l
    type: serial
    path: ${path}
    devices:
      - { id: r1, unitId: 1, profile: xy-md02, pollIntervalMs: 200, timeoutMs: 200, backoffMaxMs: 400 }
      - { id: r2, unitId: 2, profile: xy-md02, pollIntervalMs: 200, timeoutMs: 200, backoffMaxMs: 400 }
      - { id: r3, unitId: 3, profile: xy-md02, pollIntervalMs: 200, timeoutMs: 200, backoffMaxMs: 400 }
http: { port: 0 }
`;
}

async function promQuery(q: string): Promise<number | undefined> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
  expect(res.status).toBe(200);
  const body = (await res.json()) as { status: string; data: { result: Array<{ value: [number, string] }> } };
  expect(body.status).toBe('success');
  const v = body.data.result[0]?.value[1];
  return v === undefined ? undefined : Number(v);
}

async function agentCounters(device: string): Promise<StateJson['devices'][number]['counters']> {
  const state = (await (await fetch(`${agentUrl}api/state`)).json()) as StateJson;
  return state.devices.find((x) => x.id === device)!.counters;
}

beforeAll(async () => {
  // The binary under test is the built one: a stale dist/ would test old code.
  for (const f of ['observe/http-server', 'observe/metrics', 'app']) {
    if (statSync(join(ROOT, `dist/agent/${f}.js`)).mtimeMs < statSync(join(ROOT, `agent/${f}.ts`)).mtimeMs) {
      throw new Error(`dist/ is older than agent/${f}.ts: run \`npm run build\` first`);
    }
  }
  tmp = await tempDir('rackguard-prometheus-');
  pty = await startPtyPair({ dir: tmp.path });
  const file = join(tmp.path, 'rackguard.yaml');
  writeFileSync(file, configText(pty.a));
  const config = parseConfig(configText(pty.a), file);
  sim = await startSimulator({ config, serialPath: pty.b, scenario: parseScenario(SCENARIO, 'scenario', { config }) });
  agent = await spawnAndWait(process.execPath, [join(ROOT, 'dist/agent/main.js'), 'run', '--config', file], {
    readyLine: /status page and metrics on/,
    timeoutMs: 20_000,
  });
  agentUrl = (JSON.parse(agent.readyLine) as { url: string }).url;
  const promPort = await freePort();
  promUrl = `http://127.0.0.1:${promPort}`;
  const target = new URL(agentUrl).host;
  const promConfig = join(tmp.path, 'prometheus.yml');
  writeFileSync(
    promConfig,
    `global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: rackguard
    static_configs: [{ targets: ['${target}'] }]
`,
  );
  prometheus = await spawnAndWait(
    '/usr/bin/prometheus',
    [`--config.file=${promConfig}`, `--storage.tsdb.path=${join(tmp.path, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--storage.tsdb.retention.time=1h'],
    { readyLine: /Server is ready to receive web requests/, timeoutMs: 30_000 },
  );
}, 60_000);

afterAll(async () => {
  await prometheus?.stop();
  await agent?.stop();
  await sim?.stop();
  await pty?.stop();
  await tmp?.cleanup();
});

describe('Prometheus scraping the agent', () => {
  it('returns the injected CRC errors and timeouts, equal to the agent’s own counters once they settle', async () => {
    await until(async () => (await promQuery('up{job="rackguard"}')) === 1, 20_000, 'Prometheus scraping the agent (up == 1)');
    const crc = 'rackguard_device_crc_errors_total{job="rackguard",device="r2",bus="l"}';
    const timeouts = 'rackguard_device_timeouts_total{job="rackguard",device="r3",bus="l"}';
    // From HEALTHY_AT_S of scenario time on, the agent's counters stand still and the next scrape
    // carries their final values.
    let last = '';
    const settled = await until(
      async () => {
        const [r2, r3] = [await agentCounters('r2'), await agentCounters('r3')];
        const [c, t] = [await promQuery(crc), await promQuery(timeouts)];
        last = `agent: r2 crc ${r2.crcErrors}, r3 timeouts ${r3.timeouts}; prometheus: ${c}, ${t}; simulator at ${sim.rack.simTimeS().toFixed(1)} s`;
        return r2.crcErrors > 0 && r3.timeouts > 0 && c === r2.crcErrors && t === r3.timeouts && sim.rack.simTimeS() > HEALTHY_AT_S ? { c, t } : undefined;
      },
      30_000,
      'Prometheus to show the agent’s final CRC error and timeout counts',
    ).catch((err: Error) => {
      throw new Error(`${err.message}; last: ${last}`);
    });
    expect(settled.c).toBeGreaterThan(0);
    expect(settled.t).toBeGreaterThan(0);
    // The simulator's own tally bounds them (a corrupted reply may also be judged a bad frame).
    const simCounters = sim.rack.counters();
    expect(settled.c).toBeLessThanOrEqual(simCounters.r2!.crc);
    expect(settled.t).toBeLessThanOrEqual(simCounters.r3!.silent);
    // The healthy device: no errors, and the latency histogram has its observations.
    expect(await promQuery(`rackguard_device_crc_errors_total{device="r1"}`)).toBe(0);
    expect(await promQuery(`rackguard_device_latency_seconds_count{device="r1"}`)).toBeGreaterThan(0);
    expect(await promQuery('rackguard_ready')).toBe(1);
  });
});
