/**
 * The ASCII stream source on a real pty: a sensor in XY-MD02 auto-upload mode writes lines; the
 * agent parses them by the configured pattern into samples, rejects what does not match, and
 * reports silence as comm_error.
 */
import { SerialPort } from 'serialport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/app.js';
import { parseConfig } from '../../agent/config/load.js';
import { SampleLog, batchOf, silentLogger } from '../helpers/agent.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';

let pty: PtyPair;
let sensor: SerialPort;
let agent: Agent;
let log: SampleLog;

const write = (text: string) => new Promise<void>((resolve, reject) => sensor.write(text, (err) => (err ? reject(err) : sensor.drain(() => resolve()))));

beforeAll(async () => {
  pty = await startPtyPair();
  sensor = new SerialPort({ path: pty.b, baudRate: 9600, autoOpen: false });
  await new Promise<void>((resolve, reject) => sensor.open((err) => (err ? reject(err) : resolve())));
  const config = parseConfig(
    `
version: 1
buses:
  - id: probe
    type: serial-stream
    path: ${pty.a}
    pattern: '^(?<temperature>[-+]?\\d+(?:\\.\\d+)?),(?<humidity>\\d+(?:\\.\\d+)?)$'
    timeoutMs: 400
    points:
      - { name: temperature, group: temperature, unit: "°C", kind: temperature, validRange: { min: -40, max: 125 } }
      - { name: humidity, group: humidity, unit: "%RH", kind: humidity, validRange: { min: 0, max: 100 } }
`,
    'stream.yaml',
  );
  agent = createAgent(config, { logger: silentLogger });
  log = new SampleLog(agent);
  await agent.start();
  // The port opens asynchronously; the first silence report tells us the agent is listening.
  await log.next(batchOf('probe', 'comm_error'), 5_000, 'the first silence report');
});

afterAll(async () => {
  await agent?.stop();
  if (sensor?.isOpen) await new Promise<void>((r) => sensor.close(() => r()));
  await pty?.stop();
});

describe('serial-stream source', () => {
  it('parses matching lines into samples, CRLF and split writes included', async () => {
    const next = log.next(batchOf('probe', 'good'), 5_000, 'a good line');
    await write('+23.4,45');
    await write('.1\r\n');
    const batch = await next;
    expect(batch.map((s) => [s.pointId, s.value, s.unit])).toEqual([
      ['probe.temperature', 23.4, '°C'],
      ['probe.humidity', 45.1, '%RH'],
    ]);
  });

  it('applies the valid range to streamed values', async () => {
    const next = log.next((b) => b[0]?.deviceId === 'probe' && b.some((s) => s.quality === 'out_of_range'), 5_000, 'an out-of-range sample');
    await write('150.0,40.0\n');
    const batch = await next;
    expect(batch.find((s) => s.pointId === 'probe.temperature')).toMatchObject({ quality: 'out_of_range', value: null, raw: 150 });
    expect(batch.find((s) => s.pointId === 'probe.humidity')).toMatchObject({ quality: 'good', value: 40 });
  });

  it('ignores lines that do not match and never turns them into values', async () => {
    const from = log.all.length;
    const next = log.next(batchOf('probe', 'good'), 5_000, 'the good line after the garbage');
    await write('ERR,sensor\nhello\n21.0,50.5\n');
    const batch = await next;
    expect(batch.map((s) => s.value)).toEqual([21, 50.5]);
    // Only the good line produced samples: the two bad lines produced none (no nulls, no zeros).
    expect(log.all.slice(from).filter((s) => s.quality !== 'comm_error').length).toBe(2);
  });

  it('reports silence as comm_error samples with no value', async () => {
    const batch = await log.next(batchOf('probe', 'comm_error'), 5_000, 'a silence report');
    expect(batch.every((s) => s.value === null && /no valid line for 400 ms/.test(s.reason ?? ''))).toBe(true);
  });
});
