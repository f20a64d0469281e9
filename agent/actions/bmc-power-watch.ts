/**
 * What follows a BMC's acknowledged soft power-off, the same for IPMI and Redfish: poll the power
 * state until it is off, or until the host's forceOffAfterS, after which a hard off is sent ONLY if
 * the host allows it (`allowForceOff`; a hard off loses whatever the OS had not written). A graceful
 * request depends on the OS honouring ACPI, so "acknowledged" is never taken as "off".
 *
 * One failed poll is not a verdict (a BMC drops a request now and then): polling goes on until the
 * deadline, and the last error is kept for the report. Timers come from the injected clock.
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { HostOutcome } from './types.js';

export type PowerState = 'on' | 'off' | 'unknown';

export interface PowerWatchParams {
  host: string;
  clock: Clock;
  logger: Logger;
  /** Monotonic ms at which the soft power-off was requested (afterMs and the deadline count from it). */
  requestedAtMono: number;
  pollIntervalMs: number;
  forceOffAfterMs: number;
  allowForceOff: boolean;
  /** What the hard off is called in messages: 'ForceOff' or 'chassis power off'. */
  forceOffName: string;
  /** One power-state query; throws on failure. */
  readPower: () => Promise<PowerState>;
  /** One hard power-off request; throws on failure. */
  forceOff: () => Promise<void>;
  signal: AbortSignal;
  onLater?: (o: HostOutcome) => void;
}

/** Polls after a forced off before calling it unconfirmed. */
const CONFIRM_POLLS_AFTER_FORCE = 3;

function sleep(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clock.clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = clock.setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Resolves with the final outcome (also handed to `onLater`): powered-off (forced or not), or failed.
 * Resolves undefined, reporting nothing, when `signal` aborts (the agent is stopping).
 */
export async function watchPowerOff(p: PowerWatchParams): Promise<HostOutcome | undefined> {
  const { clock, host } = p;
  const afterMs = (): number => Math.round(clock.monoMs() - p.requestedAtMono);
  let polls = 0;
  let failedPolls = 0;
  let lastError: string | undefined;
  let lastState: PowerState | undefined;

  const poll = async (): Promise<PowerState | undefined> => {
    polls++;
    try {
      lastState = await p.readPower();
      return lastState;
    } catch (err) {
      failedPolls++;
      lastError = (err as Error).message;
      p.logger.warn({ host, err: lastError }, 'power state poll failed; polling on');
      return undefined;
    }
  };
  const report = (o: HostOutcome): HostOutcome => {
    try {
      p.onLater?.(o);
    } catch (err) {
      p.logger.error({ host, err: (err as Error).message }, 'onLater handler threw');
    }
    return o;
  };

  for (;;) {
    if (p.signal.aborted) return undefined;
    if ((await poll()) === 'off') {
      return report({ host, status: 'powered-off', message: `host ${host}: power is off after the soft power-off`, afterMs: afterMs(), detail: { forced: false, polls, failedPolls } });
    }
    if (p.signal.aborted) return undefined;
    const remaining = p.forceOffAfterMs - afterMs();
    if (remaining <= 0) break;
    await sleep(clock, Math.min(p.pollIntervalMs, remaining), p.signal);
  }

  const still = lastState === undefined ? `power state unknown (${lastError ?? 'no answer'})` : `power still ${lastState}`;
  const waitedS = Math.round(p.forceOffAfterMs / 1000);
  if (!p.allowForceOff) {
    return report({
      host,
      status: 'failed',
      message: `host ${host}: ${still} ${waitedS} s after the soft power-off; ${p.forceOffName} not sent (allowForceOff is false)`,
      afterMs: afterMs(),
      detail: { forced: false, forceOffSent: false, lastPowerState: lastState ?? null, lastError: lastError ?? null, polls, failedPolls },
    });
  }
  p.logger.warn({ host }, `${still} after forceOffAfterS: sending ${p.forceOffName} (allowForceOff)`);
  try {
    await p.forceOff();
  } catch (err) {
    return report({
      host,
      status: 'failed',
      message: `host ${host}: ${still} ${waitedS} s after the soft power-off; ${p.forceOffName} failed: ${(err as Error).message}`,
      afterMs: afterMs(),
      detail: { forced: true, forceOffSent: true, forceOffError: (err as Error).message, polls, failedPolls },
    });
  }
  for (let i = 0; i < CONFIRM_POLLS_AFTER_FORCE; i++) {
    if (p.signal.aborted) return undefined;
    if ((await poll()) === 'off') {
      return report({ host, status: 'powered-off', message: `host ${host}: forced off (${p.forceOffName}) ${waitedS} s after the soft power-off`, afterMs: afterMs(), detail: { forced: true, forceOffSent: true, polls, failedPolls } });
    }
    if (i < CONFIRM_POLLS_AFTER_FORCE - 1) await sleep(clock, p.pollIntervalMs, p.signal);
  }
  return report({
    host,
    status: 'failed',
    message: `host ${host}: ${p.forceOffName} was accepted but the power is not reported off (${lastState ?? lastError ?? 'unknown'})`,
    afterMs: afterMs(),
    detail: { forced: true, forceOffSent: true, lastPowerState: lastState ?? null, lastError: lastError ?? null, polls, failedPolls },
  });
}
