/**
 * A wall-clock step detected while a device's poll is still going (issue 9, item 4). A device with two
 * reads is stamped per reply, but its samples reach the agent only when the poll ends. If NTP's step is
 * detected between the two replies, the outbox is re-dated and the clock marked synchronised before the
 * first reply's samples arrive: they must still land on the new time base, not at the stale time.
 * Deterministic: VirtualClock and a fake RTU port through the `opener` seam.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { createAgent } from '../../agent/app.js';
import { VirtualClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import { withCrc } from '../../agent/modbus/crc.js';
import { silentLogger } from '../helpers/agent.js';
import { fakeOpener, settle, type FakePort } from '../helpers/fake-serial.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const DAY = 86_400_000;
let dir: TempDir;
beforeEach(async () => {
  dir = await tempDir('rackguard-clock-inflight-');
  mkdirSync(join(dir.path, 'timesync')); // timesyncd present, clock not (yet) synchronised
});
afterEach(async () => {
  await dir.cleanup();
});

function configText(): string {
  return `version: 1
clock: { syncedFile: ${join(dir.path, 'timesync', 'synchronized')} }
buses:
  - id: rs485
    type: serial
    path: /dev/ttyFAKE0
    devices:
      - id: r1
        unitId: 1
        pollIntervalMs: 60000
        timeoutMs: 5000
        maxGapRegisters: 0
        points:
          - { name: temperature, table: input, address: 1, type: int16, scale: 0.1, unit: "°C", kind: temperature }
          - { name: humidity, table: input, address: 40, type: uint16, scale: 0.1, unit: "%RH", kind: humidity }
zones:
  - { id: z, sensors: [r1.temperature], detection: { k: 1 } }
outputs:
  outbox: { path: ${join(dir.path, 'outbox.db')}, commitIntervalMs: 0 }
`;
}

/** Lets the agent run on virtual time, 1 ms at a time, until `cond` holds (the poller yields with setImmediate). */
async function until(clock: VirtualClock, cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    await settle();
    clock.advance(1);
  }
  await settle();
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

const reply = (value: number): Buffer => withCrc(Buffer.from([1, 0x04, 2, (value >> 8) & 0xff, value & 0xff]));

it('samples of the reply before the step, handed over after its detection, land on the new base (not two weeks back)', async () => {
  const clock = new VirtualClock({ startMonoMs: 1000, startWallMs: Date.UTC(2026, 10, 16) });
  const opener = fakeOpener(clock);
  const agent = createAgent(parseConfig(configText(), 'c.yaml'), { logger: silentLogger, clock, opener });
  await agent.start();
  await until(clock, () => opener.ports[0]?.writes().length === 1, 'the first request');
  const port: FakePort = opener.ports[0]!;

  port.receive(reply(215)); // temperature 21.5 °C, stamped on the stale clock
  await until(clock, () => port.writes().length === 2, 'the second request');
  // NTP steps the clock two weeks forward; the watch sees it within a second, while read 2 is pending.
  clock.stepWall(14 * DAY);
  clock.advance(1500);
  await settle();
  const samplesSeen: string[] = [];
  agent.on('samples', (ss) => samplesSeen.push(...ss.map((x) => x.pointId)));
  port.receive(reply(480)); // humidity 48.0 %RH, stamped on the new base
  await until(clock, () => samplesSeen.length > 0, 'the poll to end');
  expect(samplesSeen).toEqual(['r1.temperature', 'r1.humidity']);
  await agent.stop();

  const db = new Database(join(dir.path, 'outbox.db'), { readonly: true });
  const rows = db.prepare<[], { ts: number; body: string }>('SELECT ts, body FROM records ORDER BY seq').all();
  db.close();
  const samples = rows.map((r) => JSON.parse(r.body) as { type: string; sample?: { pointId: string; ts: number; mono: number; clockUnsynced?: true }; clockRedatedMs?: number; event?: { kind: string; ts: number } });
  const step = samples.find((r) => r.event?.kind === 'clock_step');
  expect(step).toBeDefined();
  const offset = clock.wallMs() - clock.monoMs(); // the new base
  const t = samples.find((r) => r.sample?.pointId === 'r1.temperature')!;
  const h = samples.find((r) => r.sample?.pointId === 'r1.humidity')!;
  // Both on the new base: ts − mono is the clock's offset after the step.
  expect(t.sample!.ts - t.sample!.mono).toBe(offset);
  expect(h.sample!.ts - h.sample!.mono).toBe(offset);
  expect(t.clockRedatedMs).toBe(14 * DAY);
  expect(h.clockRedatedMs).toBeUndefined();
  expect(t.sample!.clockUnsynced).toBeUndefined();
  // The row's time column (what the byte cap and lag figures read) agrees with the body.
  expect(rows.find((r) => r.body.includes('r1.temperature'))!.ts).toBe(t.sample!.ts);
});
