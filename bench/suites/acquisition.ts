/**
 * Acquisition benchmarks (issue #2):
 * - requests/s of the agent (RtuLine + poller + decoding + samples) against a plain modbus-serial
 *   loop, same pty, same simulator, wire speed. Both run without an inter-frame silence: a pty has
 *   no line timing, and the point is the software cost per request. overhead_ratio = raw / agent.
 * - reads per cycle for the reference rack, batched by the planner versus one read per point.
 * - the bus cycle of eight XY-MD02 at 9600 8N1: computed from frame sizes and 3.5-character gaps,
 *   and measured with the simulator emulating the line's baud rate and the agent keeping the
 *   inter-frame silence.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pino } from 'pino';
import { createAgent } from '../../agent/app.js';
import { loadConfigFile, parseConfig } from '../../agent/config/load.js';
import { defaultInterFrameGapMs, type Config } from '../../agent/config/model.js';
import { planReads } from '../../agent/acquisition/planner.js';
import { packageRoot } from '../../agent/paths.js';
import { RtuSlave, SimRack } from '../../firmware-sim/index.js';
import { startPtyPair } from '../../scripts/lib/pty.js';
import type { Figures } from '../results.js';

const THROUGHPUT_S = 5;
const CYCLE_S = 6;
const silent = pino({ level: 'silent' });

interface ModbusSerialClient {
  connectRTUBuffered(path: string, opts: { baudRate: number }): Promise<void>;
  setID(id: number): void;
  setTimeout(ms: number): void;
  readInputRegisters(addr: number, qty: number): Promise<{ data: number[] }>;
  close(cb: () => void): void;
}

function sensorsConfig(path: string, n: number, extra: string): ReturnType<typeof parseConfig> {
  const devices = Array.from({ length: n }, (_, i) => `      - { id: s${i + 1}, profile: xy-md02, unitId: ${i + 1}, pollIntervalMs: 1, timeoutMs: 500 }`).join('\n');
  return parseConfig(`version: 1\nlogging: { samples: false }\nbuses:\n  - id: line\n    type: serial\n    path: ${path}\n${extra}    devices:\n${devices}\n`, 'bench.yaml');
}

/** The same config with every device polled back to back (interval 0, below what the schema allows). */
function continuous(config: Config): Config {
  return {
    ...config,
    buses: config.buses.map((b) => (b.type === 'serial-stream' ? b : { ...b, devices: b.devices.map((d) => ({ ...d, pollIntervalMs: 0 })) })) as Config['buses'],
  };
}

async function agentRequestsPerS(path: string): Promise<number> {
  // A pty has no repeater either: without recoveryGapMs 0 the echo guard (R4 in rtu-line.ts) lets
  // one read of a unit out per 100 ms, and this would measure the guard, not the software.
  const agent = createAgent(continuous(sensorsConfig(path, 1, '    interFrameGapMs: 0\n    recoveryGapMs: 0\n')), { logger: silent });
  let samples = 0;
  agent.on('samples', (b) => (samples += b.length));
  agent.start();
  await new Promise((r) => setTimeout(r, 500)); // let the port open and settle
  const r0 = agent.health()[0]!.counters.responses;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, THROUGHPUT_S * 1000));
  const n = agent.health()[0]!.counters.responses - r0;
  const dt = (performance.now() - t0) / 1000;
  await agent.stop();
  if (samples === 0) throw new Error('agent produced no samples');
  return n / dt;
}

async function rawRequestsPerS(path: string): Promise<number> {
  const ModbusRTU = createRequire(import.meta.url)('modbus-serial') as new () => ModbusSerialClient;
  const client = new ModbusRTU();
  await client.connectRTUBuffered(path, { baudRate: 9600 });
  client.setID(1);
  client.setTimeout(500);
  for (let i = 0; i < 50; i++) await client.readInputRegisters(1, 2); // warm-up
  let n = 0;
  const t0 = performance.now();
  const end = t0 + THROUGHPUT_S * 1000;
  while (performance.now() < end) {
    const r = await client.readInputRegisters(1, 2);
    if (r.data.length !== 2) throw new Error('modbus-serial: short reply');
    n++;
  }
  const dt = (performance.now() - t0) / 1000;
  await new Promise<void>((r) => client.close(() => r()));
  return n / dt;
}

/** Minimum time of one poll cycle of `n` XY-MD02 (one 2-register FC04 read each) at 9600 8N1. */
function computedCycleMs(n: number): number {
  const charMs = (10 * 1000) / 9600;
  const gap = defaultInterFrameGapMs(9600);
  const request = 8;
  const reply = 5 + 2 * 2;
  // request on the wire, the slave's 3.5-char end-of-frame silence, reply on the wire, the master's
  // 3.5-char silence before the next request.
  return n * ((request + reply) * charMs + 2 * gap);
}

async function measuredCycleMs(slavePath: string, config: ReturnType<typeof parseConfig>, n: number): Promise<number> {
  const rack = new SimRack({ config });
  const slave = new RtuSlave({ path: slavePath, rack, baudRate: 9600, emulateBaud: true });
  await slave.start();
  const agent = createAgent(continuous(config), { logger: silent });
  agent.start();
  await new Promise((r) => setTimeout(r, 1000));
  const count = () => agent.health().reduce((s, h) => s + h.counters.responses, 0);
  const r0 = count();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, CYCLE_S * 1000));
  const reqs = count() - r0;
  const ms = performance.now() - t0;
  await agent.stop();
  await slave.stop();
  return ms / (reqs / n);
}

export async function run(): Promise<Figures> {
  const pty = await startPtyPair();
  try {
    const throughputConfig = sensorsConfig(pty.a, 1, '');
    const rack = new SimRack({ config: throughputConfig });
    const slave = new RtuSlave({ path: pty.b, rack });
    await slave.start();
    const raw = await rawRequestsPerS(pty.a);
    const agentRps = await agentRequestsPerS(pty.a);
    await slave.stop();

    const example = loadConfigFile(join(packageRoot(), 'config', 'rackguard.example.yaml'));
    let naive = 0;
    let batched = 0;
    for (const bus of example.buses) {
      if (bus.type === 'serial-stream') continue;
      for (const d of bus.devices) {
        naive += d.points.length;
        batched += planReads(d.points, d).length;
      }
    }

    const n = 8;
    const cycleConfig = sensorsConfig(pty.a, n, '');
    const measured = await measuredCycleMs(pty.b, cycleConfig, n);
    const computed = computedCycleMs(n);
    return {
      requests_per_s: round(agentRps, 0),
      raw_requests_per_s: round(raw, 0),
      overhead_ratio: round(raw / agentRps, 3),
      overhead_ratio_target: '<= 1.15',
      reads_per_cycle_batched: batched,
      reads_per_cycle_naive: naive,
      batching_factor: round(naive / batched, 2),
      batching_factor_target: '>= 4',
      cycle_ms_9600_computed: round(computed, 2),
      cycle_ms_9600_measured: round(measured, 2),
      cycle_ms_9600_error_pct: round(((measured - computed) / computed) * 100, 1),
      cycle_error_target: '<= 15%',
    };
  } finally {
    await pty.stop();
  }
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
