/**
 * The power watch that follows a BMC's soft power-off, on virtual time: one failed poll is not a
 * verdict, the hard off goes out only when allowed and only after forceOffAfterS, and an abort ends
 * the watch without a report.
 */
import { describe, expect, it } from 'vitest';
import { watchPowerOff, type PowerState } from '../../agent/actions/bmc-power-watch.js';
import type { HostOutcome } from '../../agent/actions/types.js';
import { VirtualClock } from '../../agent/clock.js';
import { silentLogger } from '../helpers/agent.js';

/** Lets the awaited promises of the watch settle between virtual-time steps. */
const flush = async (): Promise<void> => {
  for (let i = 0; i < 10; i++) await Promise.resolve();
};

function setup(opts: { states: Array<PowerState | Error>; allowForceOff: boolean; afterForce?: PowerState }) {
  const clock = new VirtualClock();
  const ac = new AbortController();
  const reports: HostOutcome[] = [];
  const calls: string[] = [];
  let forced = false;
  let i = 0;
  const done = watchPowerOff({
    host: 'h1',
    clock,
    logger: silentLogger,
    requestedAtMono: clock.monoMs(),
    pollIntervalMs: 1000,
    forceOffAfterMs: 5000,
    allowForceOff: opts.allowForceOff,
    forceOffName: 'ForceOff',
    readPower: () => {
      calls.push(`poll@${clock.monoMs()}`);
      if (forced) return Promise.resolve(opts.afterForce ?? 'off');
      const s = opts.states[Math.min(i++, opts.states.length - 1)]!;
      return s instanceof Error ? Promise.reject(s) : Promise.resolve(s);
    },
    forceOff: () => {
      calls.push(`force@${clock.monoMs()}`);
      forced = true;
      return Promise.resolve();
    },
    signal: ac.signal,
    onLater: (o) => reports.push(o),
  });
  const run = async (ms: number): Promise<void> => {
    for (let t = 0; t < ms; t += 100) {
      await flush();
      clock.advance(100);
    }
    await flush();
  };
  return { clock, ac, reports, calls, done, run };
}

describe('watchPowerOff', () => {
  it('keeps polling through a failed poll and reports powered-off when the state turns off', async () => {
    const w = setup({ states: ['on', new Error('BMC busy'), 'on', 'off'], allowForceOff: false });
    await w.run(4000);
    expect(w.reports).toHaveLength(1);
    expect(w.reports[0]).toMatchObject({ host: 'h1', status: 'powered-off', afterMs: 3000, detail: { forced: false, polls: 4, failedPolls: 1 } });
    expect(w.calls.some((c) => c.startsWith('force'))).toBe(false);
    await expect(w.done).resolves.toEqual(w.reports[0]);
  });

  it('never sends the hard off when it is not allowed: failed at forceOffAfterS', async () => {
    const w = setup({ states: ['on'], allowForceOff: false });
    await w.run(8000);
    expect(w.reports).toHaveLength(1);
    expect(w.reports[0]).toMatchObject({ status: 'failed', afterMs: 5000, detail: { forceOffSent: false, lastPowerState: 'on' } });
    expect(w.reports[0]!.message).toBe('host h1: power still on 5 s after the soft power-off; ForceOff not sent (allowForceOff is false)');
    expect(w.calls.some((c) => c.startsWith('force'))).toBe(false);
  });

  it('sends the hard off at forceOffAfterS when allowed, not before, and confirms it', async () => {
    const w = setup({ states: ['on'], allowForceOff: true });
    await w.run(8000);
    expect(w.calls.filter((c) => c.startsWith('force'))).toEqual(['force@5000']);
    expect(w.reports).toHaveLength(1);
    expect(w.reports[0]).toMatchObject({ status: 'powered-off', detail: { forced: true, forceOffSent: true } });
  });

  it('reports a hard off that did not take as failed', async () => {
    const w = setup({ states: ['on'], allowForceOff: true, afterForce: 'on' });
    await w.run(12_000);
    expect(w.reports).toHaveLength(1);
    expect(w.reports[0]).toMatchObject({ status: 'failed', detail: { forceOffSent: true, lastPowerState: 'on' } });
  });

  it('stops without a report when aborted', async () => {
    const w = setup({ states: ['on'], allowForceOff: true });
    await w.run(2000);
    w.ac.abort();
    await w.run(8000);
    expect(w.reports).toEqual([]);
    expect(w.calls.some((c) => c.startsWith('force'))).toBe(false);
    await expect(w.done).resolves.toBeUndefined();
    expect(w.clock.pendingTimers()).toBe(0);
  });
});
