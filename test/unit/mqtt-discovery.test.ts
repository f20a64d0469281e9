/**
 * Home Assistant discovery payloads (agent/outputs/mqtt-discovery.ts) against a schema written from
 * HA's documentation (integrations/mqtt, sensor.mqtt, binary_sensor.mqtt, sensor#device-class), the
 * topics the sink really publishes (agent/outputs/mqtt-layout.ts messagesFor), and the templates
 * rendered by real Jinja2 against the sink's real payloads.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { OutputContext, PointInfo } from '../../agent/outputs/context.js';
import { birthTopic, classify, discoveryMessages, discoveryNodeId, discoveryReaction, ownConfigFilter } from '../../agent/outputs/mqtt-discovery.js';
import { messagesFor, onlineStatus, statusTopic, stoppedStatus, willStatus } from '../../agent/outputs/mqtt-layout.js';
import type { OutboxEntry, OutboxRecord } from '../../agent/outputs/outbox.js';
import { renderHaTemplates } from '../helpers/ha-template.js';

const TS = Date.UTC(2026, 0, 1, 12);
const BASE = 'rackguard/s1/g1';
const points = new Map<string, PointInfo>([
  ['r1.temperature', { id: 'r1.temperature', deviceId: 'r1', unit: '°C', kind: 'temperature', zones: ['z1'] }],
  ['r1.humidity', { id: 'r1.humidity', deviceId: 'r1', unit: '%RH', kind: 'humidity', zones: [] }],
  ['c1.running', { id: 'c1.running', deviceId: 'c1', unit: '', kind: 'running', zones: [], chiller: { id: 'c1', role: 'running' } }],
  ['c1.alarm_code', { id: 'c1.alarm_code', deviceId: 'c1', unit: '', kind: 'alarm', zones: [], chiller: { id: 'c1', role: 'alarm' } }],
  ['pdu.energy', { id: 'pdu.energy', deviceId: 'pdu', unit: 'kWh', kind: 'other', zones: [] }],
  ['pdu.odd', { id: 'pdu.odd', deviceId: 'pdu', unit: 'furlongs', kind: 'other', zones: [] }],
]);
const context: OutputContext = { site: 's1', gateway: 'g1', points, zones: ['z1', 'cold aisle/b'] };
const OPTS = { base: BASE, prefix: 'homeassistant/', swVersion: '1.2.3' };
const evidence = { sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 0, k: 2, etaCriticalS: 120 };

// --- the schema, from the docs --------------------------------------------------------------------
const topic = z.string().regex(/^[^#+]+$/, 'a topic name, no wildcards');
const template = z.string().regex(/^\{\{.*\}\}$/s, 'a Jinja expression');
const availability = z
  .object({ topic, payload_available: z.string().optional(), payload_not_available: z.string().optional(), value_template: template.optional() })
  .strict();
const device = z
  .object({ identifiers: z.array(z.string().min(1)).min(1), name: z.string().min(1), manufacturer: z.string(), model: z.string(), sw_version: z.string() })
  .strict();
const origin = z.object({ name: z.string().min(1), sw_version: z.string().optional(), support_url: z.string().optional() }).strict();
const entity = {
  name: z.string().min(1),
  unique_id: z.string().min(1),
  default_entity_id: z.string().regex(/^(sensor|binary_sensor)\.[a-z0-9_]+$/),
  state_topic: topic,
  value_template: template,
  json_attributes_topic: topic.optional(),
  json_attributes_template: template.optional(),
  // `availability` (a list) must not be combined with `availability_topic` (sensor.mqtt): strict() forbids the latter.
  availability: z.array(availability).min(1),
  availability_mode: z.enum(['all', 'any', 'latest']).optional(),
  entity_category: z.enum(['diagnostic', 'config']).optional(),
  device,
  origin,
};
const SENSOR_CLASSES = ['temperature', 'humidity', 'voltage', 'current', 'power', 'frequency', 'energy', 'enum'] as const;
const sensorSchema = z
  .object({
    ...entity,
    device_class: z.enum(SENSOR_CLASSES).optional(),
    state_class: z.enum(['measurement', 'total', 'total_increasing']).optional(),
    unit_of_measurement: z.string().min(1).optional(),
    options: z.array(z.string()).min(1).optional(),
  })
  .strict()
  // sensor#device-class: the unit each class allows; enum takes options and neither unit nor state class.
  .refine((s) => s.device_class !== 'temperature' || ['°C', '°F', 'K'].includes(s.unit_of_measurement ?? ''), 'temperature needs °C, °F or K')
  .refine((s) => s.device_class !== 'humidity' || s.unit_of_measurement === '%', 'humidity needs %')
  .refine((s) => s.device_class !== 'energy' || (s.state_class !== 'measurement' && s.unit_of_measurement !== undefined), 'energy is total or total_increasing')
  .refine((s) => (s.device_class === 'enum') === (s.options !== undefined), 'options go with device_class enum only')
  .refine((s) => s.device_class !== 'enum' || (s.unit_of_measurement === undefined && s.state_class === undefined), 'an enum has no unit or state class');
const binarySchema = z
  .object({ ...entity, device_class: z.enum(['heat', 'problem', 'running']).optional(), payload_on: z.string(), payload_off: z.string() })
  .strict();

const rec = (seq: number, entry: OutboxEntry): OutboxRecord => ({ seq, cls: entry.type === 'sample' ? 'telemetry' : 'event', ts: TS, entry });

/** Every message the sink publishes for these points, zones and devices, in all the shapes it has. */
function sinkMessages(): Array<{ topic: string; payload: string; retain: boolean }> {
  const out = [
    { topic: statusTopic(BASE), payload: onlineStatus(TS, 30), retain: true },
    { topic: statusTopic(BASE), payload: stoppedStatus(TS), retain: true },
    { topic: statusTopic(BASE), payload: willStatus(), retain: true },
  ];
  let seq = 0;
  for (const p of points.values()) {
    for (const [value, quality] of [[1, 'good'], [0, 'good'], [22.5, 'stale'], [null, 'comm_error']] as const) {
      out.push(...messagesFor(rec(++seq, { type: 'sample', sample: { pointId: p.id, deviceId: p.deviceId, value, unit: p.unit, quality, ts: TS, mono: 0, ...(value === null ? { reason: 'timeout' } : {}) } }), BASE));
    }
    for (const state of ['online', 'offline', 'exceptions']) {
      out.push(...messagesFor(rec(++seq, { type: 'event', event: { kind: 'device_state', deviceId: p.deviceId, state, previous: 'unknown', ts: TS, ...(state === 'exceptions' ? { reason: 'exception 2' } : {}) } as never }), BASE));
    }
  }
  for (const zone of context.zones) {
    for (const level of ['normal', 'warning', 'alarm', 'critical'] as const) {
      out.push(...messagesFor(rec(++seq, { type: 'event', event: { kind: 'zone_level', zone, from: 'normal', level, reason: 'r', mono: 0, ts: TS, evidence } }), BASE));
    }
  }
  return out;
}

type Config = z.infer<typeof sensorSchema> | z.infer<typeof binarySchema>;
const configs = (): Array<{ topic: string; retain: boolean; body: Config }> => discoveryMessages(context, OPTS).map((m) => ({ topic: m.topic, retain: m.retain, body: JSON.parse(m.payload) as Config }));

describe('Home Assistant discovery payloads', () => {
  it('every config is retained, on <prefix>/<component>/<node_id>/<object_id>/config with ids HA accepts, and validates against the documented schema', () => {
    const all = configs();
    expect(all.length).toBe(points.size + 3 * context.zones.length + 3 /* devices r1, c1, pdu */);
    for (const c of all) {
      expect(c.retain).toBe(true);
      const m = /^homeassistant\/(sensor|binary_sensor)\/([A-Za-z0-9_-]+)\/([A-Za-z0-9_-]+)\/config$/.exec(c.topic);
      expect(m, c.topic).not.toBeNull();
      const schema = m![1] === 'sensor' ? sensorSchema : binarySchema;
      const r = schema.safeParse(c.body);
      expect(r.success, `${c.topic}: ${r.error?.message}`).toBe(true);
      expect(c.body.default_entity_id.startsWith(`${m![1]}.`)).toBe(true);
      expect(c.body.device).toEqual({ identifiers: ['rackguard_s1_g1'], name: 'rackguard s1/g1', manufacturer: 'rackguard', model: 'rackguard gateway', sw_version: '1.2.3' });
    }
    expect(new Set(all.map((c) => c.body.unique_id)).size).toBe(all.length);
    expect(new Set(all.map((c) => c.topic)).size).toBe(all.length);
  });

  it('device classes: temperature °C, humidity % (from %RH), energy total_increasing, running/alarm points as binary sensors, an unknown unit without class', () => {
    const byName = new Map(configs().map((c) => [c.body.name, c]));
    expect(byName.get('r1.temperature')!.body).toMatchObject({ device_class: 'temperature', state_class: 'measurement', unit_of_measurement: '°C' });
    expect(byName.get('r1.humidity')!.body).toMatchObject({ device_class: 'humidity', state_class: 'measurement', unit_of_measurement: '%' });
    expect(byName.get('pdu.energy')!.body).toMatchObject({ device_class: 'energy', state_class: 'total_increasing', unit_of_measurement: 'kWh' });
    expect(byName.get('pdu.odd')!.body).toMatchObject({ state_class: 'measurement', unit_of_measurement: 'furlongs' });
    expect(byName.get('pdu.odd')!.body).not.toHaveProperty('device_class');
    expect(byName.get('c1.running')!.topic).toContain('/binary_sensor/');
    expect(byName.get('c1.running')!.body).toMatchObject({ device_class: 'running' });
    expect(byName.get('c1.alarm_code')!.body).toMatchObject({ device_class: 'problem' });
    expect(byName.get('zone z1 alarm')!.body).toMatchObject({ device_class: 'heat', state_topic: `${BASE}/zones/z1/state` });
    expect(byName.get('zone z1 critical')!.body).toMatchObject({ device_class: 'problem' });
    expect(byName.get('zone z1 level')!.body).toMatchObject({ device_class: 'enum', options: ['normal', 'warning', 'alarm', 'critical'] });
    expect(classify({ kind: 'temperature', unit: 'degC' })).toEqual({ component: 'sensor', stateClass: 'measurement' });
    // A zone id with characters HA does not take in a topic id still gets a valid one.
    expect(configs().some((c) => c.topic === 'homeassistant/binary_sensor/rackguard_s1_g1/zone_cold_aisle_b_alarm/config')).toBe(true);
  });

  it('every topic a config names is one the sink publishes; point entities need the gateway and their device available', () => {
    const published = new Set(sinkMessages().map((m) => m.topic));
    for (const { topic: t, body } of configs()) {
      const named = [body.state_topic, body.json_attributes_topic, ...body.availability.map((a) => a.topic)].filter((x): x is string => x !== undefined);
      for (const n of named) expect(published.has(n), `${t} names ${n}`).toBe(true);
      expect(body.availability[0]).toEqual({ topic: `${BASE}/status`, value_template: '{{ value_json.state }}', payload_available: 'online', payload_not_available: 'offline' });
    }
    const temp = configs().find((c) => c.body.name === 'r1.temperature')!.body;
    expect(temp.availability_mode).toBe('all');
    expect(temp.availability[1]).toEqual({ topic: `${BASE}/devices/r1/availability`, payload_available: 'online', payload_not_available: 'offline' });
  });

  it('rendered by Jinja2 against the real payloads: good readings are numbers, any other quality is None (unknown in HA); zones and status map as documented', () => {
    const msgs = sinkMessages();
    const pairs: Array<[string, string]> = [];
    const expected: Array<(out: string, payload: Record<string, unknown>, what: string) => void> = [];
    for (const { topic: t, body } of configs()) {
      const check = (tpl: string | undefined, on: string, verify: (out: string, payload: Record<string, unknown>, what: string) => void): void => {
        if (tpl === undefined) return;
        const onTopic = msgs.filter((m) => m.topic === on && m.payload !== 'online' && m.payload !== 'offline');
        for (const m of onTopic) {
          pairs.push([tpl, m.payload]);
          expected.push((out, _p, what) => verify(out, JSON.parse(m.payload) as Record<string, unknown>, `${what} ${t} on ${m.payload}`));
        }
      };
      const isBinary = t.includes('/binary_sensor/');
      check(body.value_template, body.state_topic, (out, p, what) => {
        if ('quality' in p) {
          if (p.quality !== 'good') expect(out, what).toBe('None');
          else if (isBinary) expect(out, what).toBe(p.value ? 'ON' : 'OFF');
          else expect(Number(out), what).toBe(p.value);
        } else if ('level' in p) {
          if (body.name.endsWith('level')) expect(out, what).toBe(p.level);
          else if (body.name.endsWith('critical')) expect(out, what).toBe(p.level === 'critical' ? 'ON' : 'OFF');
          else expect(out, what).toBe(p.level === 'alarm' || p.level === 'critical' ? 'ON' : 'OFF');
        } else expect(out, what).toBe(p.state);
      });
      check(body.json_attributes_template, body.json_attributes_topic ?? '', (out, _p, what) => expect(() => JSON.parse(out) as unknown, what).not.toThrow());
      for (const a of body.availability) check(a.value_template, a.topic, (out, p, what) => expect(out, what).toBe(p.state));
    }
    expect(pairs.length).toBeGreaterThan(100);
    const rendered = renderHaTemplates(pairs);
    rendered.forEach((r, i) => {
      expect('error' in r ? r.error : '', pairs[i]![0]).toBe('');
      if ('ok' in r) expected[i]!(r.ok, {}, 'rendered');
    });
    // The binary sensors' outputs are exactly their payload_on / payload_off (or None).
    for (const { body } of configs()) if ('payload_on' in body) expect([body.payload_on, body.payload_off]).toEqual(['ON', 'OFF']);
  });

  it('reactions: HA birth `online` re-publishes; a stale retained config of ours is cleared; ours, others and empty ones are left alone', () => {
    const node = discoveryNodeId('s1', 'g1');
    const current = new Set(discoveryMessages(context, OPTS).map((m) => m.topic));
    expect(birthTopic('homeassistant/')).toBe('homeassistant/status');
    expect(ownConfigFilter('homeassistant', 's1', 'g1')).toBe('homeassistant/+/rackguard_s1_g1/+/config');
    expect(discoveryReaction('homeassistant/status', 'online', 'homeassistant', current, node)).toEqual({ kind: 'republish' });
    expect(discoveryReaction('homeassistant/status', 'offline', 'homeassistant', current, node)).toEqual({ kind: 'none' });
    const gone = 'homeassistant/sensor/rackguard_s1_g1/r9_temperature/config';
    expect(discoveryReaction(gone, '{"name":"r9"}', 'homeassistant', current, node)).toEqual({ kind: 'clear', topic: gone });
    expect(discoveryReaction(gone, '', 'homeassistant', current, node)).toEqual({ kind: 'none' });
    expect(discoveryReaction([...current][0]!, '{}', 'homeassistant', current, node)).toEqual({ kind: 'none' });
    expect(discoveryReaction('homeassistant/sensor/rackguard_s1_g2/r9_temperature/config', '{}', 'homeassistant', current, node)).toEqual({ kind: 'none' });
  });
});
