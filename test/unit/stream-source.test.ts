/**
 * StreamSource through its seams (fake port via the `opener`, VirtualClock): the Component lifecycle
 * (issue 11 item 2) and line parsing across a restart.
 */
import { describe, expect, it } from 'vitest';
import { StreamSource } from '../../agent/acquisition/stream-source.js';
import type { Sample } from '../../agent/acquisition/types.js';
import { VirtualClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import type { StreamBusDef } from '../../agent/config/model.js';
import { silentLogger } from '../helpers/agent.js';
import { fakeOpener, settle } from '../helpers/fake-serial.js';

const bus = parseConfig(
  `version: 1
buses:
  - id: probe
    type: serial-stream
    path: /dev/fake
    pattern: '^(?<t>[-+]?\\d+(?:\\.\\d+)?)$'
    timeoutMs: 400
    points:
      - { name: temperature, group: t, unit: "°C", kind: temperature }
`,
  'stream.yaml',
).buses[0] as StreamBusDef;

describe('StreamSource lifecycle', () => {
  it('start → stop → start: one port and one listener at a time, no timer after stop, a partial line does not survive', async () => {
    const clock = new VirtualClock();
    const opener = fakeOpener(clock);
    const samples: Sample[] = [];
    const source = new StreamSource(bus, { clock, logger: silentLogger, opener, onSamples: (b) => samples.push(...b) });
    await source.stop(); // before start: fine
    await source.start();
    await source.start(); // no second port, no second silence timer
    await settle();
    expect(opener.ports.length).toBe(1);
    opener.ports[0]!.receive(Buffer.from('21.5\n22'));
    expect(samples.map((s) => s.value)).toEqual([21.5]);
    await source.stop();
    await source.stop();
    expect(clock.pendingTimers()).toBe(0);
    expect(opener.ports[0]!.isOpen).toBe(false);

    await source.start();
    await settle();
    expect(opener.ports.length).toBe(2);
    expect(opener.ports[1]!.dataListeners).toBe(1);
    // "22" from before the stop must not join "3.5" into 223.5.
    opener.ports[1]!.receive(Buffer.from('3.5\n24.0\n'));
    expect(samples.map((s) => [s.value, s.quality])).toEqual([
      [21.5, 'good'],
      [3.5, 'good'],
      [24, 'good'],
    ]);
    // Silence is still reported, once per timeout, by one timer.
    clock.advance(400);
    expect(samples.slice(3).map((s) => s.quality)).toEqual(['comm_error']);
    await source.stop();
    expect(clock.pendingTimers()).toBe(0);
  });

  it('a port that fails to open is retried in the background; start() does not wait for it', async () => {
    const clock = new VirtualClock();
    const opener = fakeOpener(clock, { failFirst: 2 });
    const samples: Sample[] = [];
    const source = new StreamSource(bus, { clock, logger: silentLogger, opener, onSamples: (b) => samples.push(...b) });
    await source.start();
    await settle();
    expect(opener.ports.length).toBe(0);
    clock.advance(400); // silence while closed says why
    expect(samples.at(-1)?.reason).toMatch(/E_PORT_CLOSED/);
    for (let i = 0; i < 30 && opener.ports.length === 0; i++) {
      clock.advance(100);
      await settle();
    }
    // Opened on the third try: 500 ms, then 1000 ms after the first failure (backoff doubles).
    expect(opener.attempts.length).toBe(3);
    expect(opener.ports.length).toBe(1);
    expect(clock.monoMs()).toBe(1500);
    await source.stop();
    expect(clock.pendingTimers()).toBe(0);
  });
});
