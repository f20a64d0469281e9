/**
 * The incident file (agent/actions/incidents.ts) read back after a restart: an entry that parses as
 * JSON but lacks fields (an older or hand-edited file) must not make the engine throw inside the
 * detector's event path (it runs synchronously in the agent's `detection` listeners, next to the
 * acquisition loop) and must not stop the zone's actions: the malformed entry is dropped with a
 * record, and the zone's next escalation is a new incident that runs its actions.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ActionEngine } from '../../agent/actions/engine.js';
import { INCIDENTS_FILE } from '../../agent/actions/incidents.js';
import { VirtualClock } from '../../agent/clock.js';
import { parseConfig } from '../../agent/config/load.js';
import type { ActionEvent } from '../../agent/outputs/events.js';
import { silentLogger } from '../helpers/agent.js';
import { settle } from '../helpers/fake-serial.js';

const dirs: string[] = [];
const engines: ActionEngine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) await e.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('incident file read back after a restart', () => {
  it('a parseable entry with missing fields is dropped, not thrown from onDetection; the zone still acts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rackguard-incidents-'));
    dirs.push(dir);
    const clock = new VirtualClock({ startWallMs: Date.now() });
    mkdirSync(join(dir, 'state'));
    // No `fired`, no `highest`, no `startedTs`: as an older or hand-edited file could have it.
    writeFileSync(join(dir, 'state', INCIDENTS_FILE), JSON.stringify({ version: 1, incidents: [{ id: 'za-old', zone: 'za', handled: [], aliveTs: clock.wallMs() }] }));
    const config = parseConfig(
      `version: 1
buses:
  - id: l
    type: serial
    path: /dev/null
    devices:
      - { id: r1, unitId: 1, profile: xy-md02 }
      - { id: r2, unitId: 2, profile: xy-md02 }
zones:
  - { id: za, sensors: [r1.temperature, r2.temperature] }
actions:
  stateDir: state
  policies:
    - level: alarm
      actions: [{ kind: exec, name: page, argv: [/bin/true] }]
`,
      join(dir, 'c.yaml'),
      { baseDir: dir },
    );
    const records: ActionEvent[] = [];
    const engine = new ActionEngine(config.actions!, { clock, logger: silentLogger, site: 's', gateway: 'g', zones: config.zones, record: (e) => records.push(e), dryRun: true });
    engines.push(engine);
    await engine.start();
    const ev = { sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 0, k: 2, etaCriticalS: null };
    expect(() => engine.onDetection({ kind: 'zone_level', zone: 'za', from: 'warning', level: 'alarm', reason: 'to alarm', mono: clock.monoMs(), ts: clock.wallMs(), evidence: ev })).not.toThrow();
    await settle();
    expect(records.filter((r) => r.action === 'page').map((r) => r.status)).toEqual(['dry-run']);
    expect(records.find((r) => r.action === 'incident' && r.status === 'failed')?.message).toContain('malformed entry za-old dropped');
  });
});
