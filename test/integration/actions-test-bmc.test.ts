/**
 * `rackguard actions test` as a real process (dist/agent/main.js: `npm run build` first) against every
 * kind of host at once: a real host agent on a real mosquitto, a real IPMI BMC (OpenIPMI's ipmi_sim,
 * reached through Debian's ipmitool) and a Redfish BMC (test/fixtures/redfish-server.ts over real HTTP).
 * Each must confirm it would act, and NO power changes: ipmi_sim records no chassis "set", the Redfish
 * service receives no Reset and every session it created is deleted. A wrong BMC password fails that
 * host's row, naming the host, and the exit code is 1.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedfishServer, type RedfishServer } from '../fixtures/redfish-server.js';
import { freeUdpPort, startIpmiSim, type IpmiSim } from '../helpers/ipmi-sim.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { runCli, tableRows } from '../helpers/cli-run.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'agent', 'main.js');
const BASE = 'rg-actions-test-bmc';
const SESSIONS = '/redfish/v1/SessionService/Sessions';
const REDFISH_PASSWORD = 'redfish-pass';

let broker: Mosquitto;
let ipmi: IpmiSim;
let redfish: RedfishServer;
let tmp: TempDir;
let hostAgent: SpawnedProcess | undefined;

const markers = (): string => join(tmp.path, 'markers');
const file = (name: string): string => join(tmp.path, name);

/** A gateway config: group g1 = host agent web-01 (unless withAgent is false) and IPMI host node-i, group g2 = Redfish host node-r. */
function gatewayConfig(name: string, passwords: { ipmi: string; redfish: string }, opts: { hostSyncS?: number; ipmiPort?: number; withAgent?: boolean } = {}): string {
  const path = file(name);
  writeFileSync(
    path,
    `version: 1
site: s1
gateway: gw-1
buses:
  - { id: t, type: tcp, host: 127.0.0.1, devices: [{ id: r1, unitId: 1, profile: xy-md02 }, { id: r2, unitId: 2, profile: xy-md02 }] }
zones:
  - { id: z1, sensors: [r1.temperature, r2.temperature] }
outputs:
  outbox: { path: ${file(`${name}.outbox.db`)} }
  mqtt: { url: "${broker.url}" }
actions:
  hostsBaseTopic: ${BASE}
  stateDir: ${file('gateway-state')}
  policies:
    - { zones: [z1], level: critical, actions: [{ kind: shutdown }] }
  shutdown:
    hostSyncS: ${opts.hostSyncS ?? 20}
    groups:
      - name: g1
        hosts:
${opts.withAgent === false ? '' : `          - { via: agent, name: web-01, secretFile: ${file('web-01.secret')} }\n`}          - { via: ipmi, name: node-i, address: 127.0.0.1, port: ${opts.ipmiPort ?? ipmi.port}, usernameFile: ${file('ipmi.user')}, passwordFile: ${passwords.ipmi}, timeoutS: 30, allowForceOff: true }
      - name: g2
        hosts:
          - { via: redfish, name: node-r, url: "${redfish.url}", usernameFile: ${file('redfish.user')}, passwordFile: ${passwords.redfish}, timeoutS: 30, allowForceOff: true }
`,
  );
  return path;
}

/** Runs the CLI to its exit (asynchronously). */
const cli = (...args: string[]) => runCli(MAIN, tmp.path, ...args);
const rows = tableRows;

/** The table's line for `host`. */
const line = (stdout: string, host: string): string => stdout.split('\n').find((l) => new RegExp(`^g\\d\\s+${host}\\s`).test(l)) ?? `(no row for ${host})`;

/** ipmitool processes still running against 127.0.0.1:`port` (from /proc: real processes, any parent). */
function ipmitoolsFor(port: number): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone meanwhile
    }
    if (argv[0]?.endsWith('ipmitool') && argv.join(' ').includes(`-p ${port} `)) found.push(`${pid}: ${argv.join(' ')}`);
  }
  return found;
}

/** No power change on either BMC, and no shutdown command on the host agent. */
function expectNoPowerChange(): void {
  // ipmi_sim runs its chassis-control script with "set …" for soft (set shutdown 1) and off (set power 0).
  expect(ipmi.requests().filter((r) => / set /.test(r))).toEqual([]);
  expect(ipmi.power()).toBe('on');
  expect(redfish.requests.filter((r) => r.path.includes('ComputerSystem.Reset'))).toEqual([]);
  expect(redfish.resets()).toEqual([]);
  expect(redfish.powerState).toBe('On');
  // Every session the CLI created was deleted, and nothing else was left open.
  expect(redfish.sessions.size).toBe(0);
  expect(redfish.requests.filter((r) => r.method === 'DELETE' && r.path.startsWith(`${SESSIONS}/`)).length).toBe(redfish.sessionsCreated);
  expect(readdirSync(markers())).toEqual([]);
}

beforeAll(async () => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);
  tmp = await tempDir('rackguard-actions-test-bmc-');
  mkdirSync(markers());
  [broker, ipmi, redfish] = await Promise.all([startMosquitto(), startIpmiSim(), startRedfishServer({ users: { admin: REDFISH_PASSWORD } })]);
  writeFileSync(file('ipmi.user'), `${ipmi.username}\n`);
  writeFileSync(file('ipmi.pass'), `${ipmi.password}\n`, { mode: 0o600 });
  writeFileSync(file('redfish.user'), 'admin\n');
  writeFileSync(file('redfish.pass'), `${REDFISH_PASSWORD}\n`, { mode: 0o600 });
  writeFileSync(file('wrong.pass'), 'not-the-password-9f3\n', { mode: 0o600 });
  writeFileSync(file('web-01.secret'), `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  const shutdownScript = file('shutdown.sh');
  writeFileSync(shutdownScript, `#!/bin/sh\ntouch "${markers()}/shutdown-$RACKGUARD_HOST"\n`);
  chmodSync(shutdownScript, 0o755);
  writeFileSync(
    file('web-01.yaml'),
    `version: 1\nhost: web-01\nmqtt: { url: "${broker.url}", reconnectMs: 200 }\nbaseTopic: ${BASE}\nsecretFile: ${file('web-01.secret')}\nstateDir: ${file('web-01-state')}\ncommands: { shutdown: [${shutdownScript}] }\n`,
  );
  hostAgent = await spawnAndWait(process.execPath, [MAIN, 'host', '--config', file('web-01.yaml')], { readyLine: /host agent ready/, timeoutMs: 20_000, cwd: tmp.path });
}, 60_000);

afterAll(async () => {
  await hostAgent?.stop();
  await Promise.all([broker?.cleanup(), ipmi?.cleanup(), redfish?.close()]);
  await tmp?.cleanup();
});

describe('rackguard actions test against host agents and both BMC kinds', () => {
  it('the host agent, the IPMI BMC and the Redfish BMC all confirm: exit 0, a would-act row each, no power change', async () => {
    const ipmiBefore = ipmi.requests().length;
    const r = await cli('actions', 'test', '--config', gatewayConfig('ok.yaml', { ipmi: file('ipmi.pass'), redfish: file('redfish.pass') }));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^GROUP\s+HOST\s+VIA\s+STATUS\s+MS\s+MESSAGE$/m);
    expect(rows(r.stdout)).toEqual([
      ['g1', 'web-01', 'agent', 'would-act'],
      ['g1', 'node-i', 'ipmi', 'would-act'],
      ['g2', 'node-r', 'redfish', 'would-act'],
    ]);
    expect(line(r.stdout, 'node-i')).toMatch(/reachable, credentials valid, power is on; would send chassis power soft/);
    expect(line(r.stdout, 'node-r')).toMatch(/reachable, credentials valid, GracefulShutdown allowed, power is on; would send GracefulShutdown/);
    expect(r.stdout).toContain('3/3 host(s) confirmed');
    // Each BMC was really reached (a power-status query; a login with the right credentials)...
    expect(ipmi.requests().slice(ipmiBefore)).toEqual(['0x20 get power']);
    expect(redfish.sessionsCreated).toBeGreaterThanOrEqual(1);
    expect(redfish.requests.some((q) => q.method === 'GET' && q.path === '/redfish/v1/Systems/node1' && q.auth === 'session')).toBe(true);
    // ...and nothing was powered off or asked to.
    expectNoPowerChange();
    // No secret in the output.
    for (const secret of [ipmi.password, REDFISH_PASSWORD]) expect(r.stdout + r.stderr).not.toContain(secret);
  });

  it('a wrong BMC password fails that host\'s row with a clear message naming it: exit 1, still no power change', async () => {
    const sessionsBefore = redfish.sessionsCreated;
    const r = await cli('actions', 'test', '--config', gatewayConfig('wrong.yaml', { ipmi: file('wrong.pass'), redfish: file('wrong.pass') }));
    expect(r.code).toBe(1);
    expect(rows(r.stdout)).toEqual([
      ['g1', 'web-01', 'agent', 'would-act'],
      ['g1', 'node-i', 'ipmi', 'failed'],
      ['g2', 'node-r', 'redfish', 'failed'],
    ]);
    expect(line(r.stdout, 'node-i')).toMatch(new RegExp(`host node-i \\(ipmi 127\\.0\\.0\\.1:${ipmi.port}\\): ipmitool chassis power status failed .*(RAKP 2 HMAC is invalid|Unable to establish IPMI v2)`));
    expect(line(r.stdout, 'node-r')).toMatch(/host node-r \(redfish http:\/\/127\.0\.0\.1:\d+\): POST \/redfish\/v1\/SessionService\/Sessions: HTTP 401 \(credentials rejected\)/);
    expect(r.stdout).toContain('1/3 host(s) confirmed');
    expect(redfish.sessionsCreated).toBe(sessionsBefore); // the login was refused: no session to leak
    expectNoPowerChange();
    expect(r.stdout + r.stderr).not.toContain('not-the-password-9f3');
  });

  it('a Redfish BMC that stalls past hostSyncS: a timeout row, and the session it opened is still deleted before the CLI exits', async () => {
    const systemPath = '/redfish/v1/Systems/node1';
    const sessionsBefore = redfish.sessionsCreated;
    redfish.override = (q) => (q.method === 'GET' && q.path === systemPath ? 'hang' : undefined);
    try {
      // hostSyncS also bounds the BMC that answers: 5 s, wide enough for ipmitool's handshake on a loaded machine.
      const r = await cli('actions', 'test', '--config', gatewayConfig('stall.yaml', { ipmi: file('ipmi.pass'), redfish: file('redfish.pass') }, { hostSyncS: 5, withAgent: false }));
      expect(r.code).toBe(1);
      expect(rows(r.stdout)).toEqual([
        ['g1', 'node-i', 'ipmi', 'would-act'],
        ['g2', 'node-r', 'redfish', 'timeout'],
      ]);
      // The login happened before the stall: that session must not be left open on the BMC.
      expect(redfish.sessionsCreated).toBe(sessionsBefore + 1);
      expectNoPowerChange();
    } finally {
      delete redfish.override;
    }
  });

  it('an IPMI BMC that never answers: an unreachable row naming it within hostSyncS, and no ipmitool left running after the CLI exits', async () => {
    const silentPort = await freeUdpPort(); // nobody listens: ipmitool's own retries would last ~20 s
    const r = await cli('actions', 'test', '--config', gatewayConfig('silent.yaml', { ipmi: file('ipmi.pass'), redfish: file('redfish.pass') }, { hostSyncS: 5, ipmiPort: silentPort, withAgent: false }));
    expect(r.code).toBe(1);
    expect(rows(r.stdout)).toEqual([
      ['g1', 'node-i', 'ipmi', 'unreachable'],
      ['g2', 'node-r', 'redfish', 'would-act'],
    ]);
    expect(line(r.stdout, 'node-i')).toContain(`host node-i (ipmi 127.0.0.1:${silentPort}): no answer from the BMC within 5 s (ipmitool chassis power status killed)`);
    expect(ipmitoolsFor(silentPort)).toEqual([]);
    expectNoPowerChange();
  });
});
