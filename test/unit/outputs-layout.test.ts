/**
 * The pure layouts of the sinks: MQTT topics and payloads (agent/outputs/mqtt-layout.ts) and InfluxDB
 * points (agent/outputs/influx-layout.ts), plus the reconnect schedule and the Receive Maximum gate.
 */
import { describe, expect, it } from 'vitest';
import type { OutputContext, PointInfo } from '../../agent/outputs/context.js';
import { msWithSeqNs, toPoints } from '../../agent/outputs/influx-layout.js';
import { InflightGate, ReconnectBackoff } from '../../agent/outputs/mqtt-connection.js';
import { availabilityPayload, messagesFor, onlineStatus, resolveBaseTopic, stoppedStatus, willStatus } from '../../agent/outputs/mqtt-layout.js';
import type { OutboxEntry, OutboxRecord } from '../../agent/outputs/outbox.js';

const TS = Date.UTC(2026, 0, 1, 12);
const BASE = 'rackguard/s1/g1';
const points = new Map<string, PointInfo>([
  ['r1.t', { id: 'r1.t', deviceId: 'r1', unit: '°C', kind: 'temperature', zones: ['z1'] }],
  ['c1.supply', { id: 'c1.supply', deviceId: 'c1', unit: '°C', kind: 'temperature', zones: [], chiller: { id: 'c1', role: 'supplyTemp' } }],
]);
const context: OutputContext = { site: 's1', gateway: 'g1', points, zones: ['z1'] };
const evidence = { sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 0, k: 2, etaCriticalS: 120 };

const rec = (seq: number, entry: OutboxEntry): OutboxRecord => ({ seq, cls: entry.type === 'sample' ? 'telemetry' : 'event', ts: TS, entry });

describe('MQTT layout', () => {
  it('base topic: placeholders replaced, trailing slashes removed', () => {
    expect(resolveBaseTopic('rackguard/{site}/{gateway}/', 's1', 'g1')).toBe(BASE);
  });

  it('a sample becomes one sensors/<point> message with value, unit, quality and both timestamps', () => {
    const m = messagesFor(rec(1, { type: 'sample', sample: { pointId: 'r1.t', deviceId: 'r1', value: 21.5, unit: '°C', quality: 'good', ts: TS, mono: 0 } }), BASE);
    expect(m).toEqual([{ topic: `${BASE}/sensors/r1.t`, retain: false, payload: JSON.stringify({ value: 21.5, unit: '°C', quality: 'good', ts: new Date(TS).toISOString(), tsMs: TS }) }]);
  });

  it('a zone level becomes a retained state and a QoS 1 event', () => {
    const m = messagesFor(rec(2, { type: 'event', event: { kind: 'zone_level', zone: 'z1', from: 'warning', level: 'alarm', reason: 'r', mono: 0, ts: TS, evidence } }), BASE);
    expect(m.map((x) => [x.topic, x.retain, x.qos1 ?? false])).toEqual([
      [`${BASE}/zones/z1/state`, true, false],
      [`${BASE}/events`, false, true],
    ]);
    expect(JSON.parse(m[0]!.payload)).toEqual({ level: 'alarm', from: 'warning', reason: 'r', ts: new Date(TS).toISOString(), tsMs: TS, evidence });
    expect(JSON.parse(m[1]!.payload)).toMatchObject({ kind: 'zone_level', level: 'alarm', tsIso: new Date(TS).toISOString() });
  });

  it('device states: availability is online/offline for any state, the state itself goes to devices/<id>/state', () => {
    expect(availabilityPayload('online')).toBe('online');
    expect(availabilityPayload('failing')).toBe('online');
    expect(availabilityPayload('offline')).toBe('offline');
    expect(availabilityPayload('exceptions')).toBe('offline');
    expect(availabilityPayload('some_future_state')).toBe('offline');
    expect(availabilityPayload('unknown')).toBeUndefined();
    const ev = { kind: 'device_state', deviceId: 'r1', state: 'exceptions', previous: 'online', ts: TS, reason: 'exception 2 at input register 1', detail: { register: 1, code: 2 } };
    const m = messagesFor(rec(3, { type: 'event', event: ev as never }), BASE);
    expect(m.map((x) => [x.topic, x.payload.slice(0, 20), x.retain])).toEqual([
      [`${BASE}/devices/r1/availability`, 'offline', true],
      [`${BASE}/devices/r1/state`, '{"state":"exceptions', true],
      [`${BASE}/events`, expect.any(String), false],
    ]);
    expect(JSON.parse(m[1]!.payload)).toEqual({ state: 'exceptions', previous: 'online', reason: 'exception 2 at input register 1', detail: { register: 1, code: 2 }, ts: new Date(TS).toISOString(), tsMs: TS });
    const unknown = messagesFor(rec(4, { type: 'event', event: { kind: 'device_state', deviceId: 'r1', state: 'unknown', previous: 'online', ts: TS } }), BASE);
    expect(unknown.map((x) => x.topic)).toEqual([`${BASE}/events`]);
  });

  it('status payloads: online stamped with its refresh period, stopped stamped, the will without a time', () => {
    expect(JSON.parse(onlineStatus(TS, 30))).toEqual({ state: 'online', ts: new Date(TS).toISOString(), tsMs: TS, refreshS: 30 });
    expect(JSON.parse(stoppedStatus(TS))).toEqual({ state: 'offline', ts: new Date(TS).toISOString(), tsMs: TS, reason: 'stopped' });
    expect(JSON.parse(willStatus())).toEqual({ state: 'offline', reason: 'connection lost' });
  });
});

describe('InfluxDB layout', () => {
  it('samples: environment or chiller, original ms timestamp as ns, value only when there is one', () => {
    const p = toPoints(
      [
        rec(1, { type: 'sample', sample: { pointId: 'r1.t', deviceId: 'r1', value: 21.5, unit: '°C', quality: 'good', ts: TS, mono: 0 } }),
        rec(2, { type: 'sample', sample: { pointId: 'c1.supply', deviceId: 'c1', value: null, unit: '°C', quality: 'comm_error', ts: TS, mono: 0 } }),
      ],
      context,
      'rg_',
    );
    expect(p.map((x) => x.point)).toEqual([
      { measurement: 'rg_environment', tags: { site: 's1', gateway: 'g1', device: 'r1', point: 'r1.t', zone: 'z1' }, fields: { quality: 'good', value: 21.5 }, timestamp: `${TS}000000` },
      { measurement: 'rg_chiller', tags: { site: 's1', gateway: 'g1', chiller: 'c1', role: 'supplyTemp', device: 'c1', point: 'c1.supply' }, fields: { quality: 'comm_error' }, timestamp: `${TS}000000` },
    ]);
  });

  it('zone levels of one evaluation (same ms, same tags) get distinct timestamps in append order; a resend the same', () => {
    const steps = [
      ['normal', 'warning'],
      ['warning', 'alarm'],
      ['alarm', 'critical'],
    ] as const;
    const recs = steps.map(([from, level], i) => rec(41 + i, { type: 'event', event: { kind: 'zone_level', zone: 'z1', from, level, reason: '', mono: 0, ts: TS, evidence } }));
    const zl = toPoints(recs, context).filter((x) => x.point.measurement === 'zone_level');
    expect(zl.map((x) => x.point.timestamp)).toEqual([`${TS}000041`, `${TS}000042`, `${TS}000043`]);
    expect(zl.map((x) => x.point.fields!.level_rank)).toEqual([1, 2, 3]);
    expect(toPoints(recs, context).map((x) => x.point.timestamp)).toEqual(toPoints(recs, context).map((x) => x.point.timestamp));
    expect(msWithSeqNs(TS, 1_000_007)).toBe(`${TS}000007`);
  });

  it('device states outside the old set still become events, with a warning severity', () => {
    const p = toPoints([rec(5, { type: 'event', event: { kind: 'device_state', deviceId: 'r1', state: 'exceptions' as never, previous: 'online', ts: TS } })], context);
    expect(p[0]!.point).toMatchObject({ measurement: 'events', tags: { kind: 'device_state', device: 'r1' }, fields: { severity: 'warning', message: 'device r1: online -> exceptions' } });
  });
});

describe('MQTT connection pieces', () => {
  it('reconnect backoff: doubles from the initial delay, jitter only downwards, never above the cap', () => {
    const up = new ReconnectBackoff(100, 800, () => 0);
    expect(Array.from({ length: 6 }, () => up.next())).toEqual([100, 200, 400, 800, 800, 800]);
    const down = new ReconnectBackoff(100, 800, () => 1);
    expect(Array.from({ length: 5 }, () => down.next())).toEqual([80, 160, 320, 640, 640]);
    up.reset();
    expect(up.next()).toBe(100);
  });

  it('inflight gate: at most capacity at once, FIFO, and close() fails the waiters', async () => {
    const gate = new InflightGate(2);
    const releases: Array<() => void> = [];
    const order: number[] = [];
    const run = (i: number) => gate.run(() => new Promise<void>((r) => releases.push(() => (order.push(i), r()))));
    const all = [run(1), run(2), run(3), run(4)];
    await Promise.resolve();
    expect([gate.active, gate.queued]).toEqual([2, 2]);
    releases.shift()!();
    await new Promise((r) => setImmediate(r));
    expect([gate.active, gate.queued]).toEqual([2, 1]);
    gate.close(new Error('gone'));
    await expect(all[3]).rejects.toThrow('gone');
    for (const r of releases.splice(0)) r();
    await Promise.all(all.slice(0, 3));
    expect(order).toEqual([1, 2, 3]);
  });
});
