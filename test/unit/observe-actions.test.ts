/**
 * Action records on the observability side: each becomes an `action` entry of /api/events and a
 * count in `rackguard_action_records_total{action,status}` on /metrics.
 */
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../agent/observe/metrics.js';
import { actionEventJson, type AgentView } from '../../agent/observe/state.js';
import type { ActionEvent } from '../../agent/outputs/events.js';

const view: AgentView = {
  site: 's',
  gateway: 'g',
  zones: () => [],
  health: () => [],
  outputsStats: () => ({ outbox: undefined, sinks: {} }),
  readiness: () => ({ ready: true, reasons: [] }),
  subscribe: () => () => undefined,
};

const record: ActionEvent = { kind: 'action', action: 'page', status: 'succeeded', zone: 'za', incident: 'za-1', ts: 1_700_000_000_000, message: 'exit 0', detail: { exitCode: 0 } };

describe('action records on /api/events and /metrics', () => {
  it('an action record is an event entry with its incident, status and zone', () => {
    expect(actionEventJson(record)).toEqual({
      kind: 'action',
      ts: new Date(record.ts).toISOString(),
      tsMs: record.ts,
      zone: 'za',
      state: 'succeeded',
      message: 'action page: succeeded: exit 0',
      detail: { action: 'page', incident: 'za-1', exitCode: 0 },
    });
  });

  it('counts records by action and status', async () => {
    const m = createMetrics(view, { version: '0.0.0', sseClients: () => 0 });
    m.countAction('page', 'started');
    m.countAction('page', 'succeeded');
    m.countAction('shutdown', 'inhibited');
    m.countAction('page', 'started');
    const text = await m.render();
    expect(text).toContain('rackguard_action_records_total{action="page",status="started"} 2');
    expect(text).toContain('rackguard_action_records_total{action="page",status="succeeded"} 1');
    expect(text).toContain('rackguard_action_records_total{action="shutdown",status="inhibited"} 1');
  });
});
