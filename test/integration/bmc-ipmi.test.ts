/**
 * The IPMI BMC transport against a real BMC: OpenIPMI's ipmi_sim on a loopback UDP port, driven by
 * Debian's ipmitool exactly as in production. The simulator's chassis-control script records every
 * request and simulates the power (scripts/lib/ipmi-sim.ts).
 */
import { chmodSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createIpmiTransport } from '../../agent/actions/bmc-ipmi.js';
import type { ActionContext, HostOutcome } from '../../agent/actions/types.js';
import { systemClock } from '../../agent/clock.js';
import { ipmiHostSchema, type IpmiHostDef } from '../../agent/config/actions-schema.js';
import { silentLogger } from '../helpers/agent.js';
import { freeUdpPort, startIpmiSim, type IpmiSim } from '../helpers/ipmi-sim.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { withTimeout } from '../helpers/wait.js';

let sim: IpmiSim;
let tmp: TempDir;

const deps = () => ({ logger: silentLogger, clock: systemClock, gateway: 'gw-test', stateDir: tmp.path, hostsBaseTopic: 'rg' });
const ctx = (over: Partial<ActionContext> = {}): ActionContext => ({ incident: 'inc-ipmi', zone: 'z1', level: 'critical', etaS: 120, reason: 'test', ts: Date.now(), dryRun: false, ...over });

function host(over: Partial<Record<keyof IpmiHostDef, unknown>> = {}): IpmiHostDef {
  return ipmiHostSchema.parse({
    via: 'ipmi',
    name: 'node-a',
    address: '127.0.0.1',
    port: sim.port,
    usernameFile: join(tmp.path, 'user'),
    passwordFile: join(tmp.path, 'pass'),
    timeoutS: 10,
    forceOffAfterS: 30,
    ...over,
  });
}

/** Runs shutdown and returns the immediate outcome and a promise of the later one. */
async function shutdown(h: IpmiHostDef, opts: { test?: boolean; ipmitoolPath?: string; dryRun?: boolean } = {}) {
  let later!: (o: HostOutcome) => void;
  const laterP = new Promise<HostOutcome>((r) => (later = r));
  const t = createIpmiTransport(deps(), { pollIntervalMs: 100, ...(opts.ipmitoolPath ? { ipmitoolPath: opts.ipmitoolPath } : {}) });
  const ac = new AbortController();
  const now = await t.shutdown(h, ctx({ dryRun: opts.dryRun ?? false }), { test: opts.test ?? false, ackTimeoutMs: 20_000, signal: ac.signal, onLater: later });
  return { now, later: laterP, abort: () => ac.abort() };
}

const sets = (): string[] => sim.requests().filter((r) => r.includes(' set '));

beforeAll(async () => {
  tmp = await tempDir('rackguard-bmc-ipmi-');
  sim = await startIpmiSim();
  writeFileSync(join(tmp.path, 'user'), `${sim.username}\n`);
  writeFileSync(join(tmp.path, 'pass'), `  ${sim.password}  \nsecond line ignored\n`, { mode: 0o600 });
  writeFileSync(join(tmp.path, 'wrong-pass'), 'not-the-password\n', { mode: 0o600 });
}, 30_000);

afterAll(async () => {
  await sim?.cleanup();
  await tmp?.cleanup();
});

beforeEach(() => {
  sim.setPower('on');
  sim.setHonourSoft(true);
});

describe('IPMI transport (ipmitool against ipmi_sim)', () => {
  it('sends chassis power soft, acknowledges, and polls the power state until off', async () => {
    const before = sim.requests().length;
    const r = await shutdown(host());
    expect(r.now).toMatchObject({ host: 'node-a', status: 'acknowledged' });
    expect(sim.requests().slice(before)).toContain('0x20 set shutdown 1');
    const later = await withTimeout(r.later, 15_000, 'the powered-off report');
    expect(later).toMatchObject({ host: 'node-a', status: 'powered-off', detail: { forced: false } });
    expect(sim.power()).toBe('off');
    // the status polls reached the BMC, and no hard off was sent
    expect(sim.requests().slice(before)).toContain('0x20 get power');
    expect(sim.requests().slice(before)).not.toContain('0x20 set power 0');
  });

  it('puts the password only in IPMI_PASSWORD, never in argv (/proc/<pid>/cmdline)', async () => {
    // A wrapper that records its own /proc/<pid>/cmdline (exactly the argv the transport spawned) and
    // whether IPMI_PASSWORD holds the password, then execs the real ipmitool with the same argv.
    const wrapper = join(tmp.path, 'ipmitool-wrapper.sh');
    writeFileSync(
      wrapper,
      `#!/bin/sh\ntr '\\000' '\\n' < /proc/$$/cmdline > ${tmp.path}/argv.$$\nif [ "$IPMI_PASSWORD" = '${sim.password}' ]; then echo yes; else echo no; fi > ${tmp.path}/env.$$\nexec /usr/bin/ipmitool "$@"\n`,
    );
    chmodSync(wrapper, 0o755);
    const r = await shutdown(host(), { ipmitoolPath: wrapper });
    expect(r.now.status).toBe('acknowledged');
    await withTimeout(r.later, 15_000, 'the powered-off report');
    const argvFiles = readdirSync(tmp.path).filter((f) => f.startsWith('argv.'));
    expect(argvFiles.length).toBeGreaterThanOrEqual(2); // soft + at least one status poll
    for (const f of argvFiles) {
      const argv = readFileSync(join(tmp.path, f), 'utf8');
      expect(argv).toContain('-E');
      expect(argv).toContain(`-U\n${sim.username}\n`);
      expect(argv).not.toContain(sim.password);
      expect(readFileSync(join(tmp.path, f.replace('argv.', 'env.')), 'utf8').trim()).toBe('yes');
    }
    const all = argvFiles.map((f) => readFileSync(join(tmp.path, f), 'utf8')).join('');
    expect(all).toContain('chassis\npower\nsoft\n');
  });

  it('reports a wrong password as a clear failure naming the host and the ipmitool error, not a hang', async () => {
    const before = sim.requests().length;
    const r = await shutdown(host({ passwordFile: join(tmp.path, 'wrong-pass'), timeoutS: 30 }));
    expect(r.now.status).toBe('failed');
    expect(r.now.message).toContain('node-a');
    expect(r.now.message).toMatch(/RAKP 2 HMAC is invalid|Unable to establish IPMI v2/);
    // ipmitool gave up by itself (exit 1), the 30 s deadline did not have to kill it
    expect(r.now.detail).toMatchObject({ exitCode: 1, command: 'soft' });
    expect(sim.requests().slice(before)).toEqual([]);
    expect(sim.power()).toBe('on');
  });

  it('test mode and dry run only query the power status: would-act, nothing changes', async () => {
    const before = sim.requests().length;
    const t = await shutdown(host(), { test: true });
    expect(t.now).toMatchObject({ status: 'would-act', detail: { powerState: 'on' } });
    expect(t.now.message).toMatch(/reachable, credentials valid/);
    const d = await shutdown(host(), { dryRun: true });
    expect(d.now.status).toBe('would-act');
    expect(sim.requests().slice(before)).toEqual(['0x20 get power', '0x20 get power']);
    expect(sim.power()).toBe('on');
  });

  it('test mode with a wrong password fails (credentials are really checked)', async () => {
    const t = await shutdown(host({ passwordFile: join(tmp.path, 'wrong-pass') }), { test: true });
    expect(t.now.status).toBe('failed');
    expect(t.now.message).toContain('node-a');
  });

  it('kills ipmitool at timeoutS when the BMC never answers: unreachable', async () => {
    const silentPort = await freeUdpPort();
    const r = await shutdown(host({ port: silentPort, timeoutS: 0.5 }));
    expect(r.now.status).toBe('unreachable');
    expect(r.now.message).toContain(`node-a (ipmi 127.0.0.1:${silentPort})`);
    expect(r.now.message).toMatch(/no answer from the BMC within 0.5 s/);
  });

  it('does not send chassis power off after forceOffAfterS unless allowForceOff', async () => {
    sim.setHonourSoft(false);
    const before = sim.requests().length;
    const r = await shutdown(host({ forceOffAfterS: 0.5, allowForceOff: false }));
    expect(r.now.status).toBe('acknowledged');
    const later = await withTimeout(r.later, 15_000, 'the still-on report');
    expect(later.status).toBe('failed');
    expect(later.message).toMatch(/node-a.*power still on.*chassis power off not sent \(allowForceOff is false\)/);
    expect(later.detail).toMatchObject({ forceOffSent: false });
    expect(sets().length).toBeGreaterThan(0);
    expect(sim.requests().slice(before)).not.toContain('0x20 set power 0');
    expect(sim.power()).toBe('on');
  });

  it('sends chassis power off after forceOffAfterS when allowForceOff, and reports it as forced', async () => {
    sim.setHonourSoft(false);
    const before = sim.requests().length;
    const r = await shutdown(host({ forceOffAfterS: 0.5, allowForceOff: true }));
    const later = await withTimeout(r.later, 15_000, 'the forced-off report');
    expect(later).toMatchObject({ status: 'powered-off', detail: { forced: true, forceOffSent: true } });
    const mine = sim.requests().slice(before);
    expect(mine.indexOf('0x20 set power 0')).toBeGreaterThan(mine.indexOf('0x20 set shutdown 1'));
    expect(sim.power()).toBe('off');
  });

  it('a missing password file is a failure naming the host and the file', async () => {
    const r = await shutdown(host({ passwordFile: join(tmp.path, 'no-such-file') }));
    expect(r.now.status).toBe('failed');
    expect(r.now.message).toContain('node-a');
    expect(r.now.message).toContain(join(tmp.path, 'no-such-file'));
  });
});
