/**
 * The shutdown coordinator (agent/actions/shutdown.ts) on virtual time, with fake transports and
 * hooks through its seams (TransportRegistry factories, runHook): failover strictly before any host,
 * groups in order, a silent host bounded by hostSyncS, a rejecting host not blocking its group,
 * final hooks last, every step recorded with the incident, and cancellation.
 * The same sequence against real host agents and mosquitto: test/integration/shutdown-chain.test.ts.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../agent/clock.js';
import { shutdownSchema, type HookDef, type HostDef } from '../../agent/config/actions-schema.js';
import { hookBudgetMs, runShutdown, type ShutdownRecord, type ShutdownReport } from '../../agent/actions/shutdown.js';
import { TransportRegistry } from '../../agent/actions/transports.js';
import type { ActionContext, ActionResult, HostOutcome, HostTransport } from '../../agent/actions/types.js';

const logger = pino({ level: 'silent' });
const STEP_MS = 50;

/** How a fake host answers: a status after `afterMs`, never, or a thrown error. */
type Script = { status: HostOutcome['status']; afterMs: number; later?: { status: HostOutcome['status']; afterMs: number } } | 'never' | 'throw';

interface Harness {
  clock: VirtualClock;
  /** [monoMs, what] in the order things happened. */
  timeline: Array<[number, string]>;
  records: ShutdownRecord[];
  asks: Array<{ host: string; at: number; test: boolean; ackTimeoutMs: number }>;
  run(ctx?: Partial<ActionContext>, signal?: AbortSignal): Promise<ShutdownReport>;
  /** Drives virtual time until `p` settles (or `maxMs` passed). */
  drive<T>(p: Promise<T>, maxMs?: number, onStep?: (nowMs: number) => void): Promise<T>;
}

const agentHost = (name: string): HostDef => ({ via: 'agent', name, secretFile: '/nonexistent', forceOffAfterS: 300, allowForceOff: false });
const ipmiHost = (name: string): HostDef => ({ via: 'ipmi', name, address: '127.0.0.1', port: 623, usernameFile: '/u', passwordFile: '/p', cipherSuite: 3, timeoutS: 15, forceOffAfterS: 300, allowForceOff: false });
const execHook = (name: string, timeoutS = 60): HookDef => ({ kind: 'exec', name, argv: ['/bin/true'], timeoutS, killGraceS: 5, env: {} });

function harness(opts: {
  groups: Array<{ name: string; hosts: HostDef[] }>;
  hosts: Record<string, Script>;
  failover?: HookDef[];
  final?: HookDef[];
  /** How long each hook takes, ms ('never' never settles). */
  hookMs?: Record<string, number | 'never'>;
  hostSyncS?: number;
}): Harness {
  const clock = new VirtualClock({ startMonoMs: 0 });
  const timeline: Array<[number, string]> = [];
  const records: ShutdownRecord[] = [];
  const asks: Harness['asks'] = [];
  const fake: HostTransport = {
    shutdown(host, _ctx, o) {
      asks.push({ host: host.name, at: clock.monoMs(), test: o.test, ackTimeoutMs: o.ackTimeoutMs });
      timeline.push([clock.monoMs(), `ask ${host.name}`]);
      const script = opts.hosts[host.name] ?? 'never';
      if (script === 'throw') throw new Error(`cannot reach ${host.name}`);
      if (script === 'never') return new Promise(() => undefined);
      return new Promise((resolve) => {
        clock.setTimeout(() => {
          timeline.push([clock.monoMs(), `${script.status} ${host.name}`]);
          resolve({ host: host.name, status: script.status, message: script.status, afterMs: script.afterMs });
          if (script.later) {
            const later = script.later;
            clock.setTimeout(() => o.onLater?.({ host: host.name, status: later.status, message: `later ${later.status}`, afterMs: script.afterMs + later.afterMs }), later.afterMs);
          }
        }, script.afterMs);
      });
    },
  };
  const transports = new TransportRegistry(
    { logger, clock, gateway: 'gw-1', stateDir: '/nonexistent', hostsBaseTopic: 'rg' },
    { factories: { agent: () => fake, ipmi: () => fake, redfish: () => fake } },
  );
  const runHook = (hook: HookDef): Promise<ActionResult> => {
    timeline.push([clock.monoMs(), `hook ${hook.name}`]);
    const ms = opts.hookMs?.[hook.name] ?? 0;
    if (ms === 'never') return new Promise(() => undefined);
    const t0 = clock.monoMs();
    return new Promise((resolve) =>
      clock.setTimeout(() => {
        timeline.push([clock.monoMs(), `hook ${hook.name} done`]);
        resolve({ status: 'succeeded', message: 'exit 0', durationMs: clock.monoMs() - t0, detail: { exitCode: 0 } });
      }, ms),
    );
  };
  const config = shutdownSchema.parse({ failover: opts.failover ?? [], final: opts.final ?? [], groups: opts.groups, hostSyncS: opts.hostSyncS ?? 10 });
  const h: Harness = {
    clock,
    timeline,
    records,
    asks,
    run: (ctx = {}, signal = new AbortController().signal) =>
      runShutdown(
        { incident: 'inc-7', zone: 'z1', level: 'critical', etaS: 120, reason: 'test', ts: clock.wallMs(), dryRun: false, ...ctx },
        { config, transports, runHook, record: (e) => records.push(e), clock, logger },
        signal,
      ),
    async drive(p, maxMs = 600_000, onStep) {
      let done = false;
      let value: unknown;
      let error: unknown;
      let failed = false;
      p.then(
        (v) => ((done = true), (value = v)),
        (e: unknown) => ((done = true), (failed = true), (error = e)),
      );
      for (let t = 0; t <= maxMs; t += STEP_MS) {
        // Let every continuation run before time moves on (the coordinator awaits between steps).
        await new Promise((r) => setImmediate(r));
        if (done) break;
        onStep?.(clock.monoMs());
        clock.advance(STEP_MS);
      }
      if (!done) throw new Error(`still running after ${maxMs} virtual ms; timeline ${JSON.stringify(timeline)}`);
      if (failed) throw error;
      return value as never;
    },
  };
  return h;
}

const at = (h: Harness, what: string): number => {
  const e = h.timeline.find(([, w]) => w === what);
  if (!e) throw new Error(`"${what}" never happened; timeline ${JSON.stringify(h.timeline)}`);
  return e[0];
};

describe('runShutdown: order', () => {
  it('runs the failover hooks to their end before asking any host, groups in order, and the final hook last', async () => {
    const h = harness({
      failover: [execHook('drain'), execHook('dns')],
      final: [execHook('notify')],
      hookMs: { drain: 3000, dns: 1000, notify: 500 },
      groups: [
        { name: 'compute', hosts: [agentHost('c1'), agentHost('c2')] },
        { name: 'storage', hosts: [agentHost('s1')] },
      ],
      hosts: { c1: { status: 'acknowledged', afterMs: 200 }, c2: { status: 'acknowledged', afterMs: 700 }, s1: { status: 'acknowledged', afterMs: 300 } },
    });
    const report = await h.drive(h.run());
    expect(h.timeline.map(([t, w]) => `${t} ${w}`)).toEqual([
      '0 hook drain',
      '3000 hook drain done',
      '3000 hook dns',
      '4000 hook dns done',
      // Both hosts of a group at once, the next group as soon as the last acknowledgement is in.
      '4000 ask c1',
      '4000 ask c2',
      '4200 acknowledged c1',
      '4700 acknowledged c2',
      '4700 ask s1',
      '5000 acknowledged s1',
      '5000 hook notify',
      '5500 hook notify done',
    ]);
    expect(report.aborted).toBe(false);
    expect(report.failover.map((r) => r.status)).toEqual(['succeeded', 'succeeded']);
    expect(report.final.map((r) => r.status)).toEqual(['succeeded']);
    expect(report.groups.map((g) => [g.name, g.hosts.map((o) => `${o.host}:${o.status}`)])).toEqual([
      ['compute', ['c1:acknowledged', 'c2:acknowledged']],
      ['storage', ['s1:acknowledged']],
    ]);
    expect(report.groups[0]!.endedAtMs - report.groups[0]!.startedAtMs).toBe(700);
    expect(h.asks.every((a) => a.test === false && a.ackTimeoutMs === 10_000)).toBe(true);
  });

  it('records every step with the incident: sequence, hooks, group, each host asked and its verdict', async () => {
    const h = harness({
      failover: [execHook('drain')],
      final: [execHook('notify')],
      groups: [{ name: 'compute', hosts: [agentHost('c1'), ipmiHost('b1')] }],
      hosts: { c1: { status: 'acknowledged', afterMs: 100, later: { status: 'acknowledged', afterMs: 4000 } }, b1: 'never' },
      hostSyncS: 2,
    });
    await h.drive(h.run());
    await h.drive(new Promise((r) => h.clock.setTimeout(() => r(undefined), 4000)));
    expect(h.records.every((r) => r.incident === 'inc-7' && r.zone === 'z1' && r.action === 'shutdown')).toBe(true);
    const steps = h.records.map((r) => `${String(r.detail?.step)}${r.detail?.host ? ` ${String(r.detail.host)}` : r.detail?.hook ? ` ${String(r.detail.hook)}` : ''} ${r.status}`);
    expect(steps).toEqual([
      'sequence started',
      'failover drain started',
      'failover drain succeeded',
      'group started',
      'host c1 asked',
      'host b1 asked',
      'host c1 acknowledged',
      'host b1 timeout',
      'group failed',
      'final notify started',
      'final notify succeeded',
      'sequence failed',
      // The final report of c1 arrives after the sequence ended; it is still recorded.
      'host-later c1 acknowledged',
    ]);
    const b1 = h.records.find((r) => r.detail?.host === 'b1' && r.status === 'timeout')!;
    expect(b1.message).toContain('no acknowledgement within hostSyncS (2 s)');
    expect(b1.detail).toMatchObject({ group: 'compute', via: 'ipmi', afterMs: 2000 });
  });
});

describe('runShutdown: bounds', () => {
  it('a host that never answers delays the next group by hostSyncS, no more; its late answer is still recorded', async () => {
    const h = harness({
      groups: [
        { name: 'g1', hosts: [agentHost('fast'), agentHost('silent')] },
        { name: 'g2', hosts: [agentHost('last')] },
      ],
      hosts: { fast: { status: 'acknowledged', afterMs: 100 }, silent: { status: 'acknowledged', afterMs: 15_000 }, last: { status: 'acknowledged', afterMs: 100 } },
      hostSyncS: 10,
    });
    const report = await h.drive(h.run());
    expect(at(h, 'ask last')).toBe(10_000);
    expect(report.groups[0]!.hosts.map((o) => o.status)).toEqual(['acknowledged', 'timeout']);
    expect(report.groups[0]!.hosts[1]!.afterMs).toBe(10_000);
    await h.drive(new Promise((r) => h.clock.setTimeout(() => r(undefined), 6000)));
    expect(h.records.find((r) => r.detail?.step === 'host-late')).toMatchObject({ status: 'acknowledged', detail: { host: 'silent', group: 'g1' } });
  });

  it('a rejecting, failing or throwing host does not hold its group beyond its verdict', async () => {
    const h = harness({
      groups: [
        { name: 'g1', hosts: [agentHost('rej'), agentHost('ok'), ipmiHost('boom'), agentHost('bad')] },
        { name: 'g2', hosts: [agentHost('last')] },
      ],
      hosts: { rej: { status: 'rejected', afterMs: 100 }, ok: { status: 'acknowledged', afterMs: 600 }, boom: 'throw', bad: { status: 'failed', afterMs: 50 }, last: { status: 'acknowledged', afterMs: 100 } },
      hostSyncS: 30,
    });
    const report = await h.drive(h.run());
    expect(at(h, 'ask last')).toBe(600);
    expect(report.groups[0]!.hosts.map((o) => `${o.host}:${o.status}`)).toEqual(['rej:rejected', 'ok:acknowledged', 'boom:failed', 'bad:failed']);
    expect(report.groups[0]!.hosts[2]!.message).toContain('cannot reach boom');
  });

  it('a failover hook that never settles is given up at its budget; then the hosts are asked', async () => {
    const hook = execHook('stuck', 20);
    const h = harness({
      failover: [hook],
      hookMs: { stuck: 'never' },
      groups: [{ name: 'g1', hosts: [agentHost('h1')] }],
      hosts: { h1: { status: 'acknowledged', afterMs: 100 } },
    });
    const report = await h.drive(h.run());
    expect(hookBudgetMs(hook)).toBe(30_000);
    expect(at(h, 'ask h1')).toBe(30_000);
    expect(report.failover[0]).toMatchObject({ status: 'timeout' });
    expect(report.groups[0]!.hosts[0]!.status).toBe('acknowledged');
  });

  it('in a dry run every host is asked to confirm (test), and would-act counts as success', async () => {
    const h = harness({ groups: [{ name: 'g1', hosts: [agentHost('h1')] }], hosts: { h1: { status: 'would-act', afterMs: 100 } } });
    const report = await h.drive(h.run({ dryRun: true }));
    expect(h.asks).toEqual([{ host: 'h1', at: 0, test: true, ackTimeoutMs: 10_000 }]);
    expect(report.groups[0]!.hosts[0]!.status).toBe('would-act');
    expect(h.records.at(-1)).toMatchObject({ status: 'succeeded', detail: { step: 'sequence' } });
  });
});

describe('runShutdown: cancellation', () => {
  it('an abort while waiting on a group ends the wait at once: no later group, no final hook, recorded as skipped', async () => {
    const h = harness({
      final: [execHook('notify')],
      groups: [
        { name: 'g1', hosts: [agentHost('slow')] },
        { name: 'g2', hosts: [agentHost('never-asked')] },
      ],
      hosts: { slow: 'never' },
      hostSyncS: 60,
    });
    const ac = new AbortController();
    const report = await h.drive(h.run({}, ac.signal), 600_000, (now) => {
      if (now === 2000) ac.abort();
    });
    expect(h.clock.monoMs()).toBeLessThan(3000);
    expect(report.aborted).toBe(true);
    expect(report.groups.map((g) => g.name)).toEqual(['g1']);
    expect(report.groups[0]!.hosts[0]).toMatchObject({ status: 'timeout' });
    expect(report.groups[0]!.hosts[0]!.message).toContain('the agent is stopping');
    expect(report.final).toEqual([]);
    expect(h.timeline.some(([, w]) => w === 'ask never-asked' || w === 'hook notify')).toBe(false);
    expect(h.records.at(-1)).toMatchObject({ status: 'skipped', detail: { step: 'sequence' } });
    expect(h.records.at(-1)!.message).toContain('final hooks not run: notify');
  });

  it('an abort during the failover step asks no host', async () => {
    const h = harness({ failover: [execHook('drain')], hookMs: { drain: 'never' }, groups: [{ name: 'g1', hosts: [agentHost('h1')] }], hosts: {} });
    const ac = new AbortController();
    const report = await h.drive(h.run({}, ac.signal), 600_000, (now) => {
      if (now === 1000) ac.abort();
    });
    expect(report).toMatchObject({ aborted: true, groups: [], failover: [{ status: 'skipped' }] });
    expect(h.asks).toEqual([]);
  });
});
