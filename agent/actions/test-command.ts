/**
 * `rackguard actions test --config FILE [--zone Z]` (issue 8, item 4): the whole shutdown chain in test
 * mode against the real hosts and BMCs, so the chain can be checked without shutting anything down
 * (NUT users could not: nut#3354, nut#3003). Every host agent is sent a signed `test` command and
 * must answer `would-act`; every BMC must be reachable, accept the credentials and allow the reset
 * type. Failover, final and policy hooks are listed, never run. The result is a table; exit 0 when
 * every host confirmed, 1 otherwise (main.ts owns the exit).
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { pino, type Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import type { ActionDef, HookDef } from '../config/actions-schema.js';
import type { Config } from '../config/model.js';
import { asError, RackguardError } from '../errors.js';
import { outputContextFromConfig } from '../outputs/context.js';
import { clientOptions, redactUrl } from '../outputs/mqtt-connection.js';
import { runShutdown, type ShutdownRecord } from './shutdown.js';
import { TransportRegistry, type TransportFactories } from './transports.js';
import type { ActionContext, ActionResult, HostOutcome } from './types.js';

export interface ActionsTestOptions {
  zone?: string;
  out: (text: string) => void;
  /** Warnings and errors of the parts (stderr by default, so that stdout is the table). */
  logger?: Logger;
  clock?: Clock;
  env?: NodeJS.ProcessEnv;
  /** Replaces transports (tests). */
  factories?: Partial<TransportFactories>;
}

/** Usage/config problems of this command (main exits 2 on them). */
export class ActionsTestUsageError extends RackguardError {
  constructor(message: string) {
    super('E_CONFIG_INVALID', message);
  }
}

/** One row of the result table. */
export interface TestRow {
  group: string;
  host: string;
  via: string;
  status: HostOutcome['status'];
  ms: number;
  message: string;
}

const CONNECT_TIMEOUT_MS = 10_000;

/** Runs the test chain; resolves with the exit code (0 every host confirmed, 1 otherwise). */
export async function actionsTestCommand(config: Config, opts: ActionsTestOptions): Promise<number> {
  const actions = config.actions;
  const out = opts.out;
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? pino({ level: 'warn' }, pino.destination(2));
  if (!actions) throw new ActionsTestUsageError('the configuration has no actions: section: nothing to test');
  if (opts.zone !== undefined && !config.zones.some((z) => z.id === opts.zone)) {
    throw new ActionsTestUsageError(`unknown zone "${opts.zone}"; configured zones: ${config.zones.map((z) => z.id).join(', ') || '(none)'}`);
  }
  const policies = actions.policies.filter((p) => opts.zone === undefined || p.zones.includes('*') || p.zones.includes(opts.zone));
  const shutdown = actions.shutdown;
  const wantsShutdown = opts.zone === undefined ? shutdown !== undefined : policies.some((p) => p.actions.some((a) => a.kind === 'shutdown'));

  out(`actions test: site ${config.site}, gateway ${config.gateway}${opts.zone ? `, zone ${opts.zone}` : ''}. Test mode: nothing is shut down and no hook runs.\n`);
  for (const p of policies) {
    out(`policy zones ${p.zones.join(',')} at ${p.level}: ${p.actions.map(describeAction).join(' → ')}${p.onClear.length ? `; on clear: ${p.onClear.map(describeAction).join(' → ')}` : ''}\n`);
  }
  if (!shutdown || !wantsShutdown) {
    out(`no shutdown sequence ${shutdown ? `in the policies of zone ${String(opts.zone)}` : 'configured'}: no host to ask\n`);
    return 0;
  }
  if (shutdown.failover.length) out(`failover (listed, not run): ${shutdown.failover.map(describeAction).join(' → ')}\n`);
  if (shutdown.final.length) out(`final (listed, not run): ${shutdown.final.map(describeAction).join(' → ')}\n`);

  const needsMqtt = shutdown.groups.some((g) => g.hosts.some((h) => h.via === 'agent'));
  const mqttNote = { text: '' };
  const client = needsMqtt ? await connectForTest(config, opts.env ?? process.env, mqttNote) : undefined;
  if (mqttNote.text) out(`${mqttNote.text}\n`);
  const registry = new TransportRegistry(
    { logger, clock, gateway: config.gateway, stateDir: actions.stateDir, hostsBaseTopic: actions.hostsBaseTopic, ...(client ? { mqtt: client } : {}) },
    { commandTtlS: shutdown.commandTtlS, ...(opts.factories ? { factories: opts.factories } : {}) },
  );
  const records: ShutdownRecord[] = [];
  let onRecord = (): void => undefined;
  const ctx: ActionContext = {
    incident: `actions-test-${clock.wallMs()}`,
    zone: opts.zone ?? '*',
    level: 'critical',
    etaS: null,
    reason: 'rackguard actions test',
    ts: clock.wallMs(),
    dryRun: true,
  };
  const listed = (_hook: HookDef): Promise<ActionResult> => Promise.resolve({ status: 'dry-run', message: 'listed, not run (actions test)', durationMs: 0, detail: {} });
  try {
    const report = await runShutdown(
      ctx,
      {
        config: shutdown,
        transports: registry,
        runHook: listed,
        record: (e) => {
          records.push(e);
          onRecord();
        },
        clock,
        logger,
      },
      new AbortController().signal,
    );
    const rows: TestRow[] = [];
    report.groups.forEach((g, gi) => {
      g.hosts.forEach((o, hi) => {
        rows.push({ group: g.name, host: o.host, via: shutdown.groups[gi]!.hosts[hi]!.via, status: o.status, ms: Math.round(o.afterMs), message: o.message });
      });
    });
    // A host agent with a test command configured runs it and reports: wait for those reports.
    const pending = new Set(report.groups.flatMap((g) => g.hosts.filter((o) => o.status === 'would-act' && o.detail?.finalPending).map((o) => o.host)));
    const later = (host: string): ShutdownRecord | undefined => records.find((r) => r.detail?.step === 'host-later' && r.detail.host === host);
    if (pending.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = clock.setTimeout(resolve, shutdown.hostSyncS * 1000);
        onRecord = () => {
          if ([...pending].every((h) => later(h))) {
            clock.clearTimeout(timer);
            resolve();
          }
        };
        onRecord();
      });
    }
    // A BMC check still running when its group hit hostSyncS has its own verdict moments later (the
    // transports bound every call by the acknowledgement deadline); wait for it, up to the host's
    // timeoutS, so that the row says why and a Redfish session is deleted before main exits.
    const bmcHosts = new Map(shutdown.groups.flatMap((g) => g.hosts).filter((h) => h.via !== 'agent').map((h) => [h.name, h]));
    const late = (host: string): ShutdownRecord | undefined => records.find((r) => r.detail?.step === 'host-late' && r.detail.host === host);
    // The coordinator's own timeouts carry no detail; a transport's verdict always does (its `via`).
    const latePending = report.groups.flatMap((g) => g.hosts.filter((o) => o.status === 'timeout' && o.detail === undefined && bmcHosts.has(o.host)).map((o) => o.host));
    if (latePending.length > 0) {
      const boundMs = Math.max(...latePending.map((h) => (bmcHosts.get(h) as { timeoutS: number }).timeoutS)) * 1000;
      await new Promise<void>((resolve) => {
        const timer = clock.setTimeout(resolve, boundMs);
        onRecord = () => {
          if (latePending.every((h) => late(h))) {
            clock.clearTimeout(timer);
            resolve();
          }
        };
        onRecord();
      });
    }
    for (const row of rows) {
      const l = late(row.host);
      if (l && latePending.includes(row.host)) {
        // A confirmation after hostSyncS is still a timeout: in a real shutdown the next group would not have waited.
        if (l.status !== 'would-act') row.status = l.status as HostOutcome['status'];
        row.message = `${l.message.replace(`${row.host} (after the group moved on): `, '')} (after hostSyncS ${shutdown.hostSyncS} s)`;
      }
      if (!pending.has(row.host)) continue;
      const r = later(row.host);
      if (!r) row.message += `; its test check did not report within ${shutdown.hostSyncS} s`;
      else if (r.status !== 'would-act') {
        row.status = r.status as HostOutcome['status'];
        row.message = `test check: ${r.message.replace(`${row.host}: `, '')}`;
      } else row.message += '; test check passed';
    }
    out(formatTable(rows));
    const confirmed = rows.filter((r) => r.status === 'would-act').length;
    out(`${confirmed}/${rows.length} host(s) confirmed they would act\n`);
    return confirmed === rows.length ? 0 : 1;
  } finally {
    registry.close();
    await client?.endAsync(true).catch(() => undefined);
  }
}

/** One hook or action for the listing: what it would run, without anything secret (no env, no headers). */
export function describeAction(a: ActionDef | HookDef): string {
  switch (a.kind) {
    case 'exec':
      return `${a.name} (exec ${a.argv.map((x) => JSON.stringify(x)).join(' ')})`;
    case 'http': {
      let where = a.url;
      try {
        const u = new URL(a.url);
        where = `${u.origin}${u.pathname}`;
      } catch {
        // schema-checked already
      }
      return `${a.name} (http POST ${where})`;
    }
    case 'shutdown':
      return `${a.name} (shutdown sequence)`;
  }
}

export function formatTable(rows: TestRow[]): string {
  const head: TestRow = { group: 'GROUP', host: 'HOST', via: 'VIA', status: 'STATUS' as HostOutcome['status'], ms: 0, message: 'MESSAGE' };
  const cells = (r: TestRow, isHead = false): string[] => [r.group, r.host, r.via, r.status, isHead ? 'MS' : String(r.ms), r.message];
  const all = [cells(head, true), ...rows.map((r) => cells(r))];
  const widths = [0, 1, 2, 3, 4].map((i) => Math.max(...all.map((c) => c[i]!.length)));
  return all.map((c) => `${c.slice(0, 5).map((x, i) => (i === 4 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!))).join('  ')}  ${c[5]}`.trimEnd()).join('\n') + '\n';
}

/**
 * A connection of its own to outputs.mqtt's broker: same credentials and TLS as the agent, but its
 * own client id, a clean session and no last will, so a running agent's session and status are left
 * alone. Undefined (with a note) when there is no broker or it cannot be reached.
 */
async function connectForTest(config: Config, env: NodeJS.ProcessEnv, note: { text: string }): Promise<MqttClient | undefined> {
  const m = config.outputs?.mqtt;
  if (!m) {
    note.text = 'outputs.mqtt is not configured: host agents cannot be reached';
    return undefined;
  }
  const base = clientOptions(m, outputContextFromConfig(config), 'unused', env);
  const { will: _will, properties: _properties, ...rest } = base;
  const opts: IClientOptions = { ...rest, clientId: `rackguard-actions-test-${config.gateway}-${process.pid}`, clean: true, reconnectPeriod: 0, connectTimeout: CONNECT_TIMEOUT_MS };
  const client = mqtt.connect(m.url, opts);
  const ok = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), CONNECT_TIMEOUT_MS + 1000);
    let settled = false;
    const done = (v: boolean, why?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (why) note.text = `cannot connect to ${redactUrl(m.url)}: ${why}`;
      resolve(v);
    };
    client.once('connect', () => done(true));
    client.once('error', (err) => done(false, asError(err).message));
    client.once('close', () => done(false, 'connection closed'));
  });
  if (ok) return client;
  if (!note.text) note.text = `cannot connect to ${redactUrl(m.url)} within ${CONNECT_TIMEOUT_MS} ms`;
  await client.endAsync(true).catch(() => undefined);
  return undefined;
}
