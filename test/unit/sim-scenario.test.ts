import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { RackguardError } from '../../agent/errors.js';
import { ScenarioError, parseScenario, type Scenario } from '../../firmware-sim/scenario.js';

const CONFIG = parseConfig(
  `
version: 1
buses:
  - id: line
    type: serial
    path: /dev/null
    devices:
      - { id: rack01, profile: xy-md02, unitId: 1 }
      - { id: rack02, profile: xy-md02, unitId: 2 }
      - id: pdu-a
        unitId: 10
        points:
          - { name: current, table: holding, address: 0, type: uint16, scale: 0.1, unit: A }
  - id: net
    type: tcp
    host: 127.0.0.1
    devices:
      - { id: chiller1, profile: generic-chiller, unitId: 1 }
`,
  'test.yaml',
);

function problemsOf(text: string, withConfig = false): string[] {
  try {
    parseScenario(text, 'scenario.yaml', withConfig ? { config: CONFIG } : {});
  } catch (err) {
    expect(err).toBeInstanceOf(ScenarioError);
    expect(err).toBeInstanceOf(RackguardError);
    expect((err as RackguardError).code).toBe('E_SCENARIO_INVALID');
    return (err as ScenarioError).problems;
  }
  throw new Error('expected the scenario to be rejected');
}

describe('parseScenario', () => {
  it('parses the documented format into typed events, sorted by time', () => {
    const s: Scenario = parseScenario(
      `
name: chiller-trip
description: Chiller trips at t=600 s; room heats at 2 °C/min at first.
durationS: 3600
seed: 1
room: { itLoadKw: 100, initialRiseCPerMin: 2 }
events:
  - { at: 1200, door: [rack01, rack02], deltaC: 3, durationS: 120 }
  - { at: 600, chiller: trip }
  - { at: 900, device: rack01, fault: silent }
  - { at: 900, device: rack02, fault: exception }
  - { at: 901, device: rack02, fault: late, delayMs: 800 }
  - { at: 950, sensor: rack01.temperature, fault: freeze }
  - { at: 960, sensor: rack02.temperature, fault: glitch, deltaC: 5 }
  - { at: 970, chiller: partial }
  - { at: 980, chiller: restore }
`,
      's.yaml',
      { config: CONFIG },
    );
    expect(s).toMatchObject({ name: 'chiller-trip', durationS: 3600, seed: 1, room: { itLoadKw: 100, initialRiseCPerMin: 2 }, source: 's.yaml' });
    expect(s.events).toEqual([
      { at: 600, kind: 'chiller', action: 'trip' },
      { at: 900, kind: 'device', device: 'rack01', fault: { type: 'silent' } },
      { at: 900, kind: 'device', device: 'rack02', fault: { type: 'exception', code: 4 } },
      { at: 901, kind: 'device', device: 'rack02', fault: { type: 'late', delayMs: 800 } },
      { at: 950, kind: 'sensor', sensor: 'rack01.temperature', fault: { type: 'freeze' } },
      { at: 960, kind: 'sensor', sensor: 'rack02.temperature', fault: { type: 'glitch', deltaC: 5 } },
      { at: 970, kind: 'chiller', action: 'partial', capacity: 0.7, reportRunning: true },
      { at: 980, kind: 'chiller', action: 'restore' },
      { at: 1200, kind: 'door', door: ['rack01', 'rack02'], deltaC: 3, durationS: 120 },
    ]);
  });

  it('applies defaults', () => {
    expect(parseScenario('name: x', 'x.yaml')).toEqual({ name: 'x', description: '', seed: 1, room: {}, events: [], source: 'x.yaml' });
  });

  it('reports every problem at once, with paths', () => {
    expect(
      problemsOf(`
name: x
durationS: 100
room: { itLoadKw: -1, foo: 1, thermalMassKjPerK: 5, initialRiseCPerMin: 2 }
events:
  - { at: 10, chiller: explode }
  - { at: -1, device: rack04, fault: silent }
  - { at: 5, device: rack04, fault: late }
  - { at: 5, sensor: rack03.temperature, fault: glitch, deltaC: 'x' }
  - { at: 5, door: [], deltaC: 3 }
  - { at: 5 }
  - { at: 5, chiller: trip, device: x }
  - 7
  - { at: 50, chiller: partial, capacity: 1.5, extra: 1 }
  - { at: 50, device: rack01, fault: exception, code: 0 }
  - { at: 50, sensor: rack01.temperature }
  - { at: 500, chiller: restore }
`),
    ).toEqual([
      'room.itLoadKw: must be > 0, got -1',
      'room.foo: unknown field',
      'events[0].chiller: expected one of trip, partial, restore, got "explode"',
      'events[1].at: must be ≥ 0, got -1',
      'events[2].delayMs: required, expected a number',
      'events[3].deltaC: expected a number, got "x"',
      'events[4].door: needs at least 1 item',
      'events[4].durationS: required, expected a number',
      'events[5]: needs one of the keys chiller, device, sensor, door',
      'events[6]: has more than one of the keys chiller, device',
      'events[7]: expected a mapping, got 7',
      'events[8].capacity: must be ≤ 1, got 1.5',
      'events[8].extra: unknown field',
      'events[9].code: must be ≥ 1, got 0',
      'events[10].fault: required, expected one of freeze, dead, glitch, drift, none',
      'events[11].at: 500 is after durationS (100)',
      'room.initialRiseCPerMin: give either thermalMassKjPerK or initialRiseCPerMin, not both',
    ]);
  });

  it('reports top-level problems', () => {
    expect(problemsOf('events: 3\nbogus: 1\nseed: -2')).toEqual([
      'name: required, expected a string',
      'seed: must be ≥ 0, got -2',
      'events: expected a list, got 3',
      'bogus: unknown field',
    ]);
    expect(problemsOf('')).toEqual(['(root): the file is empty; expected a mapping with at least name']);
    expect(problemsOf('name: [x')).toEqual(['line 1, column 9: Flow sequence in block collection must be sufficiently indented and end with a ]']);
  });

  it('checks device, sensor and door names against the config, naming the event', () => {
    expect(
      problemsOf(
        `
name: x
events:
  - { at: 10, device: rack99, fault: silent }
  - { at: 10, device: chiller1, fault: crc }
  - { at: 11, sensor: rack01.temp, fault: dead }
  - { at: 12, sensor: pdu-a.current, fault: freeze }
  - { at: 13, door: [rack01, pdu-a, rack02.temperature, zz], deltaC: 2, durationS: 5 }
`,
        true,
      ),
    ).toEqual([
      'events[0].device: unknown device "rack99" (event 0 at 10 s; known: rack01, rack02, pdu-a, chiller1)',
      'events[2].sensor: unknown point "rack01.temp" (event 2 at 11 s; expected <device>.<point>, e.g. rack01.temperature)',
      'events[4].door[1]: device "pdu-a" has no temperature point (event 4 at 13 s)',
      'events[4].door[3]: unknown device or temperature point "zz" (event 4 at 13 s)',
    ]);
  });

  it('accepts the bundled demo scenario against the demo config', () => {
    const config = parseConfig(readFileSync('config/demo.yaml', 'utf8'), 'config/demo.yaml');
    const s = parseScenario(readFileSync('firmware-sim/scenarios/demo.yaml', 'utf8'), 'demo.yaml', { config });
    expect(s.events.find((e) => e.kind === 'chiller')).toEqual({ at: 120, kind: 'chiller', action: 'trip' });
    const faults = s.events.flatMap((e) => (e.kind === 'device' || e.kind === 'sensor' ? [e.fault.type] : []));
    expect(faults).toEqual(expect.arrayContaining(['silent', 'crc', 'exception', 'freeze']));
    const example = parseConfig(readFileSync('config/rackguard.example.yaml', 'utf8'), 'example.yaml');
    expect(() => parseScenario(readFileSync('firmware-sim/scenarios/demo.yaml', 'utf8'), 'demo.yaml', { config: example })).not.toThrow();
  });
});
