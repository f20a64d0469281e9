/**
 * `rackguard drill` lists the actions that would fire, in order, with their planned times: the demo
 * rack's config plus an `actions:` section, the reference chiller-trip scenario on virtual time
 * (the real detector), then the text, JSON and HTML outputs. Nothing runs.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { packageRoot } from '../../agent/paths.js';
import { drillCommand } from '../../drill/command.js';
import { runDrill } from '../../drill/drill.js';
import { renderReport } from '../../drill/report.js';
import { loadScenarioFile } from '../../firmware-sim/scenario.js';

const ROOT = packageRoot();
const dir = mkdtempSync(join(tmpdir(), 'rackguard-plan-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'user'), 'admin\n');
writeFileSync(join(dir, 'pass'), 'secret\n');

const ACTIONS = `
actions:
  policies:
    - level: alarm
      actions:
        - { kind: exec, name: page, argv: [/bin/true, page], timeoutS: 10, killGraceS: 2 }
        - { kind: http, name: chat, url: "http://127.0.0.1:9/hook", timeoutS: 5, retries: 1, retryInitialMs: 1000 }
      onClear: [{ kind: exec, name: unpage, argv: [/bin/true] }]
    - level: critical
      actions: [{ kind: shutdown }]
  shutdown:
    failover: [{ kind: exec, name: drain, argv: [/bin/true, drain], timeoutS: 30 }]
    hostSyncS: 60
    groups:
      - { name: batch, hosts: [{ via: ipmi, name: c1, address: 127.0.0.1, usernameFile: user, passwordFile: pass }] }
      - { name: storage, hosts: [{ via: ipmi, name: s1, address: 127.0.0.1, usernameFile: user, passwordFile: pass }] }
`;

const text = readFileSync(join(ROOT, 'config/demo.yaml'), 'utf8') + ACTIONS;
const config = parseConfig(text, 'demo+actions.yaml', { baseDir: dir });
const scenarioFile = join(ROOT, 'firmware-sim/scenarios/chiller-trip-2c.yaml');

describe('drill: planned actions', () => {
  const result = runDrill({ config, scenario: loadScenarioFile(scenarioFile, { config }), durationS: 1500 });
  const actions = result.actions ?? [];

  it('per zone, in order: the alarm actions at the alarm, then the shutdown steps at critical, with worst-case start times', () => {
    const zones = [...new Set(actions.map((a) => a.zone))];
    expect(zones.length).toBeGreaterThanOrEqual(1);
    for (const zone of zones) {
      const mine = actions.filter((a) => a.zone === zone);
      expect(mine.map((a) => a.action)).toEqual(['page', 'chat', 'shutdown', 'shutdown/failover/drain', 'shutdown/group/batch', 'shutdown/group/storage']);
      const alarmAt = result.events.find((e) => e.event.zone === zone && e.event.kind === 'zone_level' && e.event.level === 'alarm')!.timeS;
      const critAt = result.events.find((e) => e.event.zone === zone && e.event.kind === 'zone_level' && e.event.level === 'critical')!.timeS;
      expect(mine[0]).toMatchObject({ atS: alarmAt, latestAtS: alarmAt, level: 'alarm', status: 'would-run', incident: `${zone}#1` });
      // chat waits for page's whole budget (10 s timeout + 2 s grace) at the latest.
      expect(mine[1]!.latestAtS).toBe(alarmAt + 12);
      const [, , sd, drain, batch, storage] = mine;
      expect(sd).toMatchObject({ atS: critAt, level: 'critical' });
      // chat's budget: 2 attempts × 5 s + 1 s backoff; then failover (30 + 5 s), then one hostSyncS per group.
      const chatEnd = Math.max(critAt, alarmAt + 12 + 11);
      expect(drain!.latestAtS).toBe(chatEnd);
      expect(batch!.latestAtS).toBe(chatEnd + 35);
      expect(storage!.latestAtS).toBe(chatEnd + 35 + 60);
      expect(batch!.what).toBe('ask c1 (ipmi); wait up to 60 s');
    }
  });

  it('text and --json outputs list them after the events; the HTML report has the table and timeline markers', () => {
    let out = '';
    drillCommand(config, { scenario: scenarioFile, json: false, durationS: 1500 }, (t) => (out += t));
    const lines = out.split('\n').filter((l) => l.startsWith('action '));
    expect(lines.length).toBe(actions.length);
    expect(lines[0]).toMatch(/^action \d+ s \S+ alarm \S+#1: page would-run: exec "\/bin\/true" "page"$/);
    let json = '';
    drillCommand(config, { scenario: scenarioFile, json: true, durationS: 1500 }, (t) => (json += t));
    const planned = json.trim().split('\n').map((l) => JSON.parse(l)).filter((o) => o.kind === 'planned_action');
    expect(planned).toEqual(actions.map((a) => ({ kind: 'planned_action', ...a })));
    const html = renderReport(result);
    expect(html.match(/<tr class="action-row"/g)).toHaveLength(actions.length);
    expect(html.match(/<g class="action" /g)).toHaveLength(actions.length);
    expect(html).toContain('shutdown/group/storage');
  });
});
