/**
 * STUB (act-engine's branch only): the coordinated shutdown is act-shutdown's file; this stub has the
 * same exported signatures so the engine compiles and is tested without it. act-shutdown's file wins
 * at merge. It records the sequence as skipped and reaches no host.
 */
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { HookDef, ShutdownDef } from '../config/actions-schema.js';
import type { ActionEvent } from '../outputs/events.js';
import type { TransportRegistry } from './transports.js';
import type { ActionContext, ActionResult, HostOutcome } from './types.js';

export type ShutdownRecord = Omit<ActionEvent, 'kind' | 'ts'> & { incident: string };

export interface ShutdownDeps {
  config: ShutdownDef;
  transports: TransportRegistry;
  runHook: (hook: HookDef, ctx: ActionContext) => Promise<ActionResult>;
  record: (e: ShutdownRecord) => void;
  clock: Clock;
  logger: Logger;
}

export interface GroupReport {
  name: string;
  hosts: HostOutcome[];
  startedAtMs: number;
  endedAtMs: number;
}

export interface ShutdownReport {
  groups: GroupReport[];
  failover: ActionResult[];
  final: ActionResult[];
  aborted: boolean;
}

export async function runShutdown(ctx: ActionContext, deps: ShutdownDeps, _signal: AbortSignal): Promise<ShutdownReport> {
  deps.record({ action: 'shutdown', status: 'skipped', zone: ctx.zone, incident: ctx.incident, message: 'shutdown coordinator not built on this branch (stub)' });
  return { groups: [], failover: [], final: [], aborted: false };
}
