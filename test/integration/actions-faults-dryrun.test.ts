/**
 * Dry run end to end on real parts: the engine (`rackguard run --dry-run`'s flag) with real exec
 * hooks, a real webhook receiver, a host agent on a real mosquitto, and an IPMI BMC (ipmi_sim through
 * Debian's ipmitool). A critical incident and its clearing: nothing is executed anywhere (no hook
 * runs, no webhook is posted, no host command runs, no IPMI power command is sent, the simulated
 * power stays on), and every record says what would have run.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { chmodSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostAgent } from '../../agent/actions/host-agent.js';
import { parseHostConfig } from '../../agent/config/host-schema.js';
import type { ActionEvent } from '../../agent/outputs/events.js';
import { pollUntil, rigConfig, rigEngine, zoneLevel } from '../helpers/actions-rig.js';
import { startIpmiSim, type IpmiSim } from '../helpers/ipmi-sim.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/wait.js';

const BASE = 'rg-dry';
let tmp: TempDir;
let broker: Mosquitto;
let ipmi: IpmiSim;
let web: Server;
const posts: string[] = [];
let host: HostAgent;
let attempts = 0;

const f = (name: string): string => join(tmp.path, name);
const markers = (): string => f('markers');

beforeAll(async () => {
  tmp = await tempDir('rackguard-faults-dryrun-');
  mkdirSync(markers());
  [broker, ipmi] = await Promise.all([startMosquitto(), startIpmiSim()]);
  web = createServer((req, res) => {
    posts.push(`${req.method} ${req.url}`);
    res.end('ok');
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  writeFileSync(f('ipmi.user'), `${ipmi.username}\n`);
  writeFileSync(f('ipmi.pass'), `${ipmi.password}\n`, { mode: 0o600 });
  writeFileSync(f('db-01.secret'), `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  for (const name of ['hook', 'host-shutdown']) {
    writeFileSync(f(`${name}.sh`), `#!/bin/sh\ntouch "${markers()}/${name}-$1"\n`);
    chmodSync(f(`${name}.sh`), 0o755);
  }
  const hostConfig = parseHostConfig(
    `version: 1\nhost: db-01\nmqtt: { url: "${broker.url}", reconnectMs: 200 }\nbaseTopic: ${BASE}\nsecretFile: ${f('db-01.secret')}\nstateDir: ${f('db-01-state')}\ncommands: { shutdown: ["${f('host-shutdown.sh')}", now] }\n`,
    f('host.yaml'),
    tmp.path,
  );
  const log = new EventEmitter();
  const lines: string[] = [];
  host = new HostAgent(hostConfig, { logger: pino({ level: 'info' }, { write: (l: string) => (lines.push(l), log.emit('line')) }) });
  await host.start();
  await waitFor(log, 'line', () => lines.some((l) => l.includes('host agent ready')), 10_000, 'the host agent subscribed');
}, 60_000);

afterAll(async () => {
  await host?.stop();
  await new Promise((r) => web?.close(r));
  await Promise.all([broker?.cleanup(), ipmi?.cleanup()]);
  await tmp?.cleanup();
});

describe('dry run on real parts', () => {
  it('a critical incident and its clearing: nothing runs anywhere, every action and step is recorded as what would run', async () => {
    const url = `http://127.0.0.1:${(web.address() as AddressInfo).port}/hook`;
    const hook = f('hook.sh');
    // Its own directory per attempt (incident state, outbox): a retry must not resume the failed attempt's incident.
    const dir = f(`attempt${++attempts}`);
    mkdirSync(dir);
    posts.length = 0;
    const config = rigConfig(
      dir,
      broker.url,
      `  stateDir: state
  hostsBaseTopic: ${BASE}
  policies:
    - level: alarm
      actions: [{ kind: exec, name: page, argv: ["${hook}", page] }, { kind: http, name: notify, url: "${url}", retries: 0 }]
      onClear: [{ kind: exec, name: unpage, argv: ["${hook}", unpage] }]
    - level: critical
      actions: [{ kind: shutdown }]
  shutdown:
    failover: [{ kind: exec, name: drain, argv: ["${hook}", drain] }]
    groups:
      - { name: storage, hosts: [{ via: agent, name: db-01, secretFile: ${f('db-01.secret')} }, { via: ipmi, name: bmc-01, address: 127.0.0.1, port: ${ipmi.port}, usernameFile: ${f('ipmi.user')}, passwordFile: ${f('ipmi.pass')}, allowForceOff: true, forceOffAfterS: 1 }] }
    final: [{ kind: exec, name: last-word, argv: ["${hook}", final] }]
    hostSyncS: 15
`,
    );
    const { engine, records } = rigEngine(config, { dryRun: true });
    const seen = (pred: (r: ActionEvent) => boolean, what: string): Promise<void> =>
      pollUntil(() => records.some(pred), what, () => records.map((r) => `${r.action}:${r.status}:${r.message}`).join('\n'), 30_000);
    try {
      await engine.start();
      engine.onDetection(zoneLevel('normal', 'alarm', false));
      engine.onDetection(zoneLevel('alarm', 'critical', true));
      await seen((r) => r.detail?.step === 'sequence' && r.status !== 'started', 'the dry-run sequence to end');
      engine.onDetection(zoneLevel('critical', 'normal', false));
      await seen((r) => r.action === 'unpage', 'the onClear hook record');

      // Nothing ran: no marker from a hook or the host's command, no POST, no IPMI power command, power on.
      expect(readdirSync(markers())).toEqual([]);
      expect(posts).toEqual([]);
      expect(ipmi.requests().filter((r) => / set /.test(r))).toEqual([]);
      expect(ipmi.power()).toBe('on');

      // Every action says what would have run.
      const byAction = (a: string) => records.filter((r) => r.action === a).map((r) => `${r.status}: ${r.message}`);
      expect(byAction('page')).toEqual([expect.stringMatching(new RegExp(`^dry-run: page would run now \\(dry run\\): exec "${hook}" "page"`))]);
      expect(byAction('notify')).toEqual([expect.stringMatching(/^dry-run: notify would run now \(dry run\): POST http:\/\/127\.0\.0\.1:\d+\/… \(alertmanager/)]);
      expect(byAction('unpage')).toEqual([expect.stringMatching(/^dry-run: unpage would run now/)]);
      const steps = records.filter((r) => r.action === 'shutdown').map((r) => `${r.status} ${String(r.detail?.step ?? r.detail?.kind)} ${String(r.detail?.host ?? r.detail?.hook ?? '')}`.trim());
      expect(steps).toEqual(expect.arrayContaining(['dry-run shutdown', 'dry-run failover drain', 'would-act host db-01', 'would-act host bmc-01', 'dry-run final last-word', 'succeeded sequence']));
      expect(records.filter((r) => r.status === 'started' && r.detail?.step === undefined && r.action !== 'shutdown')).toEqual([]);
    } finally {
      await engine.stop();
    }
  }, 60_000);
});
