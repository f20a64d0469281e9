/**
 * The agent as a process: `rackguard run` (compiled, plain node) polling the reference rack every
 * second for 60 s against the simulator (served from this process, not measured), with detection
 * and its outputs (outbox + MQTT to a real mosquitto) on. Peak RSS from
 * /proc/PID/status VmHWM, CPU from /proc/PID/stat utime+stime over the measured window. With outputs,
 * the outbox's transactions per hour (outputs.commits_per_hour in the issue) from its health lines.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfigFile } from '../../agent/config/load.js';
import { packageRoot } from '../../agent/paths.js';
import { startSimulator } from '../../firmware-sim/index.js';
import { freePort } from '../../scripts/lib/ports.js';
import { startPtyPair } from '../../scripts/lib/pty.js';
import { tempDir } from '../../scripts/lib/tmp.js';
import { startMosquitto } from '../../scripts/lib/mosquitto.js';
import { pointAtSimulator, setPollInterval, writeConfigVariant } from '../../scripts/lib/config-variant.js';
import type { Figures } from '../results.js';
import { unitLaunch } from '../unit-launch.js';

const WARMUP_S = 5;
const MEASURE_S = 60;
const CLK_TCK = 100; // Linux USER_HZ
/** The node flags and environment of systemd/rackguard.service. */
const UNIT = unitLaunch();
export const UNIT_NODE_FLAGS = UNIT.nodeFlags;

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of the whole line)
}

function statusKb(pid: number, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

export interface MeasureOptions {
  /** The durable outbox and MQTT to a real mosquitto, as in production. */
  outputs: boolean;
  /** The local HTTP endpoint (status page, /metrics, SSE) on a free loopback port. */
  http?: boolean;
  nodeFlags: string[];
  /** Runs beside the measured window (a scraper, an open status page); stopped by the signal at its end. */
  during?: (ctx: RunningAgent, stop: AbortSignal) => Promise<void>;
  /** Runs after the window, before the agent is stopped (figures that must not load the window). */
  after?: (ctx: RunningAgent) => Promise<void>;
}

export interface RunningAgent {
  pid: number;
  /** The HTTP endpoint's base URL (with `http`). */
  url?: string;
}

export interface ProcessFigures {
  /** Outbox transactions per hour, from the agent's own `outbox health` lines (with outputs only). */
  commitsPerHour: number | null;
  rssMb: number;
  cpuPct: number;
  wallS: number;
  served: number;
  lines: number;
}

/** Runs `rackguard run` on the reference rack (every device polled each second) and measures it. */
export async function measureAgent(o: MeasureOptions): Promise<ProcessFigures> {
  const withOutputs = o.outputs;
  const root = packageRoot();
  const tmp = await tempDir('rackguard-bench-agent-');
  const pty = await startPtyPair();
  const port = await freePort();
  const httpPort = await freePort();
  // With outputs, as in production: every cycle goes through the durable outbox to a real broker.
  const broker = withOutputs ? await startMosquitto() : undefined;
  const file = writeConfigVariant(join(root, 'config', 'rackguard.example.yaml'), join(tmp.path, 'rack.yaml'), (raw) => {
    pointAtSimulator(raw, pty.a, port);
    setPollInterval(raw, 1000);
    if (broker) {
      raw.outputs = { outbox: { path: join(tmp.path, 'outbox.db') }, mqtt: { url: broker.url } };
      // The outbox's commit counter comes from its health line: one every 10 s is enough to count.
      raw.logging = { ...(raw.logging as object), healthIntervalS: 10 };
    } else delete raw.outputs;
    if (o.http) raw.http = { port: httpPort };
  });
  const sim = await startSimulator({ config: loadConfigFile(file), serialPath: pty.b, tcpPort: port });
  // The environment of the unit (systemd/rackguard.service), so the figures describe the service.
  const child = spawn(process.execPath, [...o.nodeFlags, join(root, 'dist', 'agent', 'main.js'), 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...UNIT.env } });
  let lines = 0;
  let errors = '';
  let partial = '';
  const commits: Array<{ t: number; commits: number }> = [];
  child.stdout.on('data', (b: Buffer) => {
    const text = partial + b.toString();
    const all = text.split('\n');
    partial = all.pop()!;
    lines += all.length;
    for (const l of all) {
      if (!l.includes('"outbox health"')) continue;
      const h = JSON.parse(l) as { commits?: number };
      if (typeof h.commits === 'number') commits.push({ t: performance.now(), commits: h.commits });
    }
  });
  child.stderr.on('data', (b: Buffer) => (errors += b.toString()));
  try {
    const pid = child.pid!;
    await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
    if (child.exitCode !== null) throw new Error(`agent exited: ${errors}`);
    const ctx: RunningAgent = { pid, ...(o.http ? { url: `http://127.0.0.1:${httpPort}/` } : {}) };
    const windowEnd = new AbortController();
    const c0 = cpuTicks(pid);
    const t0 = performance.now();
    const beside = o.during?.(ctx, windowEnd.signal);
    let peakRss = 0;
    for (let s = 0; s < MEASURE_S; s++) {
      await new Promise((r) => setTimeout(r, 1000));
      peakRss = Math.max(peakRss, statusKb(pid, 'VmRSS'));
    }
    const cpuS = (cpuTicks(pid) - c0) / CLK_TCK;
    const wallS = (performance.now() - t0) / 1000;
    const hwm = statusKb(pid, 'VmHWM');
    windowEnd.abort();
    await beside;
    await o.after?.(ctx);
    const first = commits[0];
    const last = commits.at(-1);
    const commitsPerHour = first && last && last.t > first.t ? Math.round(((last.commits - first.commits) / ((last.t - first.t) / 1000)) * 3600) : null;
    return {
      commitsPerHour,
      rssMb: Math.round((Math.max(hwm, peakRss) / 1024) * 10) / 10,
      cpuPct: Math.round((cpuS / wallS) * 1000) / 10,
      wallS: Math.round(wallS),
      served: Object.values(sim.rack.counters()).reduce((n, c) => n + c.replies, 0),
      lines,
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await sim.stop();
    await pty.stop();
    await broker?.cleanup();
    await tmp.cleanup();
  }
}

/**
 * Two runs. The figure: acquisition and detection, default node flags. Then the full agent
 * with its outputs (SQLite outbox, MQTT to mosquitto), with the node flags of the unit
 * (systemd/rackguard.service: a capped young generation, one V8 worker thread).
 */
export async function run(): Promise<Figures> {
  const base = await measureAgent({ outputs: false, nodeFlags: [] });
  const full = await measureAgent({ outputs: true, nodeFlags: UNIT_NODE_FLAGS });
  return {
    rss_mb: base.rssMb,
    rss_target: '<= 90 MB',
    cpu_pct: base.cpuPct,
    cpu_target: '<= 3 % of one core',
    measured_s: base.wallS,
    requests_served: base.served,
    with_outputs_rss_mb: full.rssMb,
    with_outputs_cpu_pct: full.cpuPct,
    with_outputs_node_flags: UNIT_NODE_FLAGS.join(' '),
    with_outputs_requests_served: full.served,
    outputs_commits_per_hour: full.commitsPerHour,
    outputs_commits_target: '<= 3600 (SD-card wear)',
  };
}
