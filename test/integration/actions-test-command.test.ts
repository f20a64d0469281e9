/**
 * `rackguard actions test` as a real process (dist/agent/main.js: `npm run build` first) against real
 * host agents on a real mosquitto: each host is asked to confirm it would act, nothing is shut down
 * (no shutdown marker appears), no failover hook runs, a host's harmless test check runs and its
 * failure counts, a host that is not running shows as a timeout, and the exit code says it all.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { runCli, tableRows, writeScript } from '../helpers/cli-run.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'agent', 'main.js');
const BASE = 'rg-actions-test';

let broker: Mosquitto;
let tmp: TempDir;
const hosts: SpawnedProcess[] = [];

const markers = (): string => join(tmp.path, 'markers');
const secretFile = (host: string): string => join(tmp.path, `${host}.secret`);

const script = (name: string, body: string): string => writeScript(tmp.path, name, body);

/**
 * A gateway config whose shutdown sequence names `groups` (host names; all via host agent). hostSyncS
 * bounds the answering hosts too (their test check runs within it): 6 s, so that a loaded machine's
 * host agents answer in time; the host that is not running times out at it.
 */
function gatewayConfig(name: string, groups: string[][]): string {
  const file = join(tmp.path, name);
  const groupYaml = groups.map((hs, i) => `      - name: g${i + 1}\n        hosts:\n${hs.map((h) => `          - { via: agent, name: ${h}, secretFile: ${secretFile(h)} }`).join('\n')}`).join('\n');
  writeFileSync(
    file,
    `version: 1
site: s1
gateway: gw-1
buses:
  - { id: t, type: tcp, host: 127.0.0.1, devices: [{ id: r1, unitId: 1, profile: xy-md02 }, { id: r2, unitId: 2, profile: xy-md02 }] }
zones:
  - { id: z1, sensors: [r1.temperature, r2.temperature] }
  - { id: z2, sensors: [r1.temperature, r2.temperature] }
outputs:
  outbox: { path: ${join(tmp.path, `${name}.outbox.db`)} }
  mqtt: { url: "${broker.url}" }
actions:
  hostsBaseTopic: ${BASE}
  stateDir: ${join(tmp.path, 'gateway-state')}
  policies:
    - { zones: [z1], level: critical, actions: [{ kind: shutdown }] }
    - { zones: [z2], level: alarm, actions: [{ kind: exec, name: page, argv: [${join(tmp.path, 'failover.sh')}] }] }
  shutdown:
    failover: [{ kind: exec, name: drain, argv: [${join(tmp.path, 'failover.sh')}] }]
    final: [{ kind: exec, name: notify, argv: [${join(tmp.path, 'failover.sh')}] }]
    hostSyncS: 6
    groups:
${groupYaml}
`,
  );
  return file;
}

/** Runs the CLI to its exit (asynchronously). */
const cli = (...args: string[]) => runCli(MAIN, tmp.path, ...args);
const rows = tableRows;

beforeAll(async () => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);
  broker = await startMosquitto();
  tmp = await tempDir('rackguard-actions-test-');
  mkdirSync(markers());
  const m = markers();
  script('failover.sh', `touch "${m}/hook-ran"`);
  const shutdown = script('shutdown.sh', `touch "${m}/shutdown-$RACKGUARD_HOST"`);
  const check = script('check.sh', `echo "$RACKGUARD_ACTION $RACKGUARD_DRY_RUN" > "${m}/check-$RACKGUARD_HOST"`);
  const hostDefs: Array<[string, string, string[]]> = [
    ['web-01', `commands: { shutdown: [${shutdown}], test: [${check}] }`, []],
    // A host agent that is itself in dry-run mode confirms too.
    ['web-02', `commands: { shutdown: [${shutdown}] }`, ['--dry-run']],
    ['db-01', `commands: { shutdown: [${shutdown}], test: [/bin/false] }`, []],
  ];
  for (const h of [...hostDefs.map((d) => d[0]), 'ghost-01']) writeFileSync(secretFile(h), `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const started = hostDefs.map(([host, commands, extra]) => {
    const file = join(tmp.path, `${host}.yaml`);
    writeFileSync(file, `version: 1\nhost: ${host}\nmqtt: { url: "${broker.url}", reconnectMs: 200 }\nbaseTopic: ${BASE}\nsecretFile: ${secretFile(host)}\nstateDir: ${join(tmp.path, `${host}-state`)}\n${commands}\n`);
    return spawnAndWait(process.execPath, [MAIN, 'host', '--config', file, ...extra], { readyLine: /host agent ready/, timeoutMs: 20_000, cwd: tmp.path });
  });
  hosts.push(...(await Promise.all(started)));
});

afterAll(async () => {
  await Promise.all(hosts.map((h) => h.stop()));
  await broker?.cleanup();
  await tmp?.cleanup();
});

describe('rackguard actions test', () => {
  it('every host confirms it would act: exit 0, a table, hooks listed but not run, nothing shut down', async () => {
    const r = await cli('actions', 'test', '--config', gatewayConfig('ok.yaml', [['web-01', 'web-02']]), '--zone', 'z1');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^GROUP\s+HOST\s+VIA\s+STATUS\s+MS\s+MESSAGE$/m);
    expect(rows(r.stdout)).toEqual([
      ['g1', 'web-01', 'agent', 'would-act'],
      ['g1', 'web-02', 'agent', 'would-act'],
    ]);
    expect(r.stdout).toContain('test check passed');
    expect(r.stdout).toContain('failover (listed, not run): drain');
    expect(r.stdout).toContain('final (listed, not run): notify');
    expect(r.stdout).toContain('2/2 host(s) confirmed');
    // web-01's harmless check ran, in dry-run mode; no shutdown command and no hook ran anywhere.
    expect(readFileSync(join(markers(), 'check-web-01'), 'utf8')).toBe('test 1\n');
    expect(readdirSync(markers()).filter((f) => f.startsWith('shutdown-') || f === 'hook-ran')).toEqual([]);
  });

  it('a failing test check and a host that is not running: exit 1, each with its status', async () => {
    const r = await cli('actions', 'test', '--config', gatewayConfig('bad.yaml', [['web-01'], ['db-01', 'ghost-01']]));
    expect(r.code).toBe(1);
    expect(rows(r.stdout)).toEqual([
      ['g1', 'web-01', 'agent', 'would-act'],
      ['g2', 'db-01', 'agent', 'failed'],
      ['g2', 'ghost-01', 'agent', 'timeout'],
    ]);
    expect(r.stdout).toMatch(/db-01 .*test check: .*exit-code/);
    expect(r.stdout).toContain('1/3 host(s) confirmed');
    expect(readdirSync(markers()).filter((f) => f.startsWith('shutdown-') || f === 'hook-ran')).toEqual([]);
  });

  it('a zone whose policies hold no shutdown asks nobody; an unknown zone is a usage error', async () => {
    const file = gatewayConfig('zones.yaml', [['web-01']]);
    const z2 = await cli('actions', 'test', '--config', file, '--zone', 'z2');
    expect(z2.code).toBe(0);
    expect(z2.stdout).toContain('page (exec');
    expect(z2.stdout).toContain('no shutdown sequence in the policies of zone z2');
    const nope = await cli('actions', 'test', '--config', file, '--zone', 'nope');
    expect(nope.code).toBe(2);
    expect(nope.stderr).toContain('unknown zone "nope"; configured zones: z1, z2');
  });
});
