/**
 * Which policies are due for a zone event: the one rule shared by the engine (which runs them) and
 * the drill's planner (which lists them). Pure.
 *
 * A zone reaching a level fires that level's policies and those of every lower level not yet handled
 * in the incident, in ascending order: a jump to critical still pages (alarm) before it shuts down.
 * A level whose policies are gated (critical, or any with a shutdown action) and refused by the
 * safety gate is returned with the reason and must not be marked handled.
 */
import type { ActionsConfig } from '../config/actions-schema.js';
import { levelRank, type Level, type ZoneLevelEvent } from '../detection/types.js';
import { criticalGate } from './gate.js';

export const ACTION_LEVELS: readonly Level[] = ['warning', 'alarm', 'critical'];

/** Indices of the policies for `zone` at `level`, in config order. */
export function policiesFor(config: Pick<ActionsConfig, 'policies'>, zone: string, level: Level): number[] {
  const out: number[] = [];
  config.policies.forEach((p, i) => {
    if (p.level === level && (p.zones.includes('*') || p.zones.includes(zone))) out.push(i);
  });
  return out;
}

export interface DueLevel {
  level: Level;
  policies: number[];
  /** Set when the safety gate refused this level: its actions are skipped, and it stays due. */
  refused?: string;
}

export function dueLevels(config: Pick<ActionsConfig, 'policies'>, handled: readonly Level[], e: ZoneLevelEvent, zoneK: number, blind: boolean): DueLevel[] {
  const out: DueLevel[] = [];
  for (const level of ACTION_LEVELS) {
    if (levelRank(level) > levelRank(e.level) || handled.includes(level)) continue;
    const policies = policiesFor(config, e.zone, level);
    if (policies.length === 0) continue;
    const gated = level === 'critical' || policies.some((pi) => config.policies[pi]!.actions.some((a) => a.kind === 'shutdown'));
    if (gated) {
      const verdict = criticalGate(e, zoneK, blind);
      if (!verdict.pass) {
        out.push({ level, policies, refused: verdict.why });
        continue;
      }
    }
    out.push({ level, policies });
  }
  return out;
}
