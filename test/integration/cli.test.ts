/**
 * Process-level behaviour, by spawning the real entry points (TypeScript through tsx): exit codes,
 * errors on stderr, JSON logs on stdout, clean stop on SIGTERM, and the demo.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, constants, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/load.js';
import { startSimulator, type Simulator } from '../../firmware-sim/index.js';
import { freePort } from '../helpers/ports.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { startPtyPair, type PtyPair } from '../helpers/pty.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const node = (script: string, ...args: string[]) => [process.execPath, ['--import', 'tsx', join(ROOT, script), ...args]] as const;

let tmp: TempDir;
beforeAll(async () => {
  tmp = await tempDir('rackguard-cli-');
});
afterAll(async () => {
  await tmp?.cleanup();
});

describe('rackguard check-config', () => {
  it('accepts the example configuration', () => {
    const [cmd, args] = node('agent/main.ts', 'check-config', join(ROOT, 'config/rackguard.example.yaml'));
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    // Only warnings about this machine (its outbox directory, /var/lib/rackguard, may not exist here).
    expect(r.stderr.split('\n').filter((l) => l !== '' && !l.includes(': warning: outputs.outbox.path:'))).toEqual([]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/rackguard\.example\.yaml: OK \(2 buses, 13 devices, 62 points, 2 zones, 1 chiller\)/);
  });

  it('reports every problem with its path and exits 2', () => {
    const bad = join(tmp.path, 'bad.yaml');
    writeFileSync(
      bad,
      `version: 1
buses:
  - id: l
    type: serial
    path: /dev/ttyUSB0
    devices:
      - { id: a, unitId: 1, profile: xy-md02, timeoutMs: "300" }
      - { id: b, unitId: 1, profile: no-such-profile }
zones:
  - { id: z, sensors: [a.temperature, c.temperature] }
`,
    );
    const [cmd, args] = node('agent/main.ts', 'check-config', bad);
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('buses[0].devices[0].timeoutMs: expected');
    // Schema errors come first; once the shapes are right, the cross-checks report together.
    writeFileSync(bad, `version: 1\nbuses:\n  - { id: l, type: serial, path: /dev/ttyUSB0, devices: [{ id: a, unitId: 1, profile: xy-md02 }, { id: b, unitId: 1, profile: no-such-profile }] }\nzones:\n  - { id: z, sensors: [a.temperature, c.temperature] }\n`);
    const r2 = spawnSync(cmd, args, { encoding: 'utf8' });
    expect(r2.status).toBe(2);
    expect(r2.stderr).toContain('invalid configuration');
    expect(r2.stderr).toMatch(/buses\[0\]\.devices\[1\]\.profile: unknown profile "no-such-profile"/);
    expect(r2.stderr).toMatch(/zones\[0\]\.sensors\[1\]: unknown point "c\.temperature"/);
  });

  it('run with a bad configuration starts nothing and exits 2', () => {
    const [cmd, args] = node('agent/main.ts', 'run', '--config', join(tmp.path, 'missing.yaml'));
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/missing\.yaml: cannot read configuration/);
    expect(r.stdout).toBe('');
  });

  it('an unknown command is a usage error', () => {
    const [cmd, args] = node('agent/main.ts', 'frobnicate');
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown command "frobnicate"');
  });
});

/** Runs a short command of the real CLI; a hang fails the test (killed after 60 s) instead of stalling the suite. */
function cli(...argv: string[]) {
  const [cmd, args] = node('agent/main.ts', ...argv);
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
  expect(r.signal, `rackguard ${argv.join(' ')} was killed (hung?)\n${r.stderr}`).toBeNull();
  return r;
}

/** A FIFO at `path`, replacing whatever a failed attempt of the same test (vitest retries) left there. */
function mkfifo(path: string): string {
  rmSync(path, { force: true });
  expect(spawnSync('mkfifo', [path]).status).toBe(0);
  return path;
}

const TINY_CONFIG = 'version: 1\nbuses:\n  - { id: t, type: tcp, host: 127.0.0.1, devices: [{ id: ch, unitId: 1, profile: generic-chiller }] }\n';

describe('configuration files that crashed or hung the loader: exit 2 naming the file', () => {
  const expectRefused = (r: ReturnType<typeof cli>, file: string, why: RegExp | string): void => {
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`${file}:`);
    if (typeof why === 'string') expect(r.stderr).toContain(why);
    else expect(r.stderr).toMatch(why);
    // Our message, not a stack trace.
    expect(r.stderr).not.toMatch(/^\s+at /m);
  };

  it('a YAML alias bomb', () => {
    let bomb = 'version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x]\n';
    for (let i = 1; i < 9; i++) bomb += `a${i}: &a${i} [${Array(9).fill(`*a${i - 1}`).join(', ')}]\n`;
    const file = join(tmp.path, 'bomb.yaml');
    writeFileSync(file, bomb);
    expectRefused(cli('check-config', file), file, 'Excessive alias count');
  });

  it('a FIFO (check-config and run)', () => {
    const file = mkfifo(join(tmp.path, 'config-fifo.yaml'));
    expectRefused(cli('check-config', file), file, 'cannot read configuration: a FIFO (named pipe), not a regular file');
    expectRefused(cli('run', '--config', file), file, 'a FIFO (named pipe), not a regular file');
  });

  it('/dev/zero', () => {
    expectRefused(cli('check-config', '/dev/zero'), '/dev/zero', 'cannot read configuration: a character device, not a regular file');
  });

  it('a file over 1 MiB', () => {
    const file = join(tmp.path, 'huge.yaml');
    writeFileSync(file, TINY_CONFIG + `# ${'x'.repeat(99)}\n`.repeat(11_000));
    expectRefused(cli('check-config', file), file, /larger than the 1 MiB limit \(1\.1 MiB\)/);
  });

  it('a directory', () => {
    const dir = join(tmp.path, 'a-directory.yaml');
    mkdirSync(dir, { recursive: true }); // a retry of this test finds it there
    expectRefused(cli('check-config', dir), dir, 'cannot read configuration: a directory, not a regular file');
  });

  it('bytes that are not UTF-8 (a serial path must not silently become another path)', () => {
    const file = join(tmp.path, 'latin1.yaml');
    // "/dev/ttyÜSB0" saved as Latin-1: decoded leniently it would become "/dev/tty\uFFFDSB0".
    writeFileSync(file, Buffer.concat([Buffer.from('version: 1\nbuses:\n  - { id: s, type: serial, path: /dev/tty'), Buffer.from([0xdc]), Buffer.from('SB0, devices: [{ id: th, unitId: 1, profile: xy-md02 }] }\n')]));
    expectRefused(cli('check-config', file), file, 'not valid UTF-8 (byte 0xdc at line 3, column');
  });

  it('a credential file that is huge, a FIFO or a directory', () => {
    const huge = join(tmp.path, 'huge-password');
    writeFileSync(huge, Buffer.alloc(2 * 1024 * 1024, 0x61));
    const fifo = mkfifo(join(tmp.path, 'password-fifo'));
    const dir = join(tmp.path, 'password-dir');
    mkdirSync(dir, { recursive: true }); // a retry of this test finds it there
    const file = join(tmp.path, 'credentials.yaml');
    writeFileSync(file, `${TINY_CONFIG}outputs:\n  outbox: { path: ${join(tmp.path, 'ob.db')} }\n  mqtt: { url: "mqtt://127.0.0.1:1", passwordFile: ${huge}, usernameFile: ${fifo} }\n  influx: { url: "http://127.0.0.1:1", database: x, passwordFile: ${dir} }\n`);
    const r = cli('check-config', file);
    expectRefused(r, file, `outputs.mqtt.passwordFile: cannot read ${huge}: larger than the 64 KiB limit (2 MiB)`);
    expect(r.stderr).toContain(`outputs.mqtt.usernameFile: cannot read ${fifo}: a FIFO (named pipe), not a regular file`);
    expect(r.stderr).toContain(`outputs.influx.passwordFile: cannot read ${dir}: a directory, not a regular file`);
  });

  it('a duration past its limit, with its path', () => {
    const file = join(tmp.path, 'poll.yaml');
    writeFileSync(file, 'version: 1\nlogging: { healthIntervalS: 2592000 }\nbuses:\n  - { id: t, type: tcp, host: 127.0.0.1, devices: [{ id: a, unitId: 1, profile: generic-chiller }, { id: b, unitId: 2, profile: generic-chiller, pollIntervalMs: 1e12 }] }\n');
    const r = cli('check-config', file);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('logging.healthIntervalS: must be at most 86400 (1 day), got 2592000');
    expect(r.stderr).toContain('buses[0].devices[1].pollIntervalMs: must be at most 86400000 (1 day), got 1000000000000');
  });
});

describe('small usage errors', () => {
  it('an unknown command with --help exits 2 naming the command', () => {
    const r = cli('UNKNOWN', '--help');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown command "UNKNOWN"');
    expect(r.stdout).toBe('');
    // A known command's --help is still help.
    const h = cli('run', '--help');
    expect(h.status).toBe(0);
    expect(h.stdout).toContain('Usage:');
  });

  it('replay of an empty trace (or a header alone) exits 2 naming the file: no rows', () => {
    const config = join(tmp.path, 'tiny.yaml');
    writeFileSync(config, TINY_CONFIG);
    for (const [name, text] of [['empty.csv', ''], ['header-only.csv', 'time_s,point,value\n']] as const) {
      const trace = join(tmp.path, name);
      writeFileSync(trace, text);
      const r = cli('replay', '--config', config, '--trace', trace);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`${trace}: no rows`);
      expect(r.stdout).toBe('');
    }
  });

  it('replay of a trace that is a FIFO or /dev/zero exits 2 naming it, without hanging', () => {
    const config = join(tmp.path, 'tiny.yaml');
    writeFileSync(config, TINY_CONFIG);
    const fifo = mkfifo(join(tmp.path, 'trace-fifo.csv'));
    for (const [trace, why] of [[fifo, 'a FIFO (named pipe), not a regular file'], ['/dev/zero', 'a character device, not a regular file']] as const) {
      const r = cli('replay', '--config', config, '--trace', trace);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`cannot read trace ${trace}: ${why}`);
      expect(r.stdout).toBe('');
    }
  });

  it('drill: a report or trace path that is a directory or a FIFO, or a duration past 7 days, exits 2 naming it before the run', () => {
    const config = join(ROOT, 'config/demo.yaml');
    const scenario = join(ROOT, 'firmware-sim/scenarios/chiller-trip-2c.yaml');
    const dir = join(tmp.path, 'report-dir.html');
    mkdirSync(dir, { recursive: true }); // a retry of this test finds it there
    const fifo = mkfifo(join(tmp.path, 'report-fifo.html'));
    for (const [flag, path, why] of [
      ['--report', dir, 'a directory, not a regular file'],
      ['--trace', fifo, 'a FIFO (named pipe), not a regular file'],
      ['--report', join(tmp.path, 'no-such-dir', 'r.html'), 'ENOENT'],
    ] as const) {
      const r = cli('drill', '--config', config, '--scenario', scenario, '--duration', '60', flag, path);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toContain(`${flag} ${path}: cannot write`);
      expect(r.stderr).toContain(why);
      expect(r.stderr).not.toMatch(/^\s+at /m);
      expect(r.stdout).toBe('');
    }
    for (const d of ['1e12', 'Infinity', '604801']) {
      const r = cli('drill', '--config', config, '--scenario', scenario, '--duration', d);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toContain('--duration: at most 604800 s (7 days)');
    }
  });

  it('check-config flags an outbox path that is a directory, and warns about a missing directory', () => {
    const dir = join(tmp.path, 'outbox-dir');
    mkdirSync(dir, { recursive: true }); // a retry of this test finds it there
    const file = join(tmp.path, 'outbox-is-dir.yaml');
    writeFileSync(file, `${TINY_CONFIG}outputs:\n  outbox: { path: ${dir} }\n`);
    const r = cli('check-config', file);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`outputs.outbox.path: ${dir} is a directory`);
    // A directory that does not exist yet (systemd's StateDirectory= creates it at start): a warning, OK.
    const missing = join(tmp.path, 'not-yet', 'outbox.db');
    writeFileSync(file, `${TINY_CONFIG}outputs:\n  outbox: { path: ${missing} }\n`);
    const w = cli('check-config', file);
    expect(w.status).toBe(0);
    expect(w.stderr).toContain(`warning: outputs.outbox.path: the directory ${join(tmp.path, 'not-yet')} does not exist (yet)`);
    expect(w.stdout).toContain(': OK (');
  });
});

describe('rackguard run', () => {
  let pty: PtyPair;
  let sim: Simulator;
  let file: string;

  beforeAll(async () => {
    pty = await startPtyPair();
    const port = await freePort();
    const text = `version: 1
logging: { samples: true, healthIntervalS: 1 }
buses:
  - { id: l, type: serial, path: ${pty.a}, devices: [{ id: r1, unitId: 1, profile: xy-md02, pollIntervalMs: 200 }] }
  - { id: t, type: tcp, host: 127.0.0.1, port: ${port}, devices: [{ id: ch, unitId: 1, profile: generic-chiller, pollIntervalMs: 200 }] }
`;
    file = join(tmp.path, 'run.yaml');
    writeFileSync(file, text);
    sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b, tcpPort: port });
    sim.rack.setValue('r1.temperature', 24.2);
  });
  afterAll(async () => {
    await sim?.stop();
    await pty?.stop();
  });

  it('logs samples and device health as JSON lines and stops cleanly on SIGTERM', async () => {
    const [cmd, args] = node('agent/main.ts', 'run', '--config', file);
    const p = await spawnAndWait(cmd, args, { readyLine: /"msg":"samples"/, timeoutMs: 20_000 });
    try {
      await p.waitForLine(/"msg":"device health"/, 10_000);
      await p.waitForLine((l) => l.includes('"device":"ch"') && l.includes('"supply_temp":7'), 10_000);
      const code = await p.stop('SIGTERM');
      expect(code).toBe(0);
    } finally {
      // A failed attempt must not leave its agent holding the pty for the retry.
      await p.stop('SIGKILL');
    }
    const records = p.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const r1 = records.find((r) => r.msg === 'samples' && r.device === 'r1' && (r.values as { temperature: unknown }).temperature !== null)!;
    expect(r1.values).toMatchObject({ temperature: 24.2 });
    expect(records.some((r) => r.msg === 'stopped')).toBe(true);
  });
});

describe('rackguard run --record, then replay', () => {
  let pty: PtyPair;
  let sim: Simulator;
  let file: string;

  beforeAll(async () => {
    pty = await startPtyPair();
    const text = `version: 1
logging: { samples: false }
buses:
  - { id: l, type: serial, path: ${pty.a}, devices: [{ id: r1, unitId: 1, profile: xy-md02, pollIntervalMs: 100 }, { id: r2, unitId: 2, profile: xy-md02, pollIntervalMs: 100, backoffMaxMs: 400 }] }
zones:
  - { id: z, sensors: [r1.temperature, r2.temperature], detection: { warnTempC: 25, clearDelayS: 0 } }
`;
    file = join(tmp.path, 'record.yaml');
    writeFileSync(file, text);
    sim = await startSimulator({ config: parseConfig(text, 'sim'), serialPath: pty.b });
    sim.rack.setValue('r1.temperature', 26.5);
    sim.rack.setValue('r2.temperature', 21.5);
    sim.rack.setFault('r2', { type: 'silent' });
  });
  afterAll(async () => {
    await sim?.stop();
    await pty?.stop();
  });

  let attempts = 0;
  it('records every sample as a trace that replays to the same detector events', async () => {
    // The simulator's state as beforeAll left it: a retry (vitest re-runs a failed test, not beforeAll)
    // must start from it again, not from where the failed attempt changed it.
    sim.rack.setValue('r1.temperature', 26.5);
    sim.rack.setValue('r2.temperature', 21.5);
    sim.rack.setFault('r2', { type: 'silent' });
    const trace = join(tmp.path, `live-${++attempts}.csv`);
    const [cmd, args] = node('agent/main.ts', 'run', '--config', file, '--record', trace);
    const p = await spawnAndWait(cmd, args, { readyLine: /recording samples to a trace/, timeoutMs: 20_000 });
    try {
      // r1 reads 26.5 °C ≥ warnTempC 25: the live detector raises a warning; r2 is silent.
      await p.waitForLine(/zone z: normal → warning/, 15_000);
      await p.waitForLine(/"device":"r2".*"msg":"device failing"/, 15_000);
      // More than one event to compare: the silent r2 blinds the zone (quorum lost), r2 answering again
      // brings it back, and r1 cooling below warnTempC − hysteresis then clears the warning.
      await p.waitForLine(/zone z: quorum lost/, 15_000);
      sim.rack.setFault('r2', { type: 'none' });
      await p.waitForLine(/zone z: quorum back/, 15_000);
      sim.rack.setValue('r1.temperature', 22);
      await p.waitForLine(/zone z: warning → normal/, 15_000);
      expect(await p.stop('SIGTERM')).toBe(0);
      const rows = readFileSync(trace, 'utf8').trim().split('\n');
      expect(rows[0]).toBe('time_s,point,value');
      expect(rows.some((r) => /^\d+\.\d{3},r1\.temperature,26\.5$/.test(r))).toBe(true);
      expect(rows.some((r) => /^\d+\.\d{3},r2\.temperature,$/.test(r))).toBe(true);

      const [rcmd, rargs] = node('agent/main.ts', 'replay', '--config', file, '--trace', trace, '--json');
      const r = spawnSync(rcmd, rargs, { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { zone: string; kind: string; level: string; from: string | null; reason: string });
      expect(events[0]).toMatchObject({ zone: 'z', level: 'warning', from: 'normal' });
      expect(events[0]!.reason).toMatch(/r1 at 26\.5 °C ≥ 25 °C/);
      // Every event, not only the first: the replay gives the same events, in the same order, with the
      // same reasons, as the live detector logged them.
      const live = p.lines
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { zone?: string; event?: string; msg: string })
        .filter((rec) => rec.zone !== undefined && (rec.event === 'zone_level' || rec.event === 'zone_blind'))
        .map((rec) => ({ zone: rec.zone, kind: rec.event, text: rec.msg }));
      const replayed = events.map((e) => ({ zone: e.zone, kind: e.kind, text: e.kind === 'zone_level' ? `zone ${e.zone}: ${e.from} → ${e.level}: ${e.reason}` : `zone ${e.zone}: ${e.reason}` }));
      expect(live.length).toBeGreaterThan(2);
      expect(replayed).toEqual(live);
    } finally {
      await p.stop('SIGKILL');
    }
  });
});

describe('signals stop the agent at any stage', () => {
  let sim: Simulator;
  let file: string;

  beforeAll(async () => {
    const port = await freePort();
    // Polled as fast as the simulator answers, so a trace fills a pipe within a second or so. A long
    // stop deadline: the recorder may wait up to half of it for a slow reader, so a stop stays slow.
    const text = `version: 1
logging: { samples: false, healthIntervalS: 1 }
stopTimeoutS: 600
buses:
  - { id: t, type: tcp, host: 127.0.0.1, port: ${port}, devices: [{ id: ch, unitId: 1, profile: generic-chiller, pollIntervalMs: 1 }] }
`;
    file = join(tmp.path, 'signals.yaml');
    writeFileSync(file, text);
    sim = await startSimulator({ config: parseConfig(text, 'sim'), tcpPort: port });
  });
  afterAll(async () => {
    await sim?.stop();
  });

  it('--record on a FIFO that nobody reads: start-up goes on (reported), and SIGTERM stops it', async () => {
    const fifo = mkfifo(join(tmp.path, 'record-fifo.csv'));
    const [cmd, args] = node('agent/main.ts', 'run', '--config', file, '--record', fifo);
    const p = await spawnAndWait(cmd, args, { readyLine: /cannot record the trace to .*record-fifo\.csv: it is a FIFO that no process reads/, timeoutMs: 20_000 });
    await p.waitForLine(/"msg":"rackguard starting"/, 10_000);
    p.proc.kill('SIGTERM');
    const exit = await p.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(p.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(true);
  });

  it('SIGHUP does not kill the agent: it reloads the configuration and goes on', async () => {
    const [cmd, args] = node('agent/main.ts', 'run', '--config', file);
    const p = await spawnAndWait(cmd, args, { readyLine: /"msg":"device health"/, timeoutMs: 20_000 });
    try {
      p.proc.kill('SIGHUP');
      await p.waitForLine(/"msg":"configuration reloaded/, 10_000);
      // Still polling after the signal: a further health line (one a second) arrives.
      const from = p.lines.length;
      await p.waitForLine(/"msg":"device health"/, 10_000, from);
      expect(await p.stop('SIGTERM')).toBe(0);
    } finally {
      await p.stop('SIGKILL');
    }
  });

  it('a second SIGTERM during a slow stop exits 1 at once, saying so', async () => {
    const fifo = mkfifo(join(tmp.path, 'slow-reader.csv'));
    // A reader that opens the FIFO and never reads: the pipe fills, the recorder's buffer fills, and
    // its flush at stop cannot finish.
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    let p: SpawnedProcess | undefined;
    try {
      const [cmd, args] = node('agent/main.ts', 'run', '--config', file, '--record', fifo);
      p = await spawnAndWait(cmd, args, { readyLine: /"msg":"recording samples to a trace"/, timeoutMs: 20_000 });
      // 2,000 polls of 4 points are over 150 kB of rows: more than a pipe holds (64 KiB on Linux).
      const polls = (l: string): number => {
        if (!l.includes('"msg":"device health"')) return 0;
        const rec = JSON.parse(l) as { counters: { responses: number } };
        return rec.counters.responses / 2; // two reads per poll of a generic chiller
      };
      await p.waitForLine((l) => polls(l) >= 2000, 60_000);
      const from = p.lines.length;
      p.proc.kill('SIGTERM');
      await p.waitForLine(/"msg":"stopping"/, 10_000, from);
      p.proc.kill('SIGTERM');
      const exit = await p.exited;
      expect(exit).toEqual({ code: 1, signal: null });
      expect(p.lines.some((l) => l.includes('SIGTERM again while stopping: exiting now'))).toBe(true);
      expect(p.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(false);
    } finally {
      // A failed attempt must not leave an agent polling at full speed behind it.
      await p?.stop('SIGKILL');
      closeSync(reader);
    }
  });
});

describe('the demo (npm start)', () => {
  it('runs the simulator and the agent with no hardware, shows live readings, and stops by itself', async () => {
    const [cmd, args] = node('scripts/demo.ts', '--duration', '6', '--mqtt-port', '0');
    const p = await spawnAndWait(cmd, args, { readyLine: /"device":"rack01".*"temperature":\d/, timeoutMs: 30_000 });
    await p.waitForLine(/"device":"chiller1".*"running":1/, 10_000);
    // The embedded broker: readings reach a subscriber with no broker installed or configured.
    const line = await p.waitForLine(/demo: MQTT on mqtt:\/\/127\.0\.0\.1:\d+/, 10_000);
    const url = /mqtt:\/\/127\.0\.0\.1:\d+/.exec(line)![0];
    const sub = await mqtt.connectAsync(url);
    try {
      const got = new Promise<{ value: number; quality: string }>((resolve) =>
        sub.on('message', (topic, payload) => {
          if (topic === 'rackguard/gz-dc1/demo-gw/sensors/rack01.temperature') resolve(JSON.parse(payload.toString()) as { value: number; quality: string });
        }),
      );
      await sub.subscribeAsync('rackguard/#');
      const reading = await got;
      expect(reading.quality).toBe('good');
      expect(reading.value).toBeGreaterThan(15);
    } finally {
      await sub.endAsync();
    }
    const exit = await p.exited;
    expect(exit.code).toBe(0);
    expect(p.lines.some((l) => l.includes('demo: stopping'))).toBe(true);
  });
});
