/**
 * The notifier on virtual time: watchdog interval from the environment, pings judged by progress,
 * one message in flight with later ones merged, and the status line.
 */
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../agent/clock.js';
import { STATUS_MIN_GAP_MS, Notifier, watchdogIntervalMs } from '../../agent/service/notify.js';
import type { SourceProgress } from '../../agent/service/progress.js';
import { statusLine } from '../../agent/service/status-line.js';
import { silentLogger } from '../helpers/agent.js';

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

function rig(env: NodeJS.ProcessEnv, opts: { hold?: boolean } = {}) {
  const clock = new VirtualClock({ startMonoMs: 1_000_000 });
  const sources: SourceProgress[] = [{ name: 'bus:l', cycles: 0, lastMono: clock.monoMs(), stallAfterMs: 3000 }];
  const sent: string[][] = [];
  const releases: Array<() => void> = [];
  let status = 'all fine';
  const n = new Notifier({
    env,
    pid: 42,
    clock,
    logger: silentLogger,
    view: { progress: () => sources, status: () => status },
    send: (a) => {
      sent.push(a);
      return opts.hold ? new Promise<void>((r) => releases.push(r)) : Promise.resolve();
    },
  });
  const cycle = (): void => {
    sources[0]!.cycles++;
    sources[0]!.lastMono = clock.monoMs();
  };
  return { clock, n, sent, releases, cycle, setStatus: (s: string) => void (status = s) };
}

describe('watchdogIntervalMs', () => {
  it('is half WATCHDOG_USEC, for this process only', () => {
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }, 7)).toBe(15_000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '7' }, 7)).toBe(15_000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '8' }, 7)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '0' }, 7)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30s' }, 7)).toBeUndefined();
    expect(watchdogIntervalMs({}, 7)).toBeUndefined();
  });
});

describe('Notifier', () => {
  it('sends nothing without NOTIFY_SOCKET', async () => {
    const { n, sent, clock } = rig({ WATCHDOG_USEC: '2000000' });
    await n.start();
    clock.advance(10_000);
    await n.stopping();
    expect(sent).toEqual([]);
  });

  it('READY=1 with a STATUS first; pings only while the source completes cycles within its bound', async () => {
    const { n, sent, clock, cycle } = rig({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '2000000' });
    await n.start();
    expect(sent[0]).toEqual(['READY=1', 'STATUS=all fine']);
    const pings = (): number => sent.filter((a) => a.includes('WATCHDOG=1')).length;
    for (let i = 0; i < 5; i++) {
      clock.advance(500);
      cycle();
      clock.advance(500);
      await flush();
    }
    expect(pings()).toBe(5);
    // No cycle for longer than the bound (3 s): the pings stop…
    clock.advance(3000);
    await flush();
    const atStall = pings();
    for (let i = 0; i < 5; i++) {
      clock.advance(1000);
      await flush();
    }
    expect(pings()).toBe(atStall);
    // …and come back with the next cycle.
    cycle();
    clock.advance(1000);
    await flush();
    expect(pings()).toBe(atStall + 1);
    await n.stop();
  });

  it('keeps one message in flight and merges what comes meanwhile, the latest STATUS winning', async () => {
    const { n, sent, releases, setStatus, clock } = rig({ NOTIFY_SOCKET: '/run/x' }, { hold: true });
    await n.start();
    setStatus('one');
    n.refreshStatus();
    setStatus('two');
    clock.advance(STATUS_MIN_GAP_MS);
    n.refreshStatus();
    expect(sent).toHaveLength(1);
    releases.shift()!();
    await flush();
    expect(sent[1]).toEqual(['STATUS=two']);
    // STOPPING=1 does not queue behind a message in flight: it would be lost to the exit.
    const stopped = n.stopping();
    expect(sent[2]).toEqual(['STOPPING=1', 'STATUS=stopping']);
    for (const r of releases.splice(0)) r();
    await stopped;
  });
});

describe('Notifier STATUS rate', () => {
  it('a burst of refreshes (a flapping device) sends one STATUS now and the last one after the gap, not one per event', async () => {
    const { n, sent, setStatus, clock } = rig({ NOTIFY_SOCKET: '/run/x' });
    await n.start();
    await flush();
    const statuses = (): string[] => sent.flatMap((a) => a.filter((x) => x.startsWith('STATUS=')));
    const before = statuses().length;
    for (let i = 1; i <= 20; i++) {
      setStatus(`burst ${i}`);
      n.refreshStatus();
      clock.advance(10);
      await flush();
    }
    expect(statuses().slice(before)).toEqual(['STATUS=burst 1']);
    clock.advance(STATUS_MIN_GAP_MS);
    await flush();
    expect(statuses().slice(before)).toEqual(['STATUS=burst 1', 'STATUS=burst 20']);
    // A refused reload's prefix survives a plain refresh that follows it within the gap.
    n.refreshStatus('reload refused: 2 problems in a.yaml');
    setStatus('after');
    n.refreshStatus();
    clock.advance(STATUS_MIN_GAP_MS);
    await flush();
    expect(statuses().at(-1)).toBe('STATUS=reload refused: 2 problems in a.yaml; after');
    await n.stop();
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe('statusLine', () => {
  it('says zones by level, devices online and the outbox backlog', () => {
    const zone = (id: string, level: string, blind = false) => ({ zone: id, level, blind }) as never;
    const dev = (id: string, state: string) => ({ deviceId: id, state }) as never;
    const outputs = { outbox: { state: 'open', rows: 9, pending: 0 }, sinks: { mqtt: { depth: 5210, lagMs: 1 }, influx: { depth: 0, lagMs: 0 } } } as never;
    expect(statusLine([zone('a', 'normal'), zone('b', 'normal'), zone('c', 'normal')], [dev('r1', 'online'), dev('r2', 'online')], { outbox: { state: 'open', rows: 0, pending: 0 }, sinks: { mqtt: { depth: 0, lagMs: 0 } } } as never)).toBe(
      '3 zones normal, 2/2 devices online, outbox 0 behind',
    );
    expect(statusLine([zone('a', 'normal'), zone('hall-b', 'alarm'), zone('c', 'normal', true)], [dev('r1', 'online'), dev('r7', 'offline')], outputs)).toBe(
      '1 zone alarm (hall-b), 2 normal, 1 blind (c), 1/2 devices online (r7 offline), outbox 5210 behind',
    );
  });
});
