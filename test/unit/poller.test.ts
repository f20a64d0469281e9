/**
 * BusPoller on VirtualClock through the ModbusLine seam: a scripted line decides, per request, how
 * long it takes and what comes back. What is tested here is the poller's own bookkeeping (latency,
 * device state, lifecycle); the lines themselves are tested against real peers elsewhere.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { LineEvents, ModbusLine } from '../../agent/acquisition/line.js';
import { BusPoller } from '../../agent/acquisition/poller.js';
import type { DeviceHealth, DeviceState, Sample } from '../../agent/acquisition/types.js';
import { VirtualClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import type { DeviceDef } from '../../agent/config/model.js';
import { ModbusExceptionError, RackguardError } from '../../agent/errors.js';
import { readResponsePdu, type Table } from '../../agent/modbus/pdu.js';
import { silentLogger } from '../helpers/agent.js';
import { flush } from '../helpers/fake-socket.js';

/** What the scripted line does with one request. */
type Script = (unitId: number, pdu: Buffer) => { queuedMs: number; exchangeMs: number; reply: Buffer | Error };

/**
 * A ModbusLine whose requests take virtual time: `queuedMs` waiting for the line (other requests,
 * the recovery silence), then `exchangeMs` on the wire. It reports lastExchangeMs as a real line
 * does, or NaN when `reportsLatency` is false (a line that cannot measure it).
 */
class ScriptedLine extends EventEmitter<LineEvents> implements ModbusLine {
  readonly id = 'bus';
  readonly name = 'line:bus';
  isOpen = true;
  lastExchangeMs = Number.NaN;
  requests = 0;
  constructor(
    private readonly clock: VirtualClock,
    private readonly script: Script,
    private readonly reportsLatency = true,
  ) {
    super();
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  request(unitId: number, pdu: Buffer): Promise<Buffer> {
    this.requests++;
    const { queuedMs, exchangeMs, reply } = this.script(unitId, pdu);
    return new Promise((resolve, reject) => {
      this.clock.setTimeout(() => {
        if (this.reportsLatency) this.lastExchangeMs = exchangeMs;
        if (reply instanceof Error) reject(reply);
        else resolve(reply);
      }, queuedMs + exchangeMs);
    });
  }
}

const TABLE_OF_FC: Record<number, Table> = { 1: 'coil', 2: 'discrete', 3: 'holding', 4: 'input' };

/** A well-formed reply of zeros to any read request. */
function zeros(pdu: Buffer): Buffer {
  const table = TABLE_OF_FC[pdu[0]!]!;
  const quantity = pdu.readUInt16BE(3);
  return readResponsePdu(pdu[0]!, new Array<number>(quantity).fill(0), table === 'coil' || table === 'discrete');
}

function devices(yaml: string): DeviceDef[] {
  const config = parseConfig(`version: 1\nbuses:\n  - id: bus\n    type: tcp\n    host: 127.0.0.1\n    port: 502\n    devices:\n${yaml}`, 'poller-test.yaml');
  const bus = config.buses[0]!;
  if (bus.type === 'serial-stream') throw new Error('unexpected bus type');
  return [...bus.devices];
}

const TH = `      - { id: th1, profile: xy-md02, unitId: 1, pollIntervalMs: 1000, timeoutMs: 300, backoffInitialMs: 2000, backoffMaxMs: 8000 }\n`;

function setup(script: Script, defs = devices(TH), reportsLatency = true) {
  const clock = new VirtualClock();
  const line = new ScriptedLine(clock, script, reportsLatency);
  const batches: Sample[][] = [];
  const states: Array<{ to: DeviceState; from: DeviceState; health: DeviceHealth }> = [];
  const poller = new BusPoller(defs, line, {
    clock,
    logger: silentLogger,
    onSamples: (s) => batches.push(s),
    onDeviceState: (health, from) => states.push({ to: health.state, from, health }),
  });
  /** Advances virtual time in 1 ms steps, letting the poller's promises run between them. */
  const run = async (ms: number): Promise<void> => {
    for (let i = 0; i < ms; i++) {
      await flush();
      clock.advance(1);
    }
    await flush();
  };
  return { clock, line, poller, batches, states, run };
}

describe('BusPoller latency', () => {
  it('records the line’s exchange time, not the time the request waited for the line', async () => {
    // 45 ms queued behind another device and the recovery silence, then 5 ms on the wire.
    const { poller, run } = setup((_u, pdu) => ({ queuedMs: 45, exchangeMs: 5, reply: zeros(pdu) }));
    await poller.start();
    await run(2500);
    const c = poller.health()[0]!.counters;
    expect(c.responses).toBeGreaterThanOrEqual(3);
    expect(c.latencyLastMs).toBe(5);
    expect(c.latencyMaxMs).toBe(5);
    expect(c.latencyAvgMs).toBe(5);
    await poller.stop();
  });

  it('a line that cannot measure latency (NaN) leaves the figures alone and still counts responses', async () => {
    const { poller, run } = setup((_u, pdu) => ({ queuedMs: 45, exchangeMs: 5, reply: zeros(pdu) }), devices(TH), false);
    await poller.start();
    await run(2500);
    const c = poller.health()[0]!.counters;
    expect(c.responses).toBeGreaterThanOrEqual(3);
    expect([c.latencyLastMs, c.latencyAvgMs, c.latencyMaxMs]).toEqual([0, 0, 0]);
    await poller.stop();
  });
});

describe('BusPoller device state', () => {
  const CHILLER = `      - { id: ch1, profile: generic-chiller, unitId: 1, pollIntervalMs: 1000, timeoutMs: 300, backoffInitialMs: 2000, backoffMaxMs: 8000 }\n`;

  it('a device that answers every read with an exception is "exceptions", naming each register and code, and keeps its cadence', async () => {
    const { poller, line, states, batches, run } = setup((_u, pdu) => ({ queuedMs: 0, exchangeMs: 4, reply: new ModbusExceptionError(2, 'bus unit 1') }), devices(CHILLER));
    await poller.start();
    await run(10_500);
    expect(states.map((s) => `${s.from}→${s.to}`)).toEqual(['unknown→exceptions']);
    const h = poller.health()[0]!;
    expect(h.state).toBe('exceptions');
    expect(h.consecutiveFailures).toBe(0);
    // The chiller profile plans two reads (discrete 0; holding 0..5, batched): each one named.
    expect(h.lastError).toBe(
      'discrete input 0: exception 2 (illegal data address); holding register 0 (×6): exception 2 (illegal data address)',
    );
    // No backoff (2 s initial would allow at most 5 polls in 10.5 s): it answers, so it is polled on cadence.
    expect(batches).toHaveLength(11);
    expect(line.requests).toBe(22);
    expect(batches.flat().every((s) => s.value === null && s.quality === 'comm_error' && /^E_MODBUS_EXCEPTION/.test(s.reason!))).toBe(true);
    await poller.stop();
  });

  it('a gateway reporting its target silent (exception 11) is a failure: failing, then offline', async () => {
    const { poller, states, run } = setup(() => ({ queuedMs: 0, exchangeMs: 4, reply: new ModbusExceptionError(11, 'bus unit 1') }));
    await poller.start();
    await run(20_000);
    expect(states.map((s) => s.to)).toEqual(['failing', 'offline']);
    expect(poller.health()[0]!.lastError).toMatch(/exception 11 \(gateway target device failed to respond\)/);
  });

  it('exceptions on some reads and timeouts on others is a failure, not "exceptions"', async () => {
    const { poller, states, run } = setup((_u, pdu) => ({
      queuedMs: 0,
      exchangeMs: pdu[0] === 2 ? 4 : 300,
      reply: pdu[0] === 2 ? new ModbusExceptionError(2, 'bus unit 1') : new RackguardError('E_MODBUS_TIMEOUT', 'bus unit 1: no reply within 300 ms'),
    }), devices(CHILLER));
    await poller.start();
    await run(1500);
    expect(states.map((s) => s.to)).toEqual(['failing']);
    await poller.stop();
  });

  it('goes from exceptions back to online when the point map is fixed', async () => {
    let broken = true;
    const { poller, states, run } = setup((_u, pdu) => ({ queuedMs: 0, exchangeMs: 4, reply: broken ? new ModbusExceptionError(2, 'bus unit 1') : zeros(pdu) }));
    await poller.start();
    await run(1500);
    expect(poller.health()[0]!.lastError).toBe('input register 1 (×2): exception 2 (illegal data address)');
    broken = false;
    await run(1000);
    expect(states.map((s) => `${s.from}→${s.to}`)).toEqual(['unknown→exceptions', 'exceptions→online']);
    expect(poller.health()[0]!.lastError).toBeUndefined();
    await poller.stop();
  });
});

describe('BusPoller lifecycle', () => {
  it('start → stop → start polls with one loop and one listener; stop is safe before start and twice', async () => {
    const { poller, line, batches, clock, run } = setup((_u, pdu) => ({ queuedMs: 0, exchangeMs: 100, reply: zeros(pdu) }));
    await poller.stop();
    await poller.start();
    await poller.start();
    expect(line.listenerCount('open')).toBe(1);
    await run(2050); // polls at 0, 1000, 2000 (the last in flight)
    // Stop while a request is in flight, and start again before it settles: the old loop must end
    // (stop() resolves once the request does) and the new one poll alone.
    const stopping = poller.stop();
    await poller.start();
    expect(line.listenerCount('open')).toBe(1);
    const requestsBefore = line.requests;
    const batchesBefore = batches.length;
    await run(100);
    await stopping;
    // The poll cut short by stop() published nothing; the new run polled once at once.
    expect(line.requests - requestsBefore).toBe(1);
    await run(5050);
    // One loop: one poll per second (5 more in 5 s, the last one complete), not two per second.
    expect(line.requests - requestsBefore).toBe(6);
    expect(batches.length - batchesBefore).toBe(6);
    await poller.stop();
    await poller.stop();
    expect(line.listenerCount('open')).toBe(0);
    await run(100);
    const n = line.requests;
    clock.advance(10_000);
    await flush();
    expect(line.requests).toBe(n);
  }, 10_000); // before the fix, the left-over loop kept stop() from ever resolving
});
