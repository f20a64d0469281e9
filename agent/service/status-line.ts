/**
 * The one line `systemctl status` shows (sd_notify STATUS=): what a person checking the service wants
 * first. For example "3 zones normal, 12/12 devices online, outbox 0 behind", or
 * "1 zone alarm (hall-b), 2 normal, 11/12 devices online (r7 offline), outbox 5210 behind". Pure.
 */
import type { DeviceHealth } from '../acquisition/types.js';
import type { ZoneStatus } from '../detection/types.js';
import type { OutputsStats } from '../observe/state.js';
import type { Agent } from '../app.js';

const LEVEL_ORDER = ['critical', 'alarm', 'warning', 'normal'] as const;
/** Names listed in the line at most; the rest is a count (the line must stay one line). */
const MAX_NAMES = 3;

function names(ids: string[]): string {
  return ids.length <= MAX_NAMES ? ids.join(', ') : `${ids.slice(0, MAX_NAMES).join(', ')} +${ids.length - MAX_NAMES}`;
}

export function statusLine(zones: readonly ZoneStatus[], health: readonly DeviceHealth[], outputs: OutputsStats | undefined, prefix?: string): string {
  const parts: string[] = [];
  if (prefix) parts.push(prefix);
  if (zones.length > 0) {
    const byLevel: string[] = [];
    for (const level of LEVEL_ORDER) {
      const ids = zones.filter((z) => z.level === level).map((z) => z.zone);
      if (ids.length === 0) continue;
      const n = byLevel.length === 0 ? `${ids.length} zone${ids.length === 1 ? '' : 's'} ${level}` : `${ids.length} ${level}`;
      byLevel.push(level === 'normal' ? n : `${n} (${names(ids)})`);
    }
    const blind = zones.filter((z) => z.blind).map((z) => z.zone);
    if (blind.length > 0) byLevel.push(`${blind.length} blind (${names(blind)})`);
    parts.push(byLevel.join(', '));
  } else {
    parts.push('no zones');
  }
  if (health.length > 0) {
    const down = health.filter((h) => h.state !== 'online');
    const online = health.length - down.length;
    const unknownOnly = down.length > 0 && down.every((h) => h.state === 'unknown');
    parts.push(`${online}/${health.length} devices online${down.length > 0 && !unknownOnly ? ` (${names(down.map((h) => `${h.deviceId} ${h.state}`))})` : ''}`);
  }
  if (outputs?.outbox) {
    const depths = Object.values(outputs.sinks).map((s) => s.depth);
    const behind = depths.length > 0 ? Math.max(...depths) : outputs.outbox.rows + outputs.outbox.pending;
    parts.push(`outbox ${behind} behind${outputs.outbox.state === 'open' ? '' : ` (${outputs.outbox.state})`}`);
  }
  return parts.join(', ');
}

/** The status line of a running agent. */
export function agentStatusLine(agent: Pick<Agent, 'zones' | 'health' | 'outputsStats'>, prefix?: string): string {
  return statusLine(agent.zones(), agent.health(), agent.outputsStats(), prefix);
}
