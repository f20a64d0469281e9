/**
 * Home Assistant MQTT discovery (issue 10, item 2), as plain functions over plain data: the retained
 * config messages that make every point, zone and Modbus device of a gateway appear in Home Assistant
 * as entities of one HA device, and how the sink reacts to what it hears on the discovery topics.
 * The MQTT sink (./mqtt.ts) publishes them on every connect when `outputs.mqtt.homeAssistantDiscovery`.
 *
 * Keys and semantics checked against Home Assistant's documentation:
 *   https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery      topic `<prefix>/<component>/<node_id>/<object_id>/config`,
 *                                                                        retained, `device`/`origin` blocks, an empty retained
 *                                                                        payload removes the entity, birth message `<prefix>/status`
 *   https://www.home-assistant.io/integrations/sensor.mqtt/              state_topic, value_template, unit_of_measurement,
 *                                                                        device_class, state_class, availability list +
 *                                                                        availability_mode (all: every topic must say available),
 *                                                                        json_attributes_topic / _template
 *   https://www.home-assistant.io/integrations/binary_sensor.mqtt/       payload_on / payload_off, device_class (heat, problem, running)
 *   https://www.home-assistant.io/integrations/sensor/#device-class      temperature (°C, °F, K), humidity (%), enum + options
 * Two behaviours of HA's MQTT code we rely on (home-assistant/core components/mqtt/sensor.py and
 * binary_sensor.py): a template that renders `None` sets the state to unknown (PAYLOAD_NONE), so a
 * reading whose quality is not good never shows as a number; and `object_id` is deprecated since
 * 2025.10 (ignored from 2026.4) in favour of `default_entity_id`, which we use.
 *
 * Topics the configs point at are the sink's own (./mqtt-layout.ts), under `base`:
 *   sensors/<point>               JSON { value, unit, quality, ts, tsMs }   sensor / binary_sensor per point
 *   zones/<zone>/state            retained JSON { level, from, reason, … }  enum sensor + alarm / critical binary sensors
 *   devices/<device>/state        retained JSON { state, previous, … }      diagnostic sensor per Modbus device
 *   devices/<device>/availability retained online / offline                 second availability topic of that device's points
 *   status                        retained JSON { state: online|offline, … } availability of every entity
 */
import { LEVELS } from '../detection/types.js';
import type { OutputContext, PointInfo } from './context.js';
import { statusTopic, type MqttMessage } from './mqtt-layout.js';

export interface DiscoveryOptions {
  /** The sink's topic root (resolved `baseTopic`). */
  base: string;
  /** HA's discovery prefix, `homeassistant` by default (trailing slashes ignored). */
  prefix: string;
  /** rackguard's version, shown by HA as the device's and the origin's sw_version. */
  swVersion: string;
}

/** What Home Assistant accepts in a discovery topic's node_id and object_id. */
const topicId = (s: string): string => s.replace(/[^A-Za-z0-9_-]/g, '_');

/** The node_id of a gateway: every entity of it sits under `<prefix>/<component>/<node_id>/`. */
export function discoveryNodeId(site: string, gateway: string): string {
  return topicId(`rackguard_${site}_${gateway}`);
}

const cleanPrefix = (prefix: string): string => prefix.replace(/\/+$/, '');

/** HA's birth message topic: `online` there means HA (re)started and wants the configs again. */
export function birthTopic(prefix: string): string {
  return `${cleanPrefix(prefix)}/status`;
}

/** A filter matching every config this gateway may have published (to clear the ones no longer configured). */
export function ownConfigFilter(prefix: string, site: string, gateway: string): string {
  return `${cleanPrefix(prefix)}/+/${discoveryNodeId(site, gateway)}/+/config`;
}

/** A good reading, else `None`: HA sets the state to unknown on `None` (a failed read is never a number). */
const GOOD_VALUE = "{{ value_json.value if value_json.quality == 'good' else None }}";
/** The same for a 0/1 point: ON / OFF, or `None` (unknown) when the reading is not good. */
const GOOD_BOOL = "{{ (('ON' if value_json.value else 'OFF') if value_json.quality == 'good' else None) }}";
/** Why a reading is unknown is worth seeing in HA: quality and the sample's own time as attributes. */
const SAMPLE_ATTRIBUTES = "{{ {'quality': value_json.quality, 'value': value_json.value, 'ts': value_json.ts} | tojson }}";

interface SensorClass {
  component: 'sensor' | 'binary_sensor';
  deviceClass?: string;
  stateClass?: 'measurement' | 'total_increasing';
  /** The unit HA expects for the device class (e.g. `%` for humidity, whatever the profile writes). */
  unit?: string;
}

/** Units HA accepts for a device class (sensor/#device-class); another unit gets no device class. */
const UNIT_CLASSES: Readonly<Record<string, { deviceClass: string; stateClass: 'measurement' | 'total_increasing'; unit?: string }>> = {
  V: { deviceClass: 'voltage', stateClass: 'measurement' },
  A: { deviceClass: 'current', stateClass: 'measurement' },
  W: { deviceClass: 'power', stateClass: 'measurement' },
  kW: { deviceClass: 'power', stateClass: 'measurement' },
  Hz: { deviceClass: 'frequency', stateClass: 'measurement' },
  // HA refuses state_class measurement for energy: a meter only counts up.
  kWh: { deviceClass: 'energy', stateClass: 'total_increasing' },
  Wh: { deviceClass: 'energy', stateClass: 'total_increasing' },
};

/** Which HA entity a point becomes. */
export function classify(p: Pick<PointInfo, 'kind' | 'unit'>): SensorClass {
  switch (p.kind) {
    case 'running':
      return { component: 'binary_sensor', deviceClass: 'running' };
    case 'alarm':
      return { component: 'binary_sensor', deviceClass: 'problem' };
    case 'temperature':
      return ['°C', '°F', 'K'].includes(p.unit) ? { component: 'sensor', deviceClass: 'temperature', stateClass: 'measurement', unit: p.unit } : { component: 'sensor', stateClass: 'measurement' };
    case 'humidity':
      // Profiles say `%RH`; HA's humidity class only takes `%`.
      return ['%', '%RH', '% RH'].includes(p.unit) ? { component: 'sensor', deviceClass: 'humidity', stateClass: 'measurement', unit: '%' } : { component: 'sensor', stateClass: 'measurement' };
    default: {
      const u = UNIT_CLASSES[p.unit];
      return u ? { component: 'sensor', deviceClass: u.deviceClass, stateClass: u.stateClass } : { component: 'sensor', stateClass: 'measurement' };
    }
  }
}

/**
 * Every discovery config of the gateway, retained: one entity per point, three per zone (level,
 * alarm, critical) and one diagnostic per Modbus device, all in one HA device for the gateway.
 */
export function discoveryMessages(context: OutputContext, opts: DiscoveryOptions): MqttMessage[] {
  const { site, gateway, points, zones } = context;
  const { base, swVersion } = opts;
  const prefix = cleanPrefix(opts.prefix);
  const node = discoveryNodeId(site, gateway);
  const device = { identifiers: [node], name: `rackguard ${site}/${gateway}`, manufacturer: 'rackguard', model: 'rackguard gateway', sw_version: swVersion };
  const origin = { name: 'rackguard', sw_version: swVersion };
  // The status payload is JSON: HA compares the template's result with payload_available.
  const gatewayAvailability = { topic: statusTopic(base), value_template: '{{ value_json.state }}', payload_available: 'online', payload_not_available: 'offline' };
  const out: MqttMessage[] = [];
  const config = (component: string, object: string, body: Record<string, unknown>): void => {
    const id = `${node}_${object}`;
    out.push({
      topic: `${prefix}/${component}/${node}/${object}/config`,
      retain: true,
      payload: JSON.stringify({ ...body, unique_id: id, default_entity_id: `${component}.${id.toLowerCase()}`, device, origin }),
    });
  };

  for (const p of points.values()) {
    const c = classify(p);
    const state = `${base}/sensors/${p.id}`;
    const common = {
      name: p.id,
      state_topic: state,
      json_attributes_topic: state,
      json_attributes_template: SAMPLE_ATTRIBUTES,
      // Both the gateway and the Modbus device must be up: a value from a gateway that went away or a
      // device that stopped answering is not current.
      availability: [gatewayAvailability, { topic: `${base}/devices/${p.deviceId}/availability`, payload_available: 'online', payload_not_available: 'offline' }],
      availability_mode: 'all',
      ...(c.deviceClass ? { device_class: c.deviceClass } : {}),
    };
    if (c.component === 'binary_sensor') {
      config('binary_sensor', topicId(p.id), { ...common, value_template: GOOD_BOOL, payload_on: 'ON', payload_off: 'OFF' });
    } else {
      const unit = c.unit ?? p.unit;
      config('sensor', topicId(p.id), { ...common, value_template: GOOD_VALUE, ...(c.stateClass ? { state_class: c.stateClass } : {}), ...(unit ? { unit_of_measurement: unit } : {}) });
    }
  }

  for (const z of zones) {
    const state = `${base}/zones/${z}/state`;
    const common = {
      state_topic: state,
      json_attributes_topic: state,
      json_attributes_template: "{{ {'level': value_json.level, 'from': value_json.from, 'reason': value_json.reason, 'ts': value_json.ts} | tojson }}",
      availability: [gatewayAvailability],
    };
    const object = topicId(`zone_${z}`);
    config('sensor', `${object}_level`, { ...common, name: `zone ${z} level`, device_class: 'enum', options: [...LEVELS], value_template: '{{ value_json.level }}' });
    config('binary_sensor', `${object}_alarm`, {
      ...common,
      name: `zone ${z} alarm`,
      device_class: 'heat',
      value_template: "{{ 'ON' if value_json.level in ['alarm', 'critical'] else 'OFF' }}",
      payload_on: 'ON',
      payload_off: 'OFF',
    });
    config('binary_sensor', `${object}_critical`, {
      ...common,
      name: `zone ${z} critical`,
      device_class: 'problem',
      value_template: "{{ 'ON' if value_json.level == 'critical' else 'OFF' }}",
      payload_on: 'ON',
      payload_off: 'OFF',
    });
  }

  // Device health: the state word (online, failing, offline, exceptions, or one added later: no enum,
  // so a new state still shows), available while the gateway is, precisely when the device is not.
  const deviceIds = [...new Set([...points.values()].map((p) => p.deviceId))];
  for (const d of deviceIds) {
    config('sensor', topicId(`device_${d}_state`), {
      name: `device ${d} state`,
      state_topic: `${base}/devices/${d}/state`,
      value_template: '{{ value_json.state }}',
      json_attributes_topic: `${base}/devices/${d}/state`,
      json_attributes_template: "{{ {'previous': value_json.previous, 'reason': value_json.get('reason'), 'ts': value_json.ts} | tojson }}",
      entity_category: 'diagnostic',
      availability: [gatewayAvailability],
    });
  }
  return out;
}

/** What the sink does with a message on a discovery topic it subscribed to. */
export type DiscoveryReaction = { kind: 'republish' } | { kind: 'clear'; topic: string } | { kind: 'none' };

/**
 * `<prefix>/status` = `online`: HA (re)started and its broker may have lost the retained configs,
 * so publish them again (the convention of the docs' "birth message"). A retained config of ours
 * under our node_id that is no longer generated (a point removed from the config): clear it with an
 * empty retained payload, which removes the entity in HA. Our own current configs are left alone.
 */
export function discoveryReaction(topic: string, payload: string, prefix: string, current: ReadonlySet<string>, node: string): DiscoveryReaction {
  if (topic === birthTopic(prefix)) return payload.trim() === 'online' ? { kind: 'republish' } : { kind: 'none' };
  const parts = topic.split('/');
  const p = cleanPrefix(prefix).split('/');
  const ours = parts.length === p.length + 4 && parts.slice(0, p.length).join('/') === p.join('/') && parts[p.length + 1] === node && parts[parts.length - 1] === 'config';
  if (!ours || payload === '' || current.has(topic)) return { kind: 'none' };
  return { kind: 'clear', topic };
}
