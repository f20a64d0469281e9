/**
 * Issue 8, the full chain on accelerated simulator time: the real agent (createAgent, its action
 * engine and shutdown coordinator), the simulator on a socat pty tripping the chiller, a real
 * mosquitto, and three `rackguard host` processes (dist/agent/main.js: `npm run build` first) in two
 * groups. Expected order: the alarm hook, then (critical) the failover hook, which must end before
 * any host acts, then group 1's hosts, then group 2's; each host's local command writes a marker.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import { parseConfig } from '../../agent/config/load.js';
import type { DetectorEvent } from '../../agent/detection/types.js';
import { parseScenario, startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { silentLogger } from '../helpers/agent.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { writeScript } from '../helpers/cli-run.js';
import { labRackConfig } from '../helpers/two-racks.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'agent', 'main.js');
const HOSTS = ['batch-01', 'batch-02', 'store-01'] as const;

let tmp: TempDir;
let broker: Mosquitto;
let attempts = 0;

beforeAll(async () => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);
  tmp = await tempDir('rackguard-full-chain-');
  broker = await startMosquitto();
});

afterAll(async () => {
  await broker?.cleanup();
  await tmp?.cleanup();
});

describe('the full chain: chiller trip → alarm → failover → critical → host groups in order', () => {
  it('runs the alarm hook, then the failover, then group 1, then group 2, through real host agents', async () => {
    // Everything but the broker per attempt (its own directory, topics, pty, simulator, host agents and
    // gateway state), so that a retry never meets the previous attempt's port lock, markers, incident or seqs.
    const dir = join(tmp.path, `attempt${++attempts}`);
    const base = `rg-full-chain-${attempts}`;
    const markers = join(dir, 'markers');
    mkdirSync(markers, { recursive: true });
    const markerNs = (name: string): bigint => BigInt(readFileSync(join(markers, name), 'utf8').trim().split('\n')[0]!);
    const script = (name: string, body: string): string => writeScript(dir, name, body);
    let pty: PtyPair | undefined;
    let sim: Simulator | undefined;
    let agent: Agent | undefined;
    const hostAgents: SpawnedProcess[] = [];
    try {
      pty = await startPtyPair();
      script('alarm.sh', `date +%s%N > "${markers}/alarm"`);
      // The failover takes a moment on purpose: no host may act before it ends.
      script('failover.sh', `date +%s%N > "${markers}/failover-start"\nsleep 0.5\ndate +%s%N > "${markers}/failover-end"`);
      script('host-shutdown.sh', `date +%s%N > "${markers}/host-$RACKGUARD_HOST"`);
      for (const host of HOSTS) {
        writeFileSync(join(dir, `${host}.secret`), `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
        const file = join(dir, `${host}.yaml`);
        writeFileSync(
          file,
          `version: 1
host: ${host}
mqtt: { url: "${broker.url}", reconnectMs: 200 }
baseTopic: ${base}
secretFile: ${join(dir, `${host}.secret`)}
stateDir: ${join(dir, `${host}-state`)}
commands: { shutdown: [${join(dir, 'host-shutdown.sh')}] }
`,
        );
        hostAgents.push(await spawnAndWait(process.execPath, [MAIN, 'host', '--config', file], { readyLine: /host agent ready/, timeoutMs: 20_000, cwd: dir }));
      }
      const text = `${labRackConfig({ gateway: 'gw-chain', serialPath: pty.a, racks: 2, pollIntervalMs: 250, chiller: true, healthIntervalS: 600 })}zones:
  - { id: za, sensors: [r1.temperature, r2.temperature] }
chillers:
  - { id: ch1, running: chiller1.running, alarm: chiller1.alarm_code, supplyTemp: chiller1.supply_temp, returnTemp: chiller1.return_temp, zones: [za] }
detection: { k: 2, dwellS: 1, shortWindowS: 10, longWindowS: 30, clearDelayS: 2, hysteresisC: 0.5, staleAfterS: 10 }
outputs:
  outbox: { path: outbox.db }
  mqtt: { url: "${broker.url}", protocolVersion: 5 }
actions:
  stateDir: gateway-state
  hostsBaseTopic: ${base}
  policies:
    - level: alarm
      actions: [{ kind: exec, name: page, argv: [${join(dir, 'alarm.sh')}] }]
    - level: critical
      actions: [{ kind: shutdown }]
  shutdown:
    failover: [{ kind: exec, name: drain, argv: [${join(dir, 'failover.sh')}], timeoutS: 10 }]
    hostSyncS: 10
    groups:
      - { name: batch, hosts: [{ via: agent, name: batch-01, secretFile: batch-01.secret }, { via: agent, name: batch-02, secretFile: batch-02.secret }] }
      - { name: storage, hosts: [{ via: agent, name: store-01, secretFile: store-01.secret }] }
`;
      const file = join(dir, 'rackguard.yaml');
      writeFileSync(file, text);
      const config = parseConfig(text, file, { baseDir: dir });
      const room = 'room: { itLoadKw: 100, initialRiseCPerMin: 5, cyclingAmplitudeC: 0, sensorOffsetMaxC: 0, noiseC: 0.02, doorTimeConstantS: 2 }';
      sim = await startSimulator({ config, serialPath: pty.b, timeScale: 20, scenario: parseScenario(`name: trip\nseed: 1\n${room}\nevents:\n  - { at: 5, chiller: trip }\n`, 'inline', { config }) });
      agent = createAgent(config, { logger: silentLogger });
      const levels: string[] = [];
      agent.on('detection', (e: DetectorEvent) => {
        if (e.kind === 'zone_level') levels.push(e.level);
      });
      await agent.start();
      const have = (name: string): boolean => existsSync(join(markers, name));
      await expect
        .poll(() => HOSTS.every((h) => have(`host-${h}`)), { timeout: 150_000, interval: 200 })
        .toBe(true)
        .catch((err: unknown) => {
          throw new Error(`not every host acted: ${(err as Error).message}; levels ${levels.join(' → ')}; markers ${readdirSync(markers).join(', ')}`);
        });
      expect(levels).toContain('alarm');
      expect(levels).toContain('critical');
      // Alarm hook before the failover; the failover ended before any host acted; batch before storage.
      expect(markerNs('alarm') < markerNs('failover-start')).toBe(true);
      const batch = [markerNs('host-batch-01'), markerNs('host-batch-02')];
      for (const t of batch) expect(markerNs('failover-end') < t).toBe(true);
      for (const t of batch) expect(t < markerNs('host-store-01')).toBe(true);
    } finally {
      await agent?.stop();
      await sim?.stop();
      for (const h of hostAgents) await h.stop().catch(() => {});
      await pty?.stop().catch(() => {});
    }
  }, 200_000);
});
