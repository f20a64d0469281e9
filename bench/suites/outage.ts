/**
 * Memory of the agent during an outage of both sinks, measured where it matters: a separate
 * `rackguard run` process (compiled, plain node, the production V8 flags), polling the reference
 * rack served by the simulator, with the MQTT broker and InfluxDB both down (nothing listens on their
 * ports), so everything piles up in the outbox.
 *
 * Time is compressed: every device is polled every 100 ms instead of every second, so 3 minutes
 * carry 30 minutes of the reference rack's data. RSS is sampled from /proc every second; warm-up is
 * the first 60 s (SQLite page cache, JIT, sinks' reconnect state), growth is what comes after, and
 * the figure that matters is growth per hour of reference-rack data.
 *   outage_rss_warm_mb, outage_rss_end_mb, outage_rss_peak_mb
 *   outage_rss_growth_mb_per_data_hour   least-squares slope of the anonymous-memory floor (RssAnon,
 *                                        20 s window minima) after warm-up (target <= 10)
 *   outage_outbox_mb                      outbox file size at the end (proof the backlog grew)
 */
import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfigFile } from '../../agent/config/load.js';
import { packageRoot } from '../../agent/paths.js';
import { startSimulator } from '../../firmware-sim/index.js';
import { freePort } from '../../scripts/lib/ports.js';
import { startPtyPair } from '../../scripts/lib/pty.js';
import { tempDir } from '../../scripts/lib/tmp.js';
import { pointAtSimulator, setPollInterval, writeConfigVariant } from '../../scripts/lib/config-variant.js';
import type { Figures } from '../results.js';
import { unitLaunch } from '../unit-launch.js';

const POLL_MS = 100;
const COMPRESSION = 1000 / POLL_MS;
const WARMUP_S = 60;
const MEASURE_S = 180;
/** As the installed service runs it (systemd/rackguard.service). */
const UNIT = unitLaunch();
const NODE_FLAGS = UNIT.nodeFlags;

function statusKb(pid: number, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

function sizeOr0(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

const mb = (kb: number): number => Math.round((kb / 1024) * 10) / 10;

export async function run(): Promise<Figures> {
  const root = packageRoot();
  const tmp = await tempDir('rackguard-bench-outage-');
  const pty = await startPtyPair();
  const [simPort, mqttPort, influxPort] = [await freePort(), await freePort(), await freePort()];
  const outboxPath = join(tmp.path, 'outbox.db');
  const file = writeConfigVariant(join(root, 'config', 'rackguard.example.yaml'), join(tmp.path, 'rack.yaml'), (raw) => {
    pointAtSimulator(raw, pty.a, simPort);
    setPollInterval(raw, POLL_MS);
    raw.logging = { level: 'warn', samples: false };
    raw.outputs = {
      outbox: { path: outboxPath },
      mqtt: { url: `mqtt://127.0.0.1:${mqttPort}` },
      influx: { url: `http://127.0.0.1:${influxPort}`, database: 'rackguard' },
    };
  });
  const sim = await startSimulator({ config: loadConfigFile(file), serialPath: pty.b, tcpPort: simPort });
  const child = spawn(process.execPath, [...NODE_FLAGS, join(root, 'dist', 'agent', 'main.js'), 'run', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...UNIT.env } });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  try {
    const pid = child.pid!;
    const rss: number[] = [];
    // Anonymous memory (the JS heap, native allocations) is what a leak grows. VmRSS also counts the
    // outbox's file pages and the WAL index (-shm), mapped shared memory that grows with the WAL and
    // shrinks at checkpoints: it made the raw RSS swing for reasons that are not the agent's memory.
    const anon: number[] = [];
    for (let s = 1; s <= WARMUP_S + MEASURE_S; s++) {
      await new Promise((r) => setTimeout(r, 1000));
      if (child.exitCode !== null) throw new Error(`agent exited during the outage: ${stderr}`);
      rss.push(statusKb(pid, 'VmRSS'));
      anon.push(statusKb(pid, 'RssAnon'));
    }
    // Median of the last 10 s at each end: one sample can land on a GC peak.
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const warm = median(rss.slice(WARMUP_S - 10, WARMUP_S));
    const end = median(rss.slice(-10));
    const dataHours = (MEASURE_S * COMPRESSION) / 3600;
    // Growth is the least-squares slope of the RSS floor: the minimum of each 20 s window, i.e. what
    // is left after the collector ran. Raw samples ride a garbage-collection sawtooth of ±5 MB whose
    // phase alone can make a 3-minute slope look like ±15 MB per data hour.
    const FLOOR_S = 20;
    const floors: Array<{ t: number; kb: number }> = [];
    for (let i = WARMUP_S; i + FLOOR_S <= anon.length; i += FLOOR_S) floors.push({ t: i + FLOOR_S / 2, kb: Math.min(...anon.slice(i, i + FLOOR_S)) });
    const meanT = floors.reduce((a, f) => a + f.t, 0) / floors.length;
    const meanKb = floors.reduce((a, f) => a + f.kb, 0) / floors.length;
    let sxy = 0;
    let sxx = 0;
    for (const f of floors) {
      sxy += (f.t - meanT) * (f.kb - meanKb);
      sxx += (f.t - meanT) ** 2;
    }
    const kbPerS = sxy / sxx;
    return {
      outage_rss_warm_mb: mb(warm),
      outage_rss_end_mb: mb(end),
      outage_rss_peak_mb: mb(statusKb(pid, 'VmHWM')),
      outage_anon_warm_mb: mb(median(anon.slice(WARMUP_S - 10, WARMUP_S))),
      outage_anon_end_mb: mb(median(anon.slice(-10))),
      outage_rss_growth_mb_per_data_hour: Math.round(((kbPerS * MEASURE_S) / 1024 / dataHours) * 10) / 10,
      outage_rss_end_minus_warm_mb: mb(end - warm),
      outage_rss_growth_target: '<= 10 MB per hour of data',
      outage_data_hours_measured: Math.round(dataHours * 100) / 100,
      outage_outbox_mb: Math.round(((sizeOr0(outboxPath) + sizeOr0(`${outboxPath}-wal`)) / 1048576) * 10) / 10,
      node_flags: NODE_FLAGS.join(' '),
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
    await sim.stop();
    await pty.stop();
    await tmp.cleanup();
  }
}
