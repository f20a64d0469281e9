/**
 * The MQTT contract, as plain functions over plain data (no client, no clock): which topics an outbox
 * record becomes and what their payloads hold. README "Outputs" and docs/mqtt.md describe the same.
 *
 * Topics under `base` (default `rackguard/<site>/<gateway>`):
 *   status                         retained JSON { state: online|offline, ts, tsMs, refreshS?, reason? };
 *                                  `online` is republished every refreshS, so a consumer can tell a stale
 *                                  `online` a restarted broker replays; the last will is { state: offline }
 *   sensors/<point id>             JSON { value, unit, quality, ts (ISO), tsMs, reason?, clockUnsynced? }
 *   devices/<device>/availability  retained `online` / `offline` (values flow or not; for Home Assistant)
 *   devices/<device>/state         retained JSON { state, previous, reason?, ts, tsMs }: the device state
 *                                  itself (online, failing, offline, exceptions, or any state added later)
 *   zones/<zone>/state             retained JSON { level, from, reason, ts, tsMs, evidence }
 *   zones/<zone>/blind             retained JSON { blind, reason, ts, tsMs, evidence }
 *   events                         JSON of every detector, device, action and outputs event, plus tsIso
 */
import type { OutboxRecord } from './outbox.js';

export interface MqttMessage {
  topic: string;
  payload: string;
  retain: boolean;
  /** Events and retained states go at QoS 1 whatever the telemetry QoS. */
  qos1?: boolean;
}

/** The topic root: `{site}` and `{gateway}` replaced, no trailing slash. */
export function resolveBaseTopic(template: string, site: string, gateway: string): string {
  return template.replaceAll('{site}', site).replaceAll('{gateway}', gateway).replace(/\/+$/, '');
}

export function statusTopic(base: string): string {
  return `${base}/status`;
}

export interface StatusPayload {
  state: 'online' | 'offline';
  /** When the gateway said so (ISO and epoch ms); absent in the last will, which the broker sends. */
  ts?: string;
  tsMs?: number;
  /** For `online`: it is republished at least this often, seconds; older than about 2× this is stale. */
  refreshS?: number;
  /** For `offline`: `stopped` (clean stop) or `connection lost` (the last will). */
  reason?: string;
}

/** The retained `online` status, stamped with the wall time it was sent. */
export function onlineStatus(wallMs: number, refreshS: number): string {
  const body: StatusPayload = { state: 'online', ts: new Date(wallMs).toISOString(), tsMs: wallMs, refreshS };
  return JSON.stringify(body);
}

/** The retained `offline` a clean stop publishes. */
export function stoppedStatus(wallMs: number): string {
  const body: StatusPayload = { state: 'offline', ts: new Date(wallMs).toISOString(), tsMs: wallMs, reason: 'stopped' };
  return JSON.stringify(body);
}

/** The last will: the broker publishes it when our connection dies, at a time we cannot know. */
export function willStatus(): string {
  const body: StatusPayload = { state: 'offline', reason: 'connection lost' };
  return JSON.stringify(body);
}

/** Device states whose values still flow: `failing` is a device that missed some polls but answers. */
const AVAILABLE_STATES: ReadonlySet<string> = new Set(['online', 'failing']);

/**
 * The availability word for a device state: `online` while its values flow, `offline` for any other
 * state (offline, a device that answers only with Modbus exceptions, or a state added later: no values
 * either way). `unknown` publishes nothing (no judgement yet). The state itself goes to
 * `devices/<device>/state`, so an operator sees *why* (exceptions point at the point map, not the cable).
 */
export function availabilityPayload(state: string): 'online' | 'offline' | undefined {
  if (state === 'unknown') return undefined;
  return AVAILABLE_STATES.has(state) ? 'online' : 'offline';
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** The MQTT messages one outbox record becomes, in the order they are published. */
export function messagesFor(rec: OutboxRecord, base: string): MqttMessage[] {
  const e = rec.entry;
  if (e.type === 'sample') {
    const s = e.sample;
    // clockUnsynced: stamped before the wall clock was synchronised (ts may be days off; see README "Clock").
    const body = { value: s.value, unit: s.unit, quality: s.quality, ts: iso(s.ts), tsMs: s.ts, ...(s.reason !== undefined ? { reason: s.reason } : {}), ...(s.clockUnsynced ? { clockUnsynced: true } : {}) };
    return [{ topic: `${base}/sensors/${s.pointId}`, payload: JSON.stringify(body), retain: false }];
  }
  const ev = e.event;
  const out: MqttMessage[] = [];
  switch (ev.kind) {
    case 'zone_level':
      out.push({ topic: `${base}/zones/${ev.zone}/state`, payload: JSON.stringify({ level: ev.level, from: ev.from, reason: ev.reason, ts: iso(ev.ts), tsMs: ev.ts, evidence: ev.evidence }), retain: true });
      break;
    case 'zone_blind':
      out.push({ topic: `${base}/zones/${ev.zone}/blind`, payload: JSON.stringify({ blind: ev.blind, reason: ev.reason, ts: iso(ev.ts), tsMs: ev.ts, evidence: ev.evidence }), retain: true });
      break;
    case 'device_state': {
      const payload = availabilityPayload(ev.state);
      if (payload !== undefined) {
        out.push({ topic: `${base}/devices/${ev.deviceId}/availability`, payload, retain: true });
        // `detail` (e.g. the register and exception code) is passed on when acquisition gives one.
        const detail = (ev as { detail?: unknown }).detail;
        const body = { state: ev.state, previous: ev.previous, ...(ev.reason !== undefined ? { reason: ev.reason } : {}), ...(detail !== undefined ? { detail } : {}), ts: iso(ev.ts), tsMs: ev.ts };
        out.push({ topic: `${base}/devices/${ev.deviceId}/state`, payload: JSON.stringify(body), retain: true });
      }
      break;
    }
    default:
      break;
  }
  out.push({ topic: `${base}/events`, payload: JSON.stringify({ ...ev, tsIso: iso(ev.ts), ...(e.clockUnsynced ? { clockUnsynced: true } : {}) }), retain: false, qos1: true });
  return out;
}
