/**
 * The agent as a process: `rackguard run` (compiled, plain node) polling the reference rack every
 * second for 60 s against the simulator (served from this process, not measured), with detection
 * and its outputs (outbox + MQTT to a real mosquitto) on. Peak RSS from
 * /proc/PID/status VmHWM, CPU from /proc/PID/stat utime+stime over the measured window.
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

const WARMUP_S = 5;
const MEASURE_S = 60;
const CLK_TCK = 100; // Linux USER_HZ

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of the whole line)
}

function statusKb(pid: number, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

export async function run(): Promise<Figures> {
  const root = packageRoot();
  const tmp = await tempDir('rackguard-bench-agent-');
  const pty = await startPtyPair();
  const port = await freePort();
  // As in production: every cycle goes through the durable outbox to a real broker (mosquitto).
  const broker = await startMosquitto();
  const file = writeConfigVariant(join(root, 'config', 'rackguard.example.yaml'), join(tmp.path, 'rack.yaml'), (raw) => {
    pointAtSimulator(raw, pty.a, port);
    setPollInterval(raw, 1000);
    raw.outputs = { outbox: { path: join(tmp.path, 'outbox.db') }, mqtt: { url: broker.url } };
  });
  const sim = await startSimulator({ config: loadConfigFile(file), serialPath: pty.b, tcpPort: port });
  const child = spawn(process.execPath, [join(root, 'dist', 'agent', 'main.js'), 'run', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let lines = 0;
  let errors = '';
  child.stdout.on('data', (b: Buffer) => (lines += b.toString().split('\n').length - 1));
  child.stderr.on('data', (b: Buffer) => (errors += b.toString()));
  try {
    const pid = child.pid!;
    await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
    if (child.exitCode !== null) throw new Error(`agent exited: ${errors}`);
    const c0 = cpuTicks(pid);
    const t0 = performance.now();
    let peakRss = 0;
    for (let s = 0; s < MEASURE_S; s++) {
      await new Promise((r) => setTimeout(r, 1000));
      peakRss = Math.max(peakRss, statusKb(pid, 'VmRSS'));
    }
    const cpuS = (cpuTicks(pid) - c0) / CLK_TCK;
    const wallS = (performance.now() - t0) / 1000;
    const hwm = statusKb(pid, 'VmHWM');
    const served = Object.values(sim.rack.counters()).reduce((n, c) => n + c.replies, 0);
    return {
      rss_mb: Math.round((Math.max(hwm, peakRss) / 1024) * 10) / 10,
      rss_target: '<= 90 MB',
      cpu_pct: Math.round((cpuS / wallS) * 1000) / 10,
      cpu_target: '<= 3 % of one core',
      measured_s: Math.round(wallS),
      requests_served: served,
      log_lines: lines,
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await sim.stop();
    await pty.stop();
    await broker.cleanup();
    await tmp.cleanup();
  }
}
