/**
 * The Redfish BMC transport against a small Redfish service (test/fixtures/redfish-server.ts) over
 * real HTTP on loopback: sessions are always deleted (errors included), 401/404/501 and timeouts are
 * clear outcomes, GracefulShutdown must be allowed, ForceOff goes out only when the host allows it.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { createRedfishTransport } from '../../agent/actions/bmc-redfish.js';
import type { ActionContext, HostOutcome } from '../../agent/actions/types.js';
import { systemClock } from '../../agent/clock.js';
import { redfishHostSchema, type RedfishHostDef } from '../../agent/config/actions-schema.js';
import { startRedfishServer, type RedfishServer, type RedfishServerOptions } from '../fixtures/redfish-server.js';
import { silentLogger } from '../helpers/agent.js';
import { freePort } from '../helpers/ports.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';
import { withTimeout } from '../helpers/wait.js';

let tmp: TempDir;
let bmc: RedfishServer | undefined;
const SESSIONS = '/redfish/v1/SessionService/Sessions';
const RESET = '/redfish/v1/Systems/node1/Actions/ComputerSystem.Reset';

const deps = () => ({ logger: silentLogger, clock: systemClock, gateway: 'gw-test', stateDir: tmp.path, hostsBaseTopic: 'rg' });
const ctx = (over: Partial<ActionContext> = {}): ActionContext => ({ incident: 'inc-rf', zone: 'z1', level: 'critical', etaS: 60, reason: 'test', ts: Date.now(), dryRun: false, ...over });

async function server(opts: RedfishServerOptions = {}): Promise<RedfishServer> {
  bmc = await startRedfishServer(opts);
  return bmc;
}

function host(url: string, over: Partial<Record<keyof RedfishHostDef, unknown>> = {}): RedfishHostDef {
  return redfishHostSchema.parse({ via: 'redfish', name: 'node-r', url, usernameFile: join(tmp.path, 'user'), passwordFile: join(tmp.path, 'pass'), timeoutS: 5, forceOffAfterS: 30, ...over });
}

async function shutdown(h: RedfishHostDef, opts: { test?: boolean; dryRun?: boolean } = {}) {
  let later!: (o: HostOutcome) => void;
  const laterP = new Promise<HostOutcome>((r) => (later = r));
  const t = createRedfishTransport(deps(), { pollIntervalMs: 50 });
  const now = await t.shutdown(h, ctx({ dryRun: opts.dryRun ?? false }), { test: opts.test ?? false, ackTimeoutMs: 20_000, signal: new AbortController().signal, onLater: later });
  return { now, later: laterP };
}

/** Every session the transport opened was deleted: as many DELETEs as creations, none left. */
function expectSessionsDeleted(s: RedfishServer): void {
  expect(s.sessions.size).toBe(0);
  expect(s.requests.filter((r) => r.method === 'DELETE' && r.path.startsWith(`${SESSIONS}/`)).length).toBe(s.sessionsCreated);
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-bmc-redfish-');
  writeFileSync(join(tmp.path, 'user'), 'admin\n');
  writeFileSync(join(tmp.path, 'pass'), 'redfish-pass\n', { mode: 0o600 });
  writeFileSync(join(tmp.path, 'wrong'), 'guess\n', { mode: 0o600 });
});
afterAll(async () => tmp?.cleanup());
afterEach(async () => {
  await bmc?.close();
  bmc = undefined;
});

describe('Redfish transport', () => {
  it('session auth: GracefulShutdown acknowledged, PowerState polled to Off, every session deleted', async () => {
    const s = await server();
    const r = await shutdown(host(s.url));
    expect(r.now).toMatchObject({ host: 'node-r', status: 'acknowledged', detail: { system: '/redfish/v1/Systems/node1' } });
    expect(s.resets()).toEqual(['GracefulShutdown']);
    const later = await withTimeout(r.later, 10_000, 'the powered-off report');
    expect(later).toMatchObject({ status: 'powered-off', detail: { forced: false } });
    expect(s.sessionsCreated).toBeGreaterThanOrEqual(1);
    expectSessionsDeleted(s);
    // everything but the service root and the login went with the session token
    const authed = s.requests.filter((q) => !(q.method === 'GET' && q.path === '/redfish/v1') && !(q.method === 'POST' && q.path === SESSIONS));
    expect(authed.every((q) => q.auth === 'session')).toBe(true);
    expect(s.requests.find((q) => q.method === 'POST' && q.path === SESSIONS)?.body).toEqual({ UserName: 'admin', Password: 'redfish-pass' });
  });

  it('basic auth: no session is created, the reset goes out with basic credentials', async () => {
    const s = await server();
    const r = await shutdown(host(s.url, { auth: 'basic' }));
    expect(r.now.status).toBe('acknowledged');
    await withTimeout(r.later, 10_000, 'the powered-off report');
    expect(s.sessionsCreated).toBe(0);
    expect(s.requests.find((q) => q.method === 'POST' && q.path === RESET)?.auth).toBe('basic');
  });

  it('a wrong password is a clear 401 failure naming the host (session and basic)', async () => {
    const s = await server();
    const a = await shutdown(host(s.url, { passwordFile: join(tmp.path, 'wrong') }));
    expect(a.now.status).toBe('failed');
    expect(a.now.message).toMatch(/host node-r \(redfish http:\/\/127\.0\.0\.1:\d+\): POST \/redfish\/v1\/SessionService\/Sessions: HTTP 401 \(credentials rejected\)/);
    expect(a.now.detail).toMatchObject({ httpStatus: 401 });
    const b = await shutdown(host(s.url, { passwordFile: join(tmp.path, 'wrong'), auth: 'basic' }));
    expect(b.now.status).toBe('failed');
    expect(b.now.message).toMatch(/GET \/redfish\/v1\/Systems: HTTP 401/);
    expect(s.resets()).toEqual([]);
    expect(s.powerState).toBe('On');
  });

  it('a 404 is a clear failure, and the session is still deleted', async () => {
    const s = await server();
    s.override = (q) => (q.method === 'GET' && q.path === '/redfish/v1/Systems/node1' ? { status: 404 } : undefined);
    const r = await shutdown(host(s.url));
    expect(r.now.status).toBe('failed');
    expect(r.now.message).toMatch(/GET \/redfish\/v1\/Systems\/node1: HTTP 404 \(not found\)/);
    expect(s.sessionsCreated).toBe(1);
    expectSessionsDeleted(s);
  });

  it('a 501 on the Reset action is a clear failure, and the session is still deleted', async () => {
    const s = await server();
    s.override = (q) => (q.method === 'POST' && q.path === RESET ? { status: 501 } : undefined);
    const r = await shutdown(host(s.url));
    expect(r.now.status).toBe('failed');
    expect(r.now.message).toMatch(/POST .*ComputerSystem\.Reset: HTTP 501 \(not implemented by this BMC\)/);
    expect(s.sessionsCreated).toBe(1);
    expectSessionsDeleted(s);
    expect(s.powerState).toBe('On');
  });

  it('a BMC that stops answering is a timeout at timeoutS, and the session is still deleted', async () => {
    const s = await server();
    s.override = (q) => (q.method === 'GET' && q.path === '/redfish/v1/Systems/node1' ? 'hang' : undefined);
    // timeoutS bounds every request, the session login too: wide enough that a loaded machine never
    // makes one of the answered requests miss it.
    const r = await shutdown(host(s.url, { timeoutS: 2 }));
    expect(r.now.status).toBe('timeout');
    expect(r.now.message).toMatch(/node-r.*no answer to GET \/redfish\/v1\/Systems\/node1 within 2 s/);
    expectSessionsDeleted(s);
  });

  it('a BMC that stalls in the middle of an answer is a timeout too, and the session is still deleted', async () => {
    const s = await server();
    s.override = (q) => (q.method === 'GET' && q.path === '/redfish/v1/Systems/node1' ? 'stall' : undefined);
    const r = await shutdown(host(s.url, { timeoutS: 2 }));
    expect(r.now.status).toBe('timeout');
    expect(r.now.message).toMatch(/no answer to GET \/redfish\/v1\/Systems\/node1 within 2 s/);
    expect(s.sessionsCreated).toBe(1);
    expectSessionsDeleted(s);
  });

  it('a BMC that closes the connection in the middle of an answer is a clear failure at once', async () => {
    const s = await server();
    s.override = (q) => (q.method === 'GET' && q.path === '/redfish/v1/Systems/node1' ? 'cut' : undefined);
    const r = await shutdown(host(s.url, { timeoutS: 30 }));
    expect(r.now.status).toBe('failed');
    expect(r.now.message).toMatch(/node-r.*GET \/redfish\/v1\/Systems\/node1: the connection closed in the middle of the answer/);
    expectSessionsDeleted(s);
  });

  it('a BMC that is not there is unreachable', async () => {
    const port = await freePort();
    const r = await shutdown(host(`http://127.0.0.1:${port}`));
    expect(r.now.status).toBe('unreachable');
    expect(r.now.message).toMatch(/node-r.*GET \/redfish\/v1: ECONNREFUSED/);
  });

  it('GracefulShutdown missing from ResetType@Redfish.AllowableValues: failed with the list, nothing posted', async () => {
    const s = await server({ allowable: ['On', 'ForceOff', 'ForceRestart'] });
    const r = await shutdown(host(s.url));
    expect(r.now.status).toBe('failed');
    expect(r.now.message).toContain('GracefulShutdown is not allowed by the BMC (ResetType@Redfish.AllowableValues: On, ForceOff, ForceRestart)');
    expect(s.resets()).toEqual([]);
    expectSessionsDeleted(s);
  });

  it('an OS that ignores GracefulShutdown: no ForceOff unless allowForceOff', async () => {
    const s = await server({ honourGraceful: false });
    const r = await shutdown(host(s.url, { forceOffAfterS: 0.3, allowForceOff: false }));
    expect(r.now.status).toBe('acknowledged');
    const later = await withTimeout(r.later, 10_000, 'the still-on report');
    expect(later.status).toBe('failed');
    expect(later.message).toMatch(/node-r: power still on .*ForceOff not sent \(allowForceOff is false\)/);
    expect(s.resets()).toEqual(['GracefulShutdown']);
    expect(s.powerState).toBe('On');
    expectSessionsDeleted(s);
  });

  it('an OS that ignores GracefulShutdown: ForceOff after forceOffAfterS when allowed', async () => {
    const s = await server({ honourGraceful: false });
    const r = await shutdown(host(s.url, { forceOffAfterS: 0.3, allowForceOff: true }));
    const later = await withTimeout(r.later, 10_000, 'the forced-off report');
    expect(later).toMatchObject({ status: 'powered-off', detail: { forced: true, forceOffSent: true } });
    expect(s.resets()).toEqual(['GracefulShutdown', 'ForceOff']);
    expect(s.powerState).toBe('Off');
    expectSessionsDeleted(s);
  });

  it('test mode and dry run: would-act after a real login, no reset posted, session deleted', async () => {
    const s = await server();
    const t = await shutdown(host(s.url), { test: true });
    expect(t.now).toMatchObject({ status: 'would-act', detail: { powerState: 'on' } });
    expect(t.now.message).toMatch(/reachable, credentials valid, GracefulShutdown allowed/);
    const d = await shutdown(host(s.url), { dryRun: true });
    expect(d.now.status).toBe('would-act');
    expect(s.resets()).toEqual([]);
    expect(s.powerState).toBe('On');
    expect(s.sessionsCreated).toBe(2);
    expectSessionsDeleted(s);
    const bad = await shutdown(host(s.url, { passwordFile: join(tmp.path, 'wrong') }), { test: true });
    expect(bad.now.status).toBe('failed');
  });

  it('https: a self-signed BMC certificate is refused without `ca`, and works with it', async () => {
    // A self-signed certificate for 127.0.0.1, as BMCs ship them.
    execFileSync('/usr/bin/openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(tmp.path, 'bmc.key'), '-out', join(tmp.path, 'bmc.pem'), '-days', '1', '-subj', '/CN=bmc', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const s = await server({ tls: { key: readFileSync(join(tmp.path, 'bmc.key'), 'utf8'), cert: readFileSync(join(tmp.path, 'bmc.pem'), 'utf8') } });
    const refused = await shutdown(host(s.url), { test: true });
    expect(refused.now.status).toBe('failed');
    expect(refused.now.message).toMatch(/node-r.*GET \/redfish\/v1: .*self.signed.*needs `ca:`/);
    const ok = await shutdown(host(s.url, { ca: join(tmp.path, 'bmc.pem') }), { test: true });
    expect(ok.now.status).toBe('would-act');
    expectSessionsDeleted(s);
    const missing = await shutdown(host(s.url, { ca: join(tmp.path, 'no-such.pem') }), { test: true });
    expect(missing.now.status).toBe('failed');
    expect(missing.now.message).toContain(`cannot read the ca file ${join(tmp.path, 'no-such.pem')}`);
  });

  it('systemId picks the system; an unknown one fails listing the members', async () => {
    const s = await server({ systemId: 'blade-7' });
    const r = await shutdown(host(s.url, { systemId: 'blade-9' }));
    expect(r.now.status).toBe('failed');
    expect(r.now.message).toContain('no system "blade-9" in /redfish/v1/Systems (members: /redfish/v1/Systems/blade-7)');
    const ok = await shutdown(host(s.url, { systemId: 'blade-7' }), { test: true });
    expect(ok.now.status).toBe('would-act');
    expectSessionsDeleted(s);
  });
});
