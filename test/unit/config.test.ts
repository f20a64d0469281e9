import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { z } from 'zod';
import { ConfigError, durationUnitMs, formatIssues, loadConfigFile, parseConfig } from '../../agent/config/load.js';
import { configSchema, profileSchema } from '../../agent/config/schema.js';
import type { ModbusPointDef, SerialBusDef, StreamBusDef, TcpBusDef } from '../../agent/config/model.js';
import { readRegularFile } from '../../agent/config/read-file.js';
import { RackguardError } from '../../agent/errors.js';
import { bundledProfilesDir, packageRoot } from '../../agent/paths.js';

const EXAMPLE = join(packageRoot(), 'config', 'rackguard.example.yaml');
const DEMO = join(packageRoot(), 'config', 'demo.yaml');

/** The problems a config produces, or [] when it loads. */
function problemsOf(text: string): string[] {
  try {
    parseConfig(text, 'test.yaml');
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe('the example configuration', () => {
  const config = loadConfigFile(EXAMPLE);

  it('loads, with the reference rack', () => {
    expect(config.site).toBe('gz-dc1');
    expect(config.gateway).toBe('row-a-gw1');
    expect(config.buses.map((b) => `${b.id}:${b.type}`)).toEqual(['rs485-a:serial', 'chiller-net:tcp']);
    const serial = config.buses[0] as SerialBusDef;
    expect(serial.devices.map((d) => `${d.id}@${d.unitId}`)).toEqual([
      'rack01@1', 'rack02@2', 'rack03@3', 'rack04@4', 'rack05@5', 'rack06@6', 'rack07@7', 'rack08@8', 'rack09@9', 'pdu-a@10', 'pdu-b@11', 'pdu-c@12',
    ]);
    expect(config.zones.map((z) => z.id)).toEqual(['cold-aisle-a', 'cold-aisle-b']);
    expect(config.chillers).toEqual([
      {
        id: 'ch1',
        running: 'chiller1.running',
        alarm: 'chiller1.alarm_code',
        supplyTemp: 'chiller1.supply_temp',
        returnTemp: 'chiller1.return_temp',
        zones: ['cold-aisle-a', 'cold-aisle-b'],
      },
    ]);
  });

  it('expands profiles into global point ids carrying the profile fields', () => {
    for (let i = 1; i <= 8; i++) {
      expect(config.points.has(`rack0${i}.temperature`)).toBe(true);
      expect(config.points.has(`rack0${i}.humidity`)).toBe(true);
    }
    expect(config.points.get('rack01.temperature')).toEqual({
      id: 'rack01.temperature',
      deviceId: 'rack01',
      name: 'temperature',
      table: 'input',
      address: 1,
      type: 'int16',
      wordOrder: 'ABCD',
      faultValues: [0x7fff, 0x8000],
      scale: 0.1,
      offset: 0,
      unit: '°C',
      kind: 'temperature',
      validRange: { min: -40, max: 125 },
      frozenAfterS: 1800,
    });
    expect([...config.points.keys()].filter((id) => id.startsWith('rack09.'))).toEqual(['rack09.temperature', 'rack09.humidity', 'rack09.sensor_ok']);
    expect(config.points.get('chiller1.supply_temp')).toMatchObject({ type: 'float32', wordOrder: 'CDAB', table: 'holding', address: 2 });
    // Each device's point list is the same objects as the global map.
    const serial = config.buses[0] as SerialBusDef;
    expect(serial.devices[0]!.points.map((p) => p.id)).toEqual(['rack01.temperature', 'rack01.humidity']);
  });

  it('keeps every field of the inline points', () => {
    expect(config.points.get('pdu-a.energy')).toMatchObject({ table: 'holding', address: 0x0100, type: 'int32', wordOrder: 'CDAB', scale: 0.01, unit: 'kWh', faultValues: [0xffffffff] });
    expect(config.points.get('pdu-a.current')).toMatchObject({ type: 'uint16', scale: 0.1, validRange: { min: 0, max: 63 }, frozenAfterS: 1800 });
    expect(config.points.get('pdu-a.breaker_tripped')).toMatchObject({ type: 'bit', bit: 3, kind: 'alarm' });
  });

  it('applies defaults', () => {
    const serial = config.buses[0] as SerialBusDef;
    // 3.5 characters of 10 bits (start + 8 data + stop) at 9600 baud.
    expect(serial.interFrameGapMs).toBeCloseTo((3.5 * 10 * 1000) / 9600, 9);
    expect(serial.interFrameGapMs).toBeCloseTo(3.646, 3);
    const rack01 = serial.devices[0]!;
    expect(rack01).toMatchObject({ timeoutMs: 300, maxReadRegisters: 125, maxGapRegisters: 8, backoffInitialMs: 5000, backoffMaxMs: 60_000 });
    const chiller = (config.buses[1] as TcpBusDef).devices[0]!;
    expect(chiller).toMatchObject({ unitId: 1, timeoutMs: 500, maxGapRegisters: 8, pollIntervalMs: 5000 });
    expect((config.points.get('chiller1.running') as ModbusPointDef).scale).toBe(1);
  });

  it('is deeply frozen', () => {
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.buses[0])).toBe(true);
    expect(Object.isFrozen((config.buses[0] as SerialBusDef).devices[0]!.points[0])).toBe(true);
    expect(Object.isFrozen(config.zones[0]!.sensors)).toBe(true);
    expect(() => {
      (config as { site: string }).site = 'x';
    }).toThrow(TypeError);
    expect(() => (config.points as Map<string, unknown>).set('x.y', {})).toThrow(TypeError);
    expect(() => (config.points as Map<string, unknown>).delete('rack01.temperature')).toThrow(TypeError);
    expect(config.points.size).toBe(62);
  });

  it('also loads with its serial-stream example uncommented', () => {
    const lines = readFileSync(EXAMPLE, 'utf8').split('\n');
    const begin = lines.findIndex((l) => l.includes('>>> serial-stream example'));
    const end = lines.findIndex((l) => l.includes('<<< serial-stream example'));
    expect(begin).toBeGreaterThan(0);
    expect(end).toBeGreaterThan(begin);
    const text = lines.map((l, i) => (i > begin && i < end ? l.replace('# ', '') : l)).join('\n');
    const cfg = parseConfig(text, 'example-with-stream.yaml');
    const stream = cfg.buses.find((b) => b.type === 'serial-stream') as StreamBusDef;
    expect(stream.id).toBe('aisle-probe');
    expect(stream.points.map((p) => p.id)).toEqual(['aisle-probe.temperature', 'aisle-probe.humidity']);
    const re = new RegExp(stream.pattern);
    expect(re.exec('23.4,45.1')?.groups).toEqual({ temperature: '23.4', humidity: '45.1' });
    expect(re.exec('-3,45')?.groups).toEqual({ temperature: '-3', humidity: '45' });
  });
});

describe('the demo configuration', () => {
  const config = loadConfigFile(DEMO);

  it('loads, with the devices of the example but its two profile PDUs, polled every second', () => {
    const example = loadConfigFile(EXAMPLE);
    expect([...config.points.keys()]).toEqual([...example.points.keys()].filter((id) => !/^pdu-[bc]\./.test(id)));
    expect(config.logging.samples).toBe(true);
    const serial = config.buses[0] as SerialBusDef;
    const tcp = config.buses[1] as TcpBusDef;
    expect(serial.path).toBe('/tmp/rackguard-demo/agent-tty');
    expect(tcp).toMatchObject({ host: '127.0.0.1', port: 1502 });
    for (const dev of [...serial.devices, ...tcp.devices]) expect(dev.pollIntervalMs).toBe(1000);
    expect(config.zones).toEqual(example.zones);
    expect(config.chillers).toEqual(example.chillers);
  });
});

/** A small valid config; each bad case below breaks it in one way. */
// Deliberately loose: the cases build configs the schema must reject.
type Raw = Record<string, any>;
function base(): Raw {
  return {
    version: 1,
    buses: [
      {
        id: 'rs485-a',
        type: 'serial',
        path: '/dev/ttyUSB0',
        devices: [
          {
            id: 'dev1',
            unitId: 1,
            points: [
              { name: 'temp', table: 'input', address: 1, type: 'int16', scale: 0.1, kind: 'temperature' },
              { name: 'hum', table: 'input', address: 2, type: 'int16', scale: 0.1, kind: 'humidity' },
            ],
          },
          { id: 'rack01', profile: 'xy-md02', unitId: 2 },
        ],
      },
      { id: 'chiller-net', type: 'tcp', host: '127.0.0.1', devices: [{ id: 'chiller1', profile: 'generic-chiller' }] },
    ],
    zones: [{ id: 'z1', sensors: ['dev1.temp', 'rack01.temperature'] }],
    chillers: [{ id: 'ch1', running: 'chiller1.running', zones: ['z1'] }],
  };
}

const streamBus = (over: Raw): Raw => ({ id: 'probe', type: 'serial-stream', path: '/dev/ttyUSB1', pattern: '^(?<t>\\d+)$', points: [{ name: 't', group: 't' }], ...over });
const addPoint = (c: Raw, p: Raw): void => {
  c.buses[0].devices[0].points.push({ name: 'extra', table: 'holding', address: 0, ...p });
};

const BAD: Array<{ what: string; change: (c: Raw) => void; problems: string[] }> = [
  { what: 'a string for a number', change: (c) => (c.buses[0].devices[0].timeoutMs = '300'), problems: ['buses[0].devices[0].timeoutMs: expected a number, got "300" (a string: remove the quotes)'] },
  { what: 'a word for a number', change: (c) => (c.buses[0].devices[0].pollIntervalMs = 'fast'), problems: ['buses[0].devices[0].pollIntervalMs: expected a number, got "fast"'] },
  { what: 'a fraction for an integer', change: (c) => (c.buses[0].devices[0].unitId = 1.5), problems: ['buses[0].devices[0].unitId: expected an integer, got 1.5'] },
  { what: 'an empty value', change: (c) => (c.buses[0].devices[0].timeoutMs = null), problems: ['buses[0].devices[0].timeoutMs: expected a number, got null (an empty value)'] },
  {
    what: 'an unknown point type',
    change: (c) => (c.buses[0].devices[0].points[1].type = 'int12'),
    problems: ['buses[0].devices[0].points[1].type: expected one of int16, uint16, int32, uint32, float32, bool, bit, got "int12"'],
  },
  { what: 'an unknown field (typo)', change: (c) => (c.buses[0].devices[0].timeoutMS = 300), problems: ['buses[0].devices[0].timeoutMS: unknown field'] },
  { what: 'an unknown top-level field', change: (c) => (c.zone = []), problems: ['zone: unknown field'] },
  { what: 'a missing required field', change: (c) => delete c.buses[0].path, problems: ['buses[0].path: required, expected a string'] },
  { what: 'a point without address', change: (c) => delete c.buses[0].devices[0].points[0].address, problems: ['buses[0].devices[0].points[0].address: required, expected a number'] },
  { what: 'an empty string', change: (c) => (c.buses[0].path = ''), problems: ['buses[0].path: must not be empty'] },
  { what: 'no buses', change: (c) => delete c.buses, problems: ['buses: required, expected a list'] },
  { what: 'a bus without devices', change: (c) => (c.buses[1].devices = []), problems: ['buses[1].devices: needs at least 1 item'] },
  { what: 'a bus that is not a mapping', change: (c) => (c.buses[1] = 'tcp'), problems: ['buses[1]: expected a mapping, got "tcp"'] },
  { what: 'a missing version', change: (c) => delete c.version, problems: ['version: required, expected 1'] },
  { what: 'a wrong version', change: (c) => (c.version = 2), problems: ['version: expected 1, got 2'] },
  { what: 'a quoted version', change: (c) => (c.version = '1'), problems: ['version: expected 1, got "1"'] },
  { what: 'an unknown bus type', change: (c) => (c.buses[1].type = 'udp'), problems: ['buses[1].type: expected one of serial, tcp, serial-stream, got "udp"'] },
  { what: 'a bus without type', change: (c) => delete c.buses[1].type, problems: ['buses[1].type: required, expected one of serial, tcp, serial-stream'] },
  { what: 'dataBits outside 7 | 8', change: (c) => (c.buses[0].dataBits = 9), problems: ['buses[0].dataBits: expected one of 7, 8, got 9'] },
  { what: 'a parity letter', change: (c) => (c.buses[0].parity = 'N'), problems: ['buses[0].parity: expected one of none, even, odd, got "N"'] },
  { what: 'an unknown log level', change: (c) => (c.logging = { level: 'verbose' }), problems: ['logging.level: expected one of fatal, error, warn, info, debug, trace, got "verbose"'] },
  { what: 'a dot in an id', change: (c) => (c.buses[0].devices[0].id = 'rack.01'), problems: ['buses[0].devices[0].id: expected letters, digits, "_" or "-" (no dots or spaces), got "rack.01"'] },
  { what: 'a negative address', change: (c) => (c.buses[0].devices[0].points[0].address = -1), problems: ['buses[0].devices[0].points[0].address: must be ≥ 0, got -1'] },
  { what: 'an inverted validRange', change: (c) => (c.buses[0].devices[0].points[0].validRange = { min: 5, max: 1 }), problems: ['buses[0].devices[0].points[0].validRange: min must be below max'] },
  { what: 'reopenMaxMs below reopenInitialMs', change: (c) => (c.buses[0].reopenMaxMs = 100), problems: ['buses[0].reopenMaxMs: must be ≥ reopenInitialMs (500)'] },
  {
    what: 'an unknown profile (references to its device are not reported again)',
    change: (c) => (c.buses[0].devices[1].profile = 'xy-md03'),
    problems: [`buses[0].devices[1].profile: unknown profile "xy-md03" (looked in ${bundledProfilesDir()})`],
  },
  { what: 'a device with neither profile nor points', change: (c) => { delete c.buses[0].devices[1].profile; c.zones[0].sensors = ['dev1.temp']; c.zones[0].detection = { k: 1 }; }, problems: ['buses[0].devices[1]: needs a profile or at least one point'] },
  { what: 'k larger than the zone', change: (c) => (c.detection = { k: 3 }), problems: ['zones[0].detection.k: 3 sensors must agree but the zone has 2'] },
  {
    what: 'detection thresholds out of order and windows reversed',
    change: (c) => (c.zones[0].detection = { alarmTempC: 36, shortWindowS: 600, longWindowS: 120 }),
    problems: ['zones[0].detection.shortWindowS: must be below longWindowS (600 ≥ 120)', 'zones[0].detection: thresholds must rise warnTempC < alarmTempC < criticalTempC (got 27, 36, 35)'],
  },
  { what: 'an unknown detection field', change: (c) => (c.detection = { dwelS: 10 }), problems: ['detection.dwelS: unknown field'] },
  { what: 'a device without unitId nor profile default', change: (c) => delete c.buses[0].devices[0].unitId, problems: ['buses[0].devices[0].unitId: required (no profile default)'] },
  {
    what: 'duplicate point ids (two inline points with the same name)',
    change: (c) => (c.buses[0].devices[0].points[1].name = 'temp'),
    problems: ['buses[0].devices[0].points[1].name: duplicate point id "dev1.temp"'],
  },
  {
    what: 'duplicate device ids',
    change: (c) => (c.buses[1].devices[0].id = 'rack01'),
    problems: ['buses[1].devices[0].id: duplicate device id "rack01" (also at buses[0].devices[1])', 'chillers[0].running: unknown point "chiller1.running"'],
  },
  {
    what: 'two devices with the same unit on one bus',
    change: (c) => (c.buses[0].devices[1].unitId = 1),
    problems: ['buses[0].devices[1].unitId: unit 1 is already used on this bus by buses[0].devices[0] ("dev1")'],
  },
  { what: 'unitId 0 on a serial bus (broadcast)', change: (c) => (c.buses[0].devices[0].unitId = 0), problems: ['buses[0].devices[0].unitId: must be 1–247 on a serial line, got 0'] },
  { what: 'unitId 248 on a serial bus (reserved)', change: (c) => (c.buses[0].devices[0].unitId = 248), problems: ['buses[0].devices[0].unitId: must be 1–247 on a serial line, got 248'] },
  { what: 'unitId 256', change: (c) => (c.buses[1].devices[0].unitId = 256), problems: ['buses[1].devices[0].unitId: must be ≤ 255, got 256'] },
  { what: 'a zone naming an unknown sensor', change: (c) => c.zones[0].sensors.push('dev1.tmp'), problems: ['zones[0].sensors[2]: unknown point "dev1.tmp"'] },
  {
    what: 'a zone naming a humidity point',
    change: (c) => c.zones[0].sensors.push('rack01.humidity'),
    problems: ['zones[0].sensors[2]: point "rack01.humidity" is not a temperature point (kind: humidity)'],
  },
  { what: 'a zone listing a sensor twice', change: (c) => c.zones[0].sensors.push('dev1.temp'), problems: ['zones[0].sensors[2]: "dev1.temp" is listed twice'] },
  {
    what: 'a chiller naming an unknown point and an unknown zone',
    change: (c) => {
      c.chillers[0].alarm = 'chiller1.alarm';
      c.chillers[0].zones.push('z2');
    },
    problems: ['chillers[0].alarm: unknown point "chiller1.alarm"', 'chillers[0].zones[1]: unknown zone "z2"'],
  },
  { what: 'a coil point that is not bool', change: (c) => addPoint(c, { table: 'coil', type: 'uint16' }), problems: ['buses[0].devices[0].points[2].type: a coil point must be bool, got uint16'] },
  { what: 'type bit without bit', change: (c) => addPoint(c, { type: 'bit' }), problems: ['buses[0].devices[0].points[2].bit: required for type bit'] },
  { what: 'bit without type bit', change: (c) => addPoint(c, { type: 'uint16', bit: 2 }), problems: ['buses[0].devices[0].points[2].bit: only allowed with type bit'] },
  { what: 'bit 16', change: (c) => addPoint(c, { type: 'bit', bit: 16 }), problems: ['buses[0].devices[0].points[2].bit: must be ≤ 15, got 16'] },
  {
    what: 'a float32 at address 65535',
    change: (c) => addPoint(c, { address: 65535, type: 'float32' }),
    problems: ['buses[0].devices[0].points[2].address: float32 at 65535 runs past register 65535'],
  },
  {
    what: 'a bad regex in a serial-stream bus',
    change: (c) => c.buses.push(streamBus({ pattern: '^(?<t>\\d+' })),
    problems: ['buses[2].pattern: invalid regular expression: /^(?<t>\\d+/: Unterminated group'],
  },
  {
    what: 'a missing named group in a serial-stream bus',
    change: (c) => c.buses.push(streamBus({ points: [{ name: 'temperature', group: 'temperature' }] })),
    problems: ['buses[2].points[0].group: pattern has no named group "temperature" (it has: t)'],
  },
  {
    what: 'two serial buses on the same path',
    change: (c) => c.buses.push({ id: 'rs485-b', type: 'serial', path: '/dev/ttyUSB0', devices: [{ id: 'x', profile: 'xy-md02' }] }),
    problems: ['buses[2].path: "/dev/ttyUSB0" is already used by buses[0] ("rs485-a")'],
  },
  {
    what: 'a serial-stream bus on a Modbus line',
    change: (c) => c.buses.push(streamBus({ path: '/dev/ttyUSB0' })),
    problems: ['buses[2].path: "/dev/ttyUSB0" is already used by buses[0] ("rs485-a")'],
  },
  {
    what: 'several schema errors at once',
    change: (c) => {
      c.version = 3;
      c.site = 'gz dc1';
      c.buses[0].devices[0].timeoutMs = 'fast';
      c.buses[0].devices[0].points[0].type = 'float';
      c.buses[1].port = 70000;
    },
    problems: [
      'version: expected 1, got 3',
      'site: expected letters, digits, "_" or "-" (no dots or spaces), got "gz dc1"',
      'buses[0].devices[0].points[0].type: expected one of int16, uint16, int32, uint32, float32, bool, bit, got "float"',
      'buses[0].devices[0].timeoutMs: expected a number, got "fast"',
      'buses[1].port: must be ≤ 65535, got 70000',
    ],
  },
  {
    what: 'several cross-reference errors at once',
    change: (c) => {
      c.buses[0].devices[1].unitId = 1;
      addPoint(c, { type: 'bit' });
      c.zones[0].sensors.push('nope.temp');
      c.chillers[0].zones = ['z9'];
    },
    problems: [
      'buses[0].devices[0].points[2].bit: required for type bit',
      'buses[0].devices[1].unitId: unit 1 is already used on this bus by buses[0].devices[0] ("dev1")',
      'zones[0].sensors[2]: unknown point "nope.temp"',
      'chillers[0].zones[0]: unknown zone "z9"',
    ],
  },
];

describe('a bad configuration', () => {
  it('the base of the table is valid', () => {
    expect(problemsOf(stringify(base()))).toEqual([]);
  });

  it.each(BAD)('$what', ({ change, problems }) => {
    const cfg = base();
    change(cfg);
    expect(problemsOf(stringify(cfg))).toEqual(problems);
  });

  it.each([
    { what: 'an unclosed flow sequence', text: 'version: 1\nbuses:\n  - id: a\n    type: [serial\n    path: /dev/ttyUSB0\n', problems: ['line 5, column 5: Flow sequence in block collection must be sufficiently indented and end with a ]'] },
    { what: 'a tab in the indentation', text: 'version: 1\nbuses:\n\t- id: a\n', problems: ['line 3, column 1: Tabs are not allowed as indentation'] },
    { what: 'a duplicated key', text: 'version: 1\nversion: 1\nbuses: []\n', problems: ['line 2, column 1: Map keys must be unique'] },
  ])('YAML syntax: $what (line and column)', ({ text, problems }) => {
    expect(problemsOf(text)).toEqual(problems);
  });

  it('an empty file', () => {
    expect(problemsOf('')).toEqual(['(root): the file is empty; expected a mapping with at least version and buses']);
    expect(problemsOf('# only comments\n')).toEqual(['(root): the file is empty; expected a mapping with at least version and buses']);
  });

  it('throws ConfigError with code E_CONFIG_INVALID, listing every problem in its message', () => {
    const cfg = base();
    cfg.version = 2;
    cfg.buses[0].devices[0].timeoutMs = '300';
    let caught: unknown;
    try {
      parseConfig(stringify(cfg), 'site.yaml');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect(caught).toBeInstanceOf(RackguardError);
    const err = caught as ConfigError;
    expect(err.code).toBe('E_CONFIG_INVALID');
    expect(err.retryable).toBe(false);
    expect(err.problems).toHaveLength(2);
    expect(err.message).toBe(
      'site.yaml: invalid configuration (2 problems):\n' +
        '  version: expected 1, got 2\n' +
        '  buses[0].devices[0].timeoutMs: expected a number, got "300" (a string: remove the quotes)',
    );
  });

  it('a missing file is E_CONFIG_READ', () => {
    expect(() => loadConfigFile('/nonexistent/rackguard.yaml')).toThrow(expect.objectContaining({ code: 'E_CONFIG_READ' }));
  });
});

describe('durations are bounded', () => {
  // Node turns a timer delay above 2^31−1 ms into 1 ms: each of these, reported in issue 7, ran a
  // timer in a loop or was accepted silently. Each is rejected with its path and the limit.
  it.each([
    { what: 'logging.healthIntervalS 2592000 (30 days)', change: (c: Raw) => (c.logging = { healthIntervalS: 2_592_000 }), problem: 'logging.healthIntervalS: must be at most 86400 (1 day), got 2592000' },
    { what: 'pollIntervalMs 1e12', change: (c: Raw) => (c.buses[0].devices[1].pollIntervalMs = 1e12), problem: 'buses[0].devices[1].pollIntervalMs: must be at most 86400000 (1 day), got 1000000000000' },
    { what: 'backoffMaxMs 1e15', change: (c: Raw) => (c.buses[1].devices[0].backoffMaxMs = 1e15), problem: 'buses[1].devices[0].backoffMaxMs: must be at most 86400000 (1 day), got 1000000000000000' },
    { what: 'reopenMaxMs 1e12', change: (c: Raw) => (c.buses[0].reopenMaxMs = 1e12), problem: 'buses[0].reopenMaxMs: must be at most 3600000 (1 hour), got 1000000000000' },
    { what: 'clearDelayS 1e12', change: (c: Raw) => (c.detection = { clearDelayS: 1e12 }), problem: 'detection.clearDelayS: must be at most 86400 (1 day), got 1000000000000' },
    { what: 'dwellS 1e12 (in a zone)', change: (c: Raw) => (c.zones[0].detection = { dwellS: 1e12 }), problem: 'zones[0].detection.dwellS: must be at most 3600 (1 hour), got 1000000000000' },
    {
      what: 'an outputs timeout',
      change: (c: Raw) => (c.outputs = { outbox: { path: '/tmp/x.db' }, influx: { url: 'http://127.0.0.1:8086', database: 'd', flushIntervalMs: 1e12 } }),
      problem: 'outputs.influx.flushIntervalMs: must be at most 3600000 (1 hour), got 1000000000000',
    },
  ])('$what', ({ change, problem }) => {
    const cfg = base();
    change(cfg);
    expect(problemsOf(stringify(cfg))).toEqual([problem]);
  });

  it('the limits themselves are accepted', () => {
    const cfg = base();
    cfg.logging = { healthIntervalS: 86_400 };
    cfg.buses[0].devices[1].pollIntervalMs = 86_400_000;
    cfg.buses[0].reopenMaxMs = 3_600_000;
    cfg.detection = { dwellS: 3600, clearDelayS: 86_400 };
    expect(problemsOf(stringify(cfg))).toEqual([]);
  });

  /** Every property of a JSON schema, with its path: walks objects, lists, unions and $defs. */
  function properties(node: unknown, path: string, out: Array<{ path: string; name: string; schema: Record<string, unknown> }>): typeof out {
    if (!node || typeof node !== 'object') return out;
    if (Array.isArray(node)) {
      for (const n of node) properties(n, path, out);
      return out;
    }
    const n = node as Record<string, unknown>;
    for (const [name, schema] of Object.entries((n.properties ?? {}) as Record<string, Record<string, unknown>>)) {
      out.push({ path: `${path}.${name}`, name, schema });
      properties(schema, `${path}.${name}`, out);
    }
    for (const key of ['items', 'anyOf', 'oneOf', 'allOf', 'additionalProperties', '$defs', 'definitions']) properties(n[key], path, out);
    return out;
  }
  const isNumber = (s: Record<string, unknown>): boolean => s.type === 'number' || s.type === 'integer';
  const TIMER_LIMIT_MS = 2 ** 31 - 1;

  it.each([
    { name: 'the configuration', schema: configSchema },
    { name: 'a profile', schema: profileSchema },
  ])('no duration field of $name is unbounded (the schema is walked)', ({ schema }) => {
    const props = properties(z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }), '', []);
    const durations = props.filter((p) => durationUnitMs([p.name]) !== undefined);
    // Not vacuous: the walk reaches the fields the issue named, nested in lists, unions and outputs.
    if (schema === configSchema) {
      const names = new Set(durations.map((d) => d.path));
      for (const f of ['.logging.healthIntervalS', '.buses.devices.pollIntervalMs', '.buses.reopenMaxMs', '.zones.detection.dwellS', '.detection.clearDelayS', '.outputs.mqtt.publishTimeoutMs', '.outputs.influx.requestTimeoutMs', '.stopTimeoutS']) {
        expect(names, f).toContain(f);
      }
      expect(durations.length).toBeGreaterThan(40);
    } else {
      expect(durations.map((d) => d.name)).toContain('frozenAfterS');
    }
    const unbounded = durations.filter((d) => !isNumber(d.schema) || typeof d.schema.maximum !== 'number' || d.schema.maximum * durationUnitMs([d.name])! > TIMER_LIMIT_MS);
    expect(unbounded.map((d) => `${d.path} (maximum ${String(d.schema.maximum)})`)).toEqual([]);
    // And no duration hides behind a name without its unit (the walk above would miss it).
    const unitless = props.filter((p) => isNumber(p.schema) && /interval|timeout|delay|window|dwell|backoff|reopen|retry|keepalive|horizon|after/i.test(p.name) && durationUnitMs([p.name]) === undefined);
    expect(unitless.map((p) => p.path)).toEqual([]);
  });
});

describe('serial timing defaults', () => {
  const withLine = (line: Raw): SerialBusDef => {
    const cfg = base();
    Object.assign(cfg.buses[0], line);
    return parseConfig(stringify(cfg), 'line.yaml').buses[0] as SerialBusDef;
  };

  it('is 3.5 characters up to 19200 baud, 1.75 ms above', () => {
    expect(withLine({}).interFrameGapMs).toBeCloseTo(3.6458, 4); // 9600 8N1: 10 bits a character
    expect(withLine({ parity: 'even' }).interFrameGapMs).toBeCloseTo((3.5 * 11 * 1000) / 9600, 9);
    expect(withLine({ baudRate: 19200 }).interFrameGapMs).toBeCloseTo(1.8229, 4);
    expect(withLine({ baudRate: 38400 }).interFrameGapMs).toBe(1.75);
    expect(withLine({ baudRate: 115200 }).interFrameGapMs).toBe(1.75);
  });

  it('keeps an explicit interFrameGapMs', () => {
    expect(withLine({ interFrameGapMs: 10 }).interFrameGapMs).toBe(10);
  });
});

describe('profiles', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rackguard-profiles-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('are looked up in profileDirs before the bundled ones', () => {
    writeFileSync(
      join(dir, 'xy-md02.yaml'),
      stringify({ name: 'xy-md02', defaults: { unitId: 7 }, points: [{ name: 'temperature', table: 'holding', address: 0, type: 'int16', kind: 'temperature' }] }),
    );
    const cfg = base();
    delete cfg.buses[0].devices[1].unitId;
    const config = parseConfig(stringify(cfg), 'p.yaml', { profileDirs: [dir] });
    expect(config.points.get('rack01.temperature')).toMatchObject({ table: 'holding', address: 0 });
    expect(config.points.has('rack01.humidity')).toBe(false);
    expect((config.buses[0] as SerialBusDef).devices[1]!.unitId).toBe(7);
  });

  it('an invalid profile is reported with its own problems', () => {
    writeFileSync(join(dir, 'broken.yaml'), stringify({ name: 'broken', points: [{ name: 't', table: 'input', address: 0, type: 'int12' }] }));
    const cfg = base();
    cfg.buses[0].devices[1].profile = 'broken';
    expect(parseConfigProblems(cfg, [dir])).toEqual([
      `buses[0].devices[1].profile: profile "broken" (${join(dir, 'broken.yaml')}) is invalid: points[0].type: expected one of int16, uint16, int32, uint32, float32, bool, bit, got "int12"`,
    ]);
  });

  it('a profile that is an alias bomb, too deep, a directory or a FIFO is a problem naming the file, not a crash or a hang', () => {
    const bombDir = join(dir, 'hostile');
    mkdirSync(bombDir);
    let bomb = 'a0: &a0 [x, x, x, x, x, x, x, x, x]\n';
    for (let i = 1; i < 8; i++) bomb += `a${i}: &a${i} [${Array(9).fill(`*a${i - 1}`).join(', ')}]\n`;
    writeFileSync(join(bombDir, 'bomb.yaml'), bomb);
    writeFileSync(join(bombDir, 'deep.yaml'), `${'['.repeat(100_000)}${']'.repeat(100_000)}`);
    mkdirSync(join(bombDir, 'adir.yaml'));
    const fifo = spawnSync('mkfifo', [join(bombDir, 'fifo.yaml')]);
    expect(fifo.status).toBe(0);
    const problem = (profile: string): string[] => {
      const cfg = base();
      cfg.buses[0].devices[1].profile = profile;
      return parseConfigProblems(cfg, [bombDir]);
    };
    expect(problem('bomb')).toEqual([`buses[0].devices[1].profile: profile "bomb" (${join(bombDir, 'bomb.yaml')}) is not valid YAML: (root): the YAML cannot be loaded: Excessive alias count indicates a resource exhaustion attack`]);
    expect(problem('deep')).toEqual([expect.stringMatching(/^buses\[0\]\.devices\[1\]\.profile: profile "deep" \(.*deep\.yaml\) is not valid YAML: line 1, column \d+: Maximum call stack size exceeded/)]);
    expect(problem('adir')).toEqual([`buses[0].devices[1].profile: profile "adir" (${join(bombDir, 'adir.yaml')}) cannot be read: a directory, not a regular file`]);
    expect(problem('fifo')).toEqual([`buses[0].devices[1].profile: profile "fifo" (${join(bombDir, 'fifo.yaml')}) cannot be read: a FIFO (named pipe), not a regular file`]);
  });

  it('profilesDir must be a directory that exists', () => {
    const file = join(dir, 'not-a-dir.yaml');
    writeFileSync(file, 'x: 1\n');
    const cfg = base();
    cfg.profilesDir = file;
    expect(problemsOf(stringify(cfg))).toEqual([`profilesDir: ${file} is not a directory`]);
    cfg.profilesDir = join(dir, 'missing');
    expect(problemsOf(stringify(cfg))).toEqual([`profilesDir: ${join(dir, 'missing')} does not exist`]);
    // Relative to the configuration file's directory.
    cfg.profilesDir = 'not-a-dir.yaml';
    expect(() => parseConfig(stringify(cfg), 'rel.yaml', { baseDir: dir })).toThrow(`profilesDir: ${file} is not a directory`);
    cfg.profilesDir = '.';
    expect(parseConfig(stringify(cfg), 'rel.yaml', { baseDir: dir }).site).toBe('site');
  });

  it('an inline point replaces the profile point of the same name (calibration)', () => {
    const cfg = base();
    cfg.buses[0].devices[1].points = [{ name: 'temperature', table: 'input', address: 1, type: 'int16', scale: 0.1, offset: -0.4, kind: 'temperature' }];
    const config = parseConfig(stringify(cfg), 'cal.yaml');
    expect(config.points.get('rack01.temperature')).toMatchObject({ offset: -0.4, unit: '' });
    expect(config.points.get('rack01.humidity')).toMatchObject({ unit: '%RH' });
  });
});

function parseConfigProblems(cfg: Raw, profileDirs: string[]): string[] {
  try {
    parseConfig(stringify(cfg), 'test.yaml', { profileDirs });
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe('formatIssues', () => {
  const schema = z.object({ n: z.int().min(1), kind: z.enum(['a', 'b']), list: z.array(z.string()) }).strict();

  it('says what was found when parsed with reportInput', () => {
    const r = schema.safeParse({ n: 0, kind: 'c', extra: 1 }, { reportInput: true });
    expect(formatIssues(r.error!.issues)).toEqual(['n: must be ≥ 1, got 0', 'kind: expected one of a, b, got "c"', 'list: required, expected a list', 'extra: unknown field']);
  });

  it('never claims "required" when the input was not reported', () => {
    const r = schema.safeParse({ n: '1', kind: 'c', list: [] });
    expect(formatIssues(r.error!.issues)).toEqual(['n: expected a number', 'kind: expected one of a, b']);
  });
});

describe('reading configuration text: strict UTF-8', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rackguard-utf8-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const read = (bytes: number[] | Buffer): string => {
    const file = join(dir, 'f.yaml');
    writeFileSync(file, Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes));
    return readRegularFile(file);
  };
  const refused = (bytes: number[], where: string): void => {
    expect(() => read(bytes)).toThrow(new RegExp(`not valid UTF-8 \\(${where}\\)`));
  };

  it('accepts UTF-8 (a BOM is dropped) and names the first bad byte by line and column', () => {
    expect(read(Buffer.from('\uFEFFsite: Zürich 🌡\n'))).toBe('site: Zürich 🌡\n');
    refused([0x61, 0x0a, 0x62, 0x63, 0xff], 'byte 0xff at line 2, column 3');
    refused([0x61, 0xc0, 0xaf], 'byte 0xc0 at line 1, column 2'); // an overlong "/"
    refused([0xed, 0xa0, 0x80], 'byte 0xed at line 1, column 1'); // a UTF-16 surrogate
    refused([0x61, 0x62, 0xe2, 0x82], 'byte 0xe2 at line 1, column 3'); // cut short at the end
    refused([0xf4, 0x90, 0x80, 0x80], 'byte 0xf4 at line 1, column 1'); // past U+10FFFF
  });

  it('a file that grows past its fstat size is still read whole, up to the cap', () => {
    // readRegularFile sizes its buffer by fstat; /proc files report size 0 but have content.
    expect(readRegularFile('/proc/self/status')).toMatch(/^Name:/);
  });
});
