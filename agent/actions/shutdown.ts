/**
 * The coordinated shutdown (issue 8, item 2), modelled on NUT upsmon's primary and secondaries:
 *
 *   1. failover hooks, in order; the whole step finishes (or times out) before any host is asked;
 *   2. host groups, in order: every host of a group is asked at once, and the next group starts when
 *      each has given its verdict (acknowledged, rejected, failed …) or `hostSyncS` after the group
 *      started, whichever comes first (upsmon's HOSTSYNC): a host that never answers delays the
 *      next group by hostSyncS at most;
 *   3. final hooks, in order (the gateway's own last word, upsmon's FINALDELAY/SHUTDOWNCMD spot).
 *
 * Every step is a record (who was asked, who acknowledged, who timed out, when, with the incident id),
 * so the event trail tells the story without the logs. Pure orchestration on the injected Clock: the
 * transports and hooks do the I/O.
 */
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../clock.js';
import type { HookDef, HostDef, ShutdownDef } from '../config/actions-schema.js';
import { asError } from '../errors.js';
import type { ActionEvent } from '../outputs/events.js';
import type { TransportRegistry } from './transports.js';
import type { ActionContext, ActionResult, HostOutcome } from './types.js';

/** What the coordinator records; `incident` is carried by every record (ActionEvent gains it in issue 8). */
export type ShutdownRecord = Omit<ActionEvent, 'kind' | 'ts'> & { incident: string };

export interface ShutdownDeps {
  config: ShutdownDef;
  transports: TransportRegistry;
  /**
   * Runs one failover/final hook (exec or http) with its own timeout and returns its result; honours
   * ctx.dryRun itself. The coordinator records the result: runHook need not.
   */
  runHook: (hook: HookDef, ctx: ActionContext) => Promise<ActionResult>;
  record: (e: ShutdownRecord) => void;
  clock: Clock;
  logger: Logger;
  /**
   * Whether a maintenance inhibit holds actions back now (its sources), undefined when not. Looked at
   * before every step: an operator who sees a shutdown start on a false alarm stops the rest of the
   * sequence by setting the inhibit (file or topic). What was already asked stays asked.
   */
  held?: () => string | undefined;
}

export interface GroupReport {
  name: string;
  /** One per host of the group, in config order. */
  hosts: HostOutcome[];
  /** Wall ms when the group's hosts were asked, and when the coordinator moved on. */
  startedAtMs: number;
  endedAtMs: number;
}

export interface ShutdownReport {
  /** The groups that were started, in order (all of them unless aborted). */
  groups: GroupReport[];
  failover: ActionResult[];
  final: ActionResult[];
  /** The agent stopped mid-sequence: later groups were not asked and the final hooks did not run. */
  aborted: boolean;
  /** A maintenance inhibit stopped the sequence before this step (what it said), the later steps did not run. */
  inhibited?: { step: string; sources: string };
}

/** Outcomes that count as "this host is going down" (or, in a test, "would go down"). */
export const HOST_OK: ReadonlySet<HostOutcome['status']> = new Set(['acknowledged', 'powered-off', 'would-act']);

/** Beyond a hook's own deadlines, before the coordinator stops waiting for it anyway. */
export const HOOK_GRACE_MS = 5000;

/**
 * The longest a hook may take by its own settings (exec: timeout + kill grace; http: every attempt
 * at its timeout plus doubling backoff), plus HOOK_GRACE_MS. The hook enforces its deadlines; this is
 * the coordinator's backstop, so a hook that never settles cannot hold the hosts' shutdown forever.
 */
export function hookBudgetMs(hook: HookDef): number {
  if (hook.kind === 'exec') return (hook.timeoutS + hook.killGraceS) * 1000 + HOOK_GRACE_MS;
  const attempts = hook.retries + 1;
  const backoffMs = hook.retryInitialMs * (2 ** hook.retries - 1);
  return attempts * hook.timeoutS * 1000 + backoffMs + HOOK_GRACE_MS;
}

/**
 * Runs the whole sequence for `ctx`. Never rejects: every failure is an outcome in the report and a
 * record. Aborting `signal` (the agent stops) ends the wait at once; what was already asked stays asked.
 */
export async function runShutdown(ctx: ActionContext, deps: ShutdownDeps, signal: AbortSignal): Promise<ShutdownReport> {
  const { config, clock } = deps;
  const record = (status: string, message: string, detail: Record<string, unknown>): void => {
    try {
      deps.record({ action: 'shutdown', status, zone: ctx.zone, incident: ctx.incident, message, detail });
    } catch (err) {
      // A record that cannot be stored must not stop a shutdown in progress.
      deps.logger.error({ err: asError(err).message, status, message }, 'cannot record a shutdown step');
    }
  };
  const report: ShutdownReport = { groups: [], failover: [], final: [], aborted: false };
  const t0 = clock.monoMs();
  const hostCount = config.groups.reduce((n, g) => n + g.hosts.length, 0);
  record('started', `shutdown sequence for incident ${ctx.incident}${ctx.dryRun ? ' (dry run: hosts only confirm)' : ''}: ${config.failover.length} failover hook(s), ${config.groups.length} group(s), ${hostCount} host(s), ${config.final.length} final hook(s)`, {
    step: 'sequence',
    dryRun: ctx.dryRun,
    groups: config.groups.map((g) => ({ name: g.name, hosts: g.hosts.map((h) => `${h.name} (${h.via})`) })),
    hostSyncS: config.hostSyncS,
  });

  // The operator's brake: an inhibit set while the sequence runs stops it before the next step.
  const stopped = (step: string): boolean => {
    if (signal.aborted || report.inhibited) return true;
    const sources = deps.held?.();
    if (sources === undefined) return false;
    report.inhibited = { step, sources };
    return true;
  };

  // 1. Failover: each hook to its end (or its deadline) before the next, and all before any host.
  // A failed or timed-out failover is recorded but does not stop the shutdown: the heat does not
  // wait for the other site, and hosts powered off late are the outage this exists to prevent.
  for (const hook of config.failover) {
    if (stopped(`failover hook ${hook.name}`)) break;
    report.failover.push(await runOneHook('failover', hook, ctx, deps, signal, record));
  }

  // 2. Groups, in order.
  for (const group of config.groups) {
    if (stopped(`group ${group.name}`)) break;
    report.groups.push(await runGroup(group, ctx, deps, signal, record));
  }

  // 3. Final hooks, unless the agent is stopping.
  for (const hook of config.final) {
    if (stopped(`final hook ${hook.name}`)) break;
    report.final.push(await runOneHook('final', hook, ctx, deps, signal, record));
  }

  report.aborted = signal.aborted;
  const outcomes = report.groups.flatMap((g) => g.hosts);
  const ok = outcomes.filter((o) => HOST_OK.has(o.status)).length;
  const byStatus: Record<string, string[]> = {};
  for (const o of outcomes) (byStatus[o.status] ??= []).push(o.host);
  const summary = Object.entries(byStatus)
    .map(([s, hosts]) => `${s}: ${hosts.join(', ')}`)
    .join('; ');
  if (report.inhibited && !report.aborted) {
    const asked = new Set(report.groups.map((g) => g.name));
    const notAsked = config.groups.filter((g) => !asked.has(g.name)).map((g) => g.name);
    const finalNotRun = config.final.slice(report.final.length).map((h) => h.name);
    record('inhibited', `shutdown sequence stopped before ${report.inhibited.step}: maintenance inhibit (${report.inhibited.sources})${notAsked.length ? `; groups not asked: ${notAsked.join(', ')}` : ''}${finalNotRun.length ? `; final hooks not run: ${finalNotRun.join(', ')}` : ''}${summary ? ` (${summary})` : ''}`, {
      step: 'sequence',
      durationMs: clock.monoMs() - t0,
      hosts: byStatus,
      inhibitedBefore: report.inhibited.step,
      notAsked,
    });
  } else if (report.aborted) {
    const skipped = config.final.map((h) => h.name);
    record('skipped', `shutdown sequence stopped: the agent is stopping (${summary || 'no host asked'})${skipped.length ? `; final hooks not run: ${skipped.join(', ')}` : ''}`, {
      step: 'sequence',
      durationMs: clock.monoMs() - t0,
      hosts: byStatus,
    });
  } else {
    record(ok === hostCount ? 'succeeded' : 'failed', `shutdown sequence finished: ${ok}/${hostCount} host(s) ${ctx.dryRun ? 'would act' : 'going down'}${summary ? ` (${summary})` : ''}`, {
      step: 'sequence',
      durationMs: clock.monoMs() - t0,
      hosts: byStatus,
    });
  }
  return report;
}

/** A promise for `signal`'s abort (never rejects), and its removal. */
function onAbort(signal: AbortSignal): { aborted: Promise<void>; dispose: () => void } {
  let dispose = (): void => undefined;
  const aborted = new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const listener = (): void => resolve();
    signal.addEventListener('abort', listener, { once: true });
    dispose = () => signal.removeEventListener('abort', listener);
  });
  return { aborted, dispose };
}

async function runOneHook(step: 'failover' | 'final', hook: HookDef, ctx: ActionContext, deps: ShutdownDeps, signal: AbortSignal, record: (s: string, m: string, d: Record<string, unknown>) => void): Promise<ActionResult> {
  const { clock } = deps;
  const t0 = clock.monoMs();
  const budgetMs = hookBudgetMs(hook);
  record('started', `${step} hook ${hook.name} (${hook.kind}) started`, { step, hook: hook.name, kind: hook.kind, budgetMs });
  let timer: TimerHandle | undefined;
  const abort = onAbort(signal);
  type Verdict = { kind: 'result'; result: ActionResult } | { kind: 'deadline' } | { kind: 'aborted' };
  const verdict = await Promise.race<Verdict>([
    deps.runHook(hook, ctx).then(
      (result) => ({ kind: 'result', result }),
      (err: unknown) => ({ kind: 'result', result: { status: 'failed', message: `${hook.name}: ${asError(err).message}`, durationMs: clock.monoMs() - t0, detail: {} } }),
    ),
    new Promise<Verdict>((resolve) => {
      timer = clock.setTimeout(() => resolve({ kind: 'deadline' }), budgetMs);
    }),
    abort.aborted.then((): Verdict => ({ kind: 'aborted' })),
  ]);
  clock.clearTimeout(timer);
  abort.dispose();
  const durationMs = clock.monoMs() - t0;
  let result: ActionResult;
  if (verdict.kind === 'result') result = verdict.result;
  else if (verdict.kind === 'deadline') result = { status: 'timeout', message: `${hook.name}: still running after ${budgetMs} ms (its own deadlines plus ${HOOK_GRACE_MS} ms): moving on without it`, durationMs, detail: {} };
  else result = { status: 'skipped', message: `${hook.name}: stopped waiting, the agent is stopping`, durationMs, detail: {} };
  record(result.status, `${step} hook ${hook.name} ${result.status}: ${result.message}`, { step, hook: hook.name, kind: hook.kind, durationMs: result.durationMs, ...result.detail });
  return result;
}

async function runGroup(
  group: ShutdownDef['groups'][number],
  ctx: ActionContext,
  deps: ShutdownDeps,
  signal: AbortSignal,
  record: (s: string, m: string, d: Record<string, unknown>) => void,
): Promise<GroupReport> {
  const { clock, config } = deps;
  const syncMs = config.hostSyncS * 1000;
  const t0 = clock.monoMs();
  const startedAtMs = clock.wallMs();
  const outcomes: Array<HostOutcome | undefined> = group.hosts.map(() => undefined);
  let waiting = true;
  let remaining = group.hosts.length;
  let allIn!: () => void;
  const allSettled = new Promise<void>((r) => (allIn = r));
  const hostDetail = (h: HostDef, o?: HostOutcome): Record<string, unknown> => ({ step: 'host', group: group.name, host: h.name, via: h.via, ...(o ? { afterMs: o.afterMs, ...o.detail } : {}) });

  record('started', `group ${group.name}: asking ${group.hosts.map((h) => h.name).join(', ')}${ctx.dryRun ? ' to confirm' : ''}; waiting up to ${config.hostSyncS} s`, { step: 'group', group: group.name, hosts: group.hosts.map((h) => h.name) });

  group.hosts.forEach((host, i) => {
    record('asked', `${host.name} (${host.via}) asked to ${ctx.dryRun ? 'confirm it would shut down' : 'shut down'}`, hostDetail(host));
    const onLater = (o: HostOutcome): void => record(o.status, `${host.name}: ${o.message}`, { ...hostDetail(host, o), step: 'host-later' });
    let asking: Promise<HostOutcome>;
    try {
      asking = deps.transports.forHost(host).shutdown(host, ctx, { test: ctx.dryRun, ackTimeoutMs: syncMs, signal, onLater });
    } catch (err) {
      asking = Promise.reject(err);
    }
    void asking
      .catch((err: unknown): HostOutcome => ({ host: host.name, status: 'failed', message: asError(err).message, afterMs: clock.monoMs() - t0 }))
      .then((o) => {
        if (!waiting) {
          // The group moved on at hostSyncS; the verdict still belongs in the trail.
          record(o.status, `${host.name} (after the group moved on): ${o.message}`, { ...hostDetail(host, o), step: 'host-late' });
          return;
        }
        outcomes[i] = o;
        record(o.status, `${host.name}: ${o.message}`, hostDetail(host, o));
        if (--remaining === 0) allIn();
      });
  });

  let timer: TimerHandle | undefined;
  const abort = onAbort(signal);
  const why = await Promise.race([
    allSettled.then(() => 'all' as const),
    new Promise<'sync'>((resolve) => {
      timer = clock.setTimeout(() => resolve('sync'), syncMs);
    }),
    abort.aborted.then(() => 'aborted' as const),
  ]);
  waiting = false;
  clock.clearTimeout(timer);
  abort.dispose();

  const afterMs = clock.monoMs() - t0;
  const hosts = group.hosts.map((h, i): HostOutcome => {
    const o = outcomes[i];
    if (o) return o;
    const timedOut: HostOutcome =
      why === 'aborted'
        ? { host: h.name, status: 'timeout', message: `stopped waiting after ${Math.round(afterMs)} ms: the agent is stopping`, afterMs }
        : { host: h.name, status: 'timeout', message: `no acknowledgement within hostSyncS (${config.hostSyncS} s)`, afterMs };
    record('timeout', `${h.name}: ${timedOut.message}`, hostDetail(h, timedOut));
    return timedOut;
  });
  const ok = hosts.filter((o) => HOST_OK.has(o.status)).length;
  record(ok === hosts.length ? 'succeeded' : 'failed', `group ${group.name}: ${ok}/${hosts.length} ${ctx.dryRun ? 'would act' : 'acknowledged'} after ${Math.round(afterMs)} ms${why === 'sync' ? ' (hostSyncS reached)' : why === 'aborted' ? ' (agent stopping)' : ''}`, {
    step: 'group',
    group: group.name,
    durationMs: afterMs,
    ended: why,
  });
  return { name: group.name, hosts, startedAtMs, endedAtMs: clock.wallMs() };
}
