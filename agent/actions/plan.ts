/**
 * The drill's view of the actions: which would fire, in order, and when, for a list of detector
 * events (a drill's or a replay's). Pure, and built on the engine's own rule (policy.ts), so the
 * drill shows what the agent would do: incidents, once per incident per level, lower levels first,
 * the safety gate, onClear. Nothing runs.
 *
 * Times: `atS` is when the action would be triggered; `latestAtS` is the latest it would start,
 * because a zone's actions run one after the other and each may use its whole budget (exec: timeout
 * and kill grace; http: every attempt and backoff; shutdown: failover, hostSyncS per group, final).
 */
import type { ActionDef, ActionsConfig, HookDef } from '../config/actions-schema.js';
import type { ZoneDef } from '../config/model.js';
import type { TimedEvent } from '../detection/replay.js';
import type { Level } from '../detection/types.js';
import { dueLevels } from './policy.js';
import { safeUrl } from './webhook.js';

export interface PlannedAction {
  atS: number;
  latestAtS: number;
  zone: string;
  /** `<zone>#<n>`: the drill's incident number (the agent's ids carry wall time). */
  incident: string;
  level: Level;
  action: string;
  actionKind: ActionDef['kind'] | 'shutdown-step';
  /** would-run, or skipped (the safety gate refused it; `why` says why). */
  status: 'would-run' | 'skipped';
  what: string;
  why?: string;
}

/** The longest a hook may take by its own settings, s. */
export function hookBudgetS(h: HookDef): number {
  if (h.kind === 'exec') return h.timeoutS + h.killGraceS;
  return (h.retries + 1) * h.timeoutS + (h.retryInitialMs * (2 ** h.retries - 1)) / 1000;
}

function what(a: ActionDef): string {
  if (a.kind === 'exec') return `exec ${a.argv.map((x) => JSON.stringify(x)).join(' ')}`;
  if (a.kind === 'http') return `POST ${safeUrl(a.url)} (${a.format})`;
  return 'coordinated shutdown';
}

export function planActions(config: ActionsConfig, zones: readonly ZoneDef[], events: readonly TimedEvent[]): PlannedAction[] {
  const out: PlannedAction[] = [];
  const zoneK = new Map(zones.map((z) => [z.id, z.detection.k]));
  const blind = new Map<string, boolean>();
  const incidents = new Map<string, { id: string; handled: Level[]; fired: number[] }>();
  const queueFreeAtS = new Map<string, number>();
  const counter = new Map<string, number>();

  const add = (p: Omit<PlannedAction, 'latestAtS'>, budgetS: number): void => {
    const latestAtS = Math.max(p.atS, queueFreeAtS.get(p.zone) ?? 0);
    if (p.status === 'would-run') queueFreeAtS.set(p.zone, latestAtS + budgetS);
    out.push({ ...p, latestAtS });
  };
  const addAction = (a: ActionDef, base: Omit<PlannedAction, 'latestAtS' | 'action' | 'actionKind' | 'what' | 'status'>): void => {
    if (a.kind !== 'shutdown' || !config.shutdown) {
      add({ ...base, action: a.name, actionKind: a.kind, status: 'would-run', what: what(a) }, a.kind === 'shutdown' ? 0 : hookBudgetS(a));
      return;
    }
    const s = config.shutdown;
    add({ ...base, action: a.name, actionKind: 'shutdown', status: 'would-run', what: `coordinated shutdown: ${s.failover.length} failover hook(s), ${s.groups.length} group(s), ${s.final.length} final hook(s)` }, 0);
    for (const h of s.failover) add({ ...base, action: `${a.name}/failover/${h.name}`, actionKind: 'shutdown-step', status: 'would-run', what: what(h) }, hookBudgetS(h));
    for (const g of s.groups) add({ ...base, action: `${a.name}/group/${g.name}`, actionKind: 'shutdown-step', status: 'would-run', what: `ask ${g.hosts.map((h) => `${h.name} (${h.via})`).join(', ')}; wait up to ${s.hostSyncS} s` }, s.hostSyncS);
    for (const h of s.final) add({ ...base, action: `${a.name}/final/${h.name}`, actionKind: 'shutdown-step', status: 'would-run', what: what(h) }, hookBudgetS(h));
  };

  for (const { timeS, event: e } of events) {
    if (e.kind === 'zone_blind') {
      blind.set(e.zone, e.blind);
      continue;
    }
    let inc = incidents.get(e.zone);
    if (e.level === 'normal') {
      if (!inc) continue;
      incidents.delete(e.zone);
      for (const pi of inc.fired) {
        for (const h of config.policies[pi]?.onClear ?? []) addAction(h, { atS: timeS, zone: e.zone, incident: inc.id, level: 'normal' });
      }
      continue;
    }
    if (!inc) {
      const n = (counter.get(e.zone) ?? 0) + 1;
      counter.set(e.zone, n);
      inc = { id: `${e.zone}#${n}`, handled: [], fired: [] };
      incidents.set(e.zone, inc);
    }
    for (const due of dueLevels(config, inc.handled, e, zoneK.get(e.zone) ?? e.evidence.k, blind.get(e.zone) === true)) {
      for (const pi of due.policies) {
        for (const a of config.policies[pi]!.actions) {
          if (due.refused !== undefined) add({ atS: timeS, zone: e.zone, incident: inc.id, level: due.level, action: a.name, actionKind: a.kind, status: 'skipped', what: what(a), why: `safety gate: ${due.refused}` }, 0);
          else addAction(a, { atS: timeS, zone: e.zone, incident: inc.id, level: due.level });
        }
      }
      if (due.refused !== undefined) continue;
      inc.handled.push(due.level);
      for (const pi of due.policies) if (!inc.fired.includes(pi)) inc.fired.push(pi);
    }
  }
  return out;
}

/** One line per planned action for the drill's text output. */
export function plannedLine(p: PlannedAction): string {
  const late = p.latestAtS > p.atS ? ` (at the latest ${Math.round(p.latestAtS)} s)` : '';
  return `action ${Math.round(p.atS)} s${late} ${p.zone} ${p.level} ${p.incident}: ${p.action} ${p.status}: ${p.what}${p.why ? ` (${p.why})` : ''}`;
}
