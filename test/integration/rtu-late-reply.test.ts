/**
 * Issue 7 item 1: a late reply, or a repeater's echo, is never taken as the answer to a later request.
 *
 * A scripted hostile slave (pyserial, test/fixtures/hostile_rtu_slave.py) sits on one end of a socat
 * pty pair; RtuLine and the real BusPoller, wired as app.ts wires them, poll one device with two
 * single-register reads: register 1 (temperature, 23.1) and register 2 (humidity, 45.5). FC04 replies
 * do not carry the register address, so a reply to one read taken for the other swaps the values.
 * For each fault, no sample with quality good may carry the other register's value, and the
 * device's error counters must move.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BusPoller } from '../../agent/acquisition/poller.js';
import { RtuLine } from '../../agent/acquisition/rtu-line.js';
import type { DeviceCounters, Sample } from '../../agent/acquisition/types.js';
import { systemClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import type { SerialBusDef } from '../../agent/config/model.js';
import { silentLogger } from '../helpers/agent.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';

const SLAVE = join(import.meta.dirname, '..', 'fixtures', 'hostile_rtu_slave.py');
const TEMPERATURE = 23.1;
const HUMIDITY = 45.5;

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

interface Run {
  samples: Sample[];
  counters: DeviceCounters;
  requestsSeen: number;
  firstRequestAt: number;
  neighbour: DeviceCounters | undefined;
}

/** Polls the hostile slave for `runMs` of real time and returns every sample and the device's counters. */
async function pollHostileSlave(opts: { slaveArgs: string[]; pollIntervalMs: number; timeoutMs: number; runMs: number; backoffMs?: number; points?: string; neighbour?: boolean; neighbourTimeoutMs?: number }): Promise<Run> {
  const pty: PtyPair = await startPtyPair();
  cleanups.push(() => pty.stop());
  const slave: SpawnedProcess = await spawnAndWait('/usr/bin/python3', [SLAVE, '--port', pty.b, ...opts.slaveArgs], { readyLine: /^ready$/, timeoutMs: 10_000 });
  cleanups.push(() => slave.stop());
  const config = parseConfig(
    `version: 1
buses:
  - id: hostile
    type: serial
    path: ${pty.a}
    devices:
      - id: th
        unitId: 1
        pollIntervalMs: ${opts.pollIntervalMs}
        timeoutMs: ${opts.timeoutMs}
        maxReadRegisters: 1
${opts.backoffMs ? `        backoffInitialMs: ${opts.backoffMs}\n        backoffMaxMs: ${opts.backoffMs}\n` : ''}        points:
${opts.points ?? `          - { name: temperature, table: input, address: 1, type: int16, scale: 0.1, kind: temperature }
          - { name: humidity, table: input, address: 2, type: int16, scale: 0.1, kind: humidity }`}
${
  opts.neighbour
    ? `      - id: nb
        unitId: 2
        pollIntervalMs: ${opts.pollIntervalMs}
        timeoutMs: ${opts.neighbourTimeoutMs ?? opts.timeoutMs}
        maxReadRegisters: 1
        points:
          - { name: temperature, table: input, address: 1, type: int16, scale: 0.1, kind: temperature }
          - { name: humidity, table: input, address: 2, type: int16, scale: 0.1, kind: humidity }
`
    : ''
}`,
    'hostile.yaml',
  );
  const bus = config.buses[0] as SerialBusDef;
  const line = new RtuLine(bus, { clock: systemClock, logger: silentLogger });
  const samples: Sample[] = [];
  const poller = new BusPoller(bus.devices, line, { clock: systemClock, logger: silentLogger, onSamples: (batch) => samples.push(...batch) });
  expect(poller.readsPerCycle).toBe((opts.points ? 1 : 2) + (opts.neighbour ? 2 : 0));
  const opened = new Promise<void>((resolve) => line.once('open', () => resolve()));
  await line.start();
  await opened;
  await poller.start();
  const firstRequestAt = systemClock.wallMs();
  await new Promise((r) => setTimeout(r, opts.runMs)); // the fault needs real time to play out
  await poller.stop();
  await line.stop();
  const requestsSeen = slave.lines.filter((l) => l.startsWith('request')).length;
  return { samples, counters: poller.health()[0]!.counters, neighbour: poller.health()[1]?.counters, requestsSeen, firstRequestAt };
}

function goodValues(run: Run, point: string): number[] {
  return run.samples.filter((s) => s.pointId === `th.${point}` && s.quality === 'good').map((s) => s.value!);
}

/** Every good temperature is register 1's value and every good humidity register 2's. */
function expectNoSwappedValues(run: Run): void {
  const temps = goodValues(run, 'temperature');
  const hums = goodValues(run, 'humidity');
  expect({ temps: temps.filter((v) => v !== TEMPERATURE), hums: hums.filter((v) => v !== HUMIDITY) }).toEqual({ temps: [], hums: [] });
}

describe.concurrent('RTU line against a hostile slave: a late or echoed reply is never the next answer', () => {
  it('a reply now and then 1.5 s late (one in three), poll 1000 ms, timeout 300 ms', async () => {
    // A single-threaded slave: while it sits on the late reply, the next request waits in its buffer
    // and is answered (20 ms after) the late one, so replies run one request behind.
    const run = await pollHostileSlave({ slaveArgs: ['--late-ms', '1500', '--late-every', '3', '--one-at-a-time', '--turnaround-ms', '20'], pollIntervalMs: 1000, timeoutMs: 300, runMs: 12_000 });
    expect(run.requestsSeen).toBeGreaterThan(5);
    expectNoSwappedValues(run);
    expect(run.counters.timeouts).toBeGreaterThan(0);
    // Between the late replies the slave answers in time, and the line gets back in step.
    expect(goodValues(run, 'humidity').length).toBeGreaterThan(0);
  });

  it('every reply 700 ms late, poll 250 ms, timeout 300 ms', async () => {
    const run = await pollHostileSlave({ slaveArgs: ['--late-ms', '700', '--one-at-a-time'], pollIntervalMs: 250, timeoutMs: 300, runMs: 8_000 });
    expect(run.requestsSeen).toBeGreaterThan(3);
    expectNoSwappedValues(run);
    expect(run.counters.timeouts).toBeGreaterThan(0);
  });

  it('a repeater echoes every reply 10 ms later, while the next read of the unit is in flight', async () => {
    // The slave takes 30 ms to answer, so the echo of register 1's reply comes in before register
    // 2's own reply.
    const run = await pollHostileSlave({ slaveArgs: ['--turnaround-ms', '30', '--echo-ms', '10'], pollIntervalMs: 250, timeoutMs: 300, runMs: 5_000 });
    expectNoSwappedValues(run);
    // It says what is wrong. (How many reads it can still prove good depends on how the echo falls
    // against the recovery window, and so on the test machine's load: liveness under a repeater is
    // covered deterministically in test/unit/rtu-line.test.ts and rtu-fuzz.test.ts, not here.)
    expect(run.counters.badFrames).toBeGreaterThan(0);
    expect(run.samples.some((s) => s.quality === 'comm_error' && /E_MODBUS_LINE_DIRTY/.test(s.reason ?? ''))).toBe(true);
  });

  it('a device off for 3 s (every read and probe times out) is read again as soon as it is back', async () => {
    // Its only point is register 1; the probes around it (registers 1..2, 0..1, 1..3, …) time out
    // while it is off, then get exceptions or values. Polled every 200 ms with no backoff growth,
    // so that more probes time out than there are probe lengths. Before the fix the unit was then
    // not asked at all until the 60 s late-reply horizon.
    const run = await pollHostileSlave({
      slaveArgs: ['--silent-first-ms', '3000', '--turnaround-ms', '5'],
      pollIntervalMs: 200,
      timeoutMs: 100,
      backoffMs: 200,
      runMs: 9_000,
      points: '          - { name: temperature, table: input, address: 1, type: int16, scale: 0.1, kind: temperature }',
    });
    const good = run.samples.filter((s) => s.quality === 'good');
    expect(good.length).toBeGreaterThan(0);
    expect(run.counters.timeouts).toBeGreaterThan(5);
    expect(good.every((s) => s.value === TEMPERATURE)).toBe(true);
    // Back at 3 s: read within the next four seconds (a read or two may still time out on a loaded
    // machine, with four other slaves running beside it), long before any 60 s horizon.
    expect(good[0]!.ts - run.firstRequestAt).toBeLessThan(7_000);
  });

  it("a slow unit's late replies neither fail nor feed its healthy neighbour on the same line", async () => {
    // Unit 1 answers one request in two 400 ms late (timeout 150 ms); unit 2 answers at once with
    // other values (77.7 and 88.8) from registers of the same numbers and lengths. Unit 1's late
    // replies come in between requests or during unit 2's reads: they must be blamed on unit 1.
    const run = await pollHostileSlave({
      slaveArgs: ['--late-ms', '400', '--late-every', '2', '--one-at-a-time', '--healthy-unit', '2'],
      pollIntervalMs: 250,
      timeoutMs: 150,
      runMs: 8_000,
      neighbour: true,
      // The neighbour answers at once: a generous deadline keeps a loaded test machine's own delays
      // from being counted against it; unit 1's late replies still land during its reads.
      neighbourTimeoutMs: 1000,
    });
    expectNoSwappedValues(run);
    const nb = run.samples.filter((s) => s.pointId.startsWith('nb.'));
    expect(nb.filter((s) => s.quality === 'good' && s.value !== (s.pointId === 'nb.temperature' ? 77.7 : 88.8))).toEqual([]);
    expect(run.counters.timeouts).toBeGreaterThan(0);
    expect(nb.filter((s) => s.quality !== 'good').map((s) => s.reason)).toEqual([]);
    expect(run.neighbour).toMatchObject({ timeouts: 0, badFrames: 0, crcErrors: 0 });
  });
});
