/**
 * The contract between the action engine (policies, incidents, exec/http hooks, the shutdown
 * coordinator) and the ways a host is reached (host agent over MQTT, BMC over IPMI or Redfish).
 * Plain types, no I/O.
 */
import type { HostDef } from '../config/actions-schema.js';
import type { Level } from '../detection/types.js';

/** Why and for what an action runs; every record an action produces carries the incident id. */
export interface ActionContext {
  /** Stable id of the incident: one per zone escalation episode, from first level above normal to normal. */
  incident: string;
  zone: string;
  level: Level;
  /** Zone ETA to the critical temperature at the triggering evaluation, seconds; null when not rising. */
  etaS: number | null;
  /** The detector's reason text of the triggering event. */
  reason: string;
  /** Wall ms of the triggering event. */
  ts: number;
  /** Nothing that changes the world runs: hooks are not started, hosts are asked to confirm only. */
  dryRun: boolean;
}

export type ActionStatus = 'started' | 'succeeded' | 'failed' | 'timeout' | 'skipped' | 'inhibited' | 'dry-run';

/** The outcome of one action attempt (exec, http), as recorded in the event trail. */
export interface ActionResult {
  status: Exclude<ActionStatus, 'started'>;
  message: string;
  durationMs: number;
  /** exitCode, signal, outputTail, httpStatus, attempts … */
  detail: Record<string, unknown>;
}

/** What became of one host in a shutdown sequence. */
export interface HostOutcome {
  host: string;
  /**
   * acknowledged: the host agent accepted and started its local command, or the BMC accepted the soft
   * power-off; powered-off: the BMC reports power off; would-act: a dry run/test confirmed it could act;
   * rejected / failed / timeout / unreachable: it did not (the message says why).
   */
  status: 'acknowledged' | 'powered-off' | 'would-act' | 'rejected' | 'failed' | 'timeout' | 'unreachable';
  message: string;
  /** From the request to the acknowledgement (or the verdict), ms. */
  afterMs: number;
  detail?: Record<string, unknown>;
}

/**
 * One way of reaching hosts. `shutdown` asks for a graceful power-off and resolves once the host
 * acknowledged (or failed, or `ackTimeoutMs` passed): it never waits for the power to be off. What
 * follows (final report, power-state polling, ForceOff when allowed) is reported through `onLater`.
 * With `test: true` nothing changes: the host (or BMC) only confirms it would act (reachable,
 * credentials valid, command allowed).
 */
export interface HostTransport<H extends HostDef = HostDef> {
  shutdown(host: H, ctx: ActionContext, opts: { test: boolean; ackTimeoutMs: number; signal: AbortSignal; onLater?: (o: HostOutcome) => void }): Promise<HostOutcome>;
}
