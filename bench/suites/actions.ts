/**
 * Actions (issue 8): the coordinated shutdown through a real mosquitto and real `rackguard host`
 * processes (dist/agent/main.js; `npm run bench` builds first), whose local command is /bin/true.
 *   critical_to_first_host_ack_ms_p50 / _max  from the call to runShutdown for a critical context
 *                                   (no failover hook) to the first host's acknowledgement; 20 runs
 *   shutdown_sequence_overhead_ms   3 groups × 10 host agents, one failover and one final exec hook
 *                                   (/bin/true): the whole sequence minus the hooks' own run time,
 *                                   median of 3 runs
 *   shutdown_sequence_total_ms      the whole sequence of that median run, hooks included
 * 30 host agents on a 2-core machine is heavy: this is a benchmark, not a test.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { systemClock } from '../../agent/clock.js';
import { shutdownSchema, type HookDef } from '../../agent/config/actions-schema.js';
import { runShutdown, type ShutdownRecord } from '../../agent/actions/shutdown.js';
import { TransportRegistry } from '../../agent/actions/transports.js';
import type { ActionContext, ActionResult } from '../../agent/actions/types.js';
import { packageRoot } from '../../agent/paths.js';
import { startMosquitto } from '../../scripts/lib/mosquitto.js';
import { spawnAndWait, type SpawnedProcess } from '../../scripts/lib/proc.js';
import { tempDir } from '../../scripts/lib/tmp.js';
import type { Figures } from '../results.js';

const MAIN = join(packageRoot(), 'dist', 'agent', 'main.js');
const BASE = 'rg-bench';
const GROUPS = 3;
const PER_GROUP = 10;
const ACK_RUNS = 20;
const SEQUENCE_RUNS = 3;
/** Host agents started at once: 30 node processes starting together on 2 cores take a while. */
const START_BATCH = 5;
const logger = pino({ level: 'silent' });

/** The exec hook as the engine runs it, reduced to spawn-and-wait (the hook's own time is subtracted). */
function runHook(hook: HookDef): Promise<ActionResult> {
  if (hook.kind !== 'exec') throw new Error('bench actions: exec hooks only');
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(hook.argv[0]!, hook.argv.slice(1), { stdio: 'ignore' });
    child.once('error', (err) => resolve({ status: 'failed', message: err.message, durationMs: performance.now() - t0, detail: {} }));
    child.once('exit', (code) => resolve({ status: code === 0 ? 'succeeded' : 'failed', message: `exit ${String(code)}`, durationMs: performance.now() - t0, detail: {} }));
  });
}

const ctx = (incident: string): ActionContext => ({ incident, zone: 'bench', level: 'critical', etaS: 60, reason: 'bench', ts: Date.now(), dryRun: false });

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number): number => Math.round(x * 10) / 10;

export async function run(): Promise<Figures> {
  const broker = await startMosquitto();
  const tmp = await tempDir('rackguard-bench-actions-');
  const hosts: SpawnedProcess[] = [];
  const gw = mqtt.connect(broker.url, { clientId: 'bench-gateway', protocolVersion: 5, clean: true, reconnectPeriod: 200 });
  const registry = new TransportRegistry({ logger, clock: systemClock, gateway: 'gw-bench', stateDir: join(tmp.path, 'gw-state'), hostsBaseTopic: BASE, mqtt: gw }, { commandTtlS: 60 });
  try {
    await new Promise<void>((r) => gw.once('connect', () => r()));
    const names = Array.from({ length: GROUPS * PER_GROUP }, (_, i) => `h${String(i + 1).padStart(2, '0')}`);
    const secretFile = (h: string): string => join(tmp.path, `${h}.secret`);
    for (let i = 0; i < names.length; i += START_BATCH) {
      const batch = names.slice(i, i + START_BATCH).map((host) => {
        writeFileSync(secretFile(host), `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
        const file = join(tmp.path, `${host}.yaml`);
        writeFileSync(file, `version: 1\nhost: ${host}\nmqtt: { url: "${broker.url}", reconnectMs: 200 }\nbaseTopic: ${BASE}\nsecretFile: ${secretFile(host)}\nstateDir: ${join(tmp.path, `${host}-state`)}\ncommands: { shutdown: [/bin/true] }\n`);
        return spawnAndWait(process.execPath, [MAIN, 'host', '--config', file], { readyLine: /host agent ready/, timeoutMs: 60_000, cwd: tmp.path });
      });
      hosts.push(...(await Promise.all(batch)));
    }
    const agentHost = (h: string) => ({ via: 'agent' as const, name: h, secretFile: secretFile(h) });

    // 1. Critical context → first acknowledgement (one group of three hosts, no failover).
    const ackConfig = shutdownSchema.parse({ groups: [{ name: 'g1', hosts: names.slice(0, 3).map(agentHost) }], hostSyncS: 30, commandTtlS: 60 });
    const acks: number[] = [];
    for (let i = 0; i < ACK_RUNS; i++) {
      let firstAck: number | undefined;
      const t0 = performance.now();
      const record = (e: ShutdownRecord): void => {
        if (firstAck === undefined && e.status === 'acknowledged' && e.detail?.step === 'host') firstAck = performance.now();
      };
      const report = await runShutdown(ctx(`bench-ack-${i}`), { config: ackConfig, transports: registry, runHook, record, clock: systemClock, logger }, new AbortController().signal);
      if (firstAck === undefined) throw new Error(`bench actions: no acknowledgement in run ${i}: ${JSON.stringify(report.groups)}`);
      acks.push(firstAck - t0);
    }

    // 2. The whole sequence: failover hook, 3 groups × 10 hosts, final hook.
    const hook = (name: string): HookDef => ({ kind: 'exec', name, argv: ['/bin/true'], timeoutS: 30, killGraceS: 1, env: {} });
    const seqConfig = shutdownSchema.parse({
      failover: [hook('failover')],
      final: [hook('final')],
      groups: Array.from({ length: GROUPS }, (_, g) => ({ name: `g${g + 1}`, hosts: names.slice(g * PER_GROUP, (g + 1) * PER_GROUP).map(agentHost) })),
      hostSyncS: 30,
      commandTtlS: 60,
    });
    const runs: Array<{ total: number; overhead: number }> = [];
    for (let i = 0; i < SEQUENCE_RUNS; i++) {
      const t0 = performance.now();
      const report = await runShutdown(ctx(`bench-seq-${i}`), { config: seqConfig, transports: registry, runHook, record: () => undefined, clock: systemClock, logger }, new AbortController().signal);
      const total = performance.now() - t0;
      const bad = report.groups.flatMap((g) => g.hosts).filter((o) => o.status !== 'acknowledged');
      if (bad.length > 0) throw new Error(`bench actions: hosts did not acknowledge: ${JSON.stringify(bad)}`);
      const hooksMs = [...report.failover, ...report.final].reduce((s, r) => s + r.durationMs, 0);
      runs.push({ total, overhead: total - hooksMs });
    }
    const mid = [...runs].sort((a, b) => a.overhead - b.overhead)[Math.floor(runs.length / 2)]!;
    return {
      critical_to_first_host_ack_ms_p50: round(median(acks)),
      critical_to_first_host_ack_ms_max: round(Math.max(...acks)),
      critical_to_first_host_ack_ms: round(median(acks)),
      shutdown_sequence_overhead_ms: round(mid.overhead),
      shutdown_sequence_total_ms: round(mid.total),
      shutdown_sequence_hosts: names.length,
    };
  } finally {
    registry.close();
    await gw.endAsync(true);
    await Promise.all(hosts.map((h) => h.stop()));
    await broker.cleanup();
    await tmp.cleanup();
  }
}
