#!/usr/bin/env node
/**
 * rackguard's process entry: argv, signals and exit codes live here and nowhere else.
 *
 * Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createAgent, type Agent } from './app.js';
import { ConfigError, loadConfigFile } from './config/load.js';
import type { Config } from './config/model.js';
import { preflightChecks } from './config/preflight.js';
import { readRegularFile } from './config/read-file.js';
import { RackguardError } from './errors.js';
import { createLogger } from './log.js';
import { replay, eventJson, eventLine } from './detection/replay.js';
import { parseTrace } from './detection/trace.js';
import type { DrillCommandOptions } from '../drill/command.js';
import { packageRoot } from './paths.js';
import { systemClock } from './clock.js';
import { Notifier } from './service/notify.js';
import { Reloader } from './service/reload.js';
import { ChildGroupReaper } from './service/child-groups.js';
import { agentStatusLine } from './service/status-line.js';

const USAGE = `Usage:
  rackguard run --config FILE [--record TRACE.csv] [--dry-run]
        start acquisition and detection; logs samples, device health and zone events;
        --record writes every sample to a trace for replay (a trace that cannot be
        written is reported; the agent goes on without it); --dry-run records the
        actions that would run (status dry-run) and runs none
  rackguard check-config FILE
        validate a configuration file and exit
  rackguard replay --config FILE --trace TRACE.csv [--json]
        run the production detector over a recorded trace on virtual time and print the events
  rackguard drill --config FILE --scenario SCENARIO.yaml [--report OUT.html] [--trace OUT.csv] [--duration S] [--json]
        run a firmware-sim scenario through the thermal model and the detector on virtual time
  rackguard host --config HOST.yaml [--dry-run]
        the host agent: runs this server's configured shutdown command on a signed,
        unexpired, never-replayed command from the gateway (docs/host-agent.md)
  rackguard actions test --config FILE [--zone Z]
        ask every host agent and BMC of the shutdown sequence to confirm it would act,
        without shutting anything down (hooks are listed, not run); prints a table;
        exit 0 when every host confirmed, 1 otherwise
  rackguard --version | --help

Exit codes: 0 ok, 1 runtime failure, 2 invalid configuration or usage.`;

const COMMANDS = new Set(['run', 'check-config', 'replay', 'drill', 'host', 'actions', 'help']);

function version(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

function loadOrExit(file: string | undefined): Config {
  if (!file) {
    process.stderr.write(`rackguard: missing configuration file\n${USAGE}\n`);
    process.exit(2);
  }
  try {
    return loadConfigFile(file);
  } catch (err) {
    if (err instanceof ConfigError || (err instanceof RackguardError && err.code === 'E_CONFIG_READ')) {
      process.stderr.write(`rackguard: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

function usageError(msg: string): never {
  process.stderr.write(`rackguard: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

/**
 * The largest trace `replay` reads: a week of a large rack is about 150 MB. Below V8's longest string
 * (about 512 MiB), so that the cap, not a crash, is what a bigger file meets.
 */
const MAX_TRACE_FILE_BYTES = 500 * 1024 * 1024;

/** Reads a file for a command, or exits 2 naming it. A FIFO or /dev/zero is refused, not waited on or read forever. */
function readInput(file: string, what: string, maxBytes: number): string {
  try {
    return readRegularFile(file, maxBytes);
  } catch (err) {
    process.stderr.write(`rackguard: cannot read ${what} ${file}: ${(err as Error).message}\n`);
    process.exit(2);
  }
}

function exitOnInputError(err: unknown): never {
  if (err instanceof RackguardError && (err.code === 'E_TRACE_INVALID' || err.code === 'E_SCENARIO_INVALID' || err.code === 'E_OUTPUT_FILE')) {
    process.stderr.write(`rackguard: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}

function replayCommand(config: Config, traceFile: string, json: boolean): void {
  const text = readInput(traceFile, 'trace', MAX_TRACE_FILE_BYTES);
  let result;
  const t0 = performance.now();
  try {
    result = replay(config, parseTrace(text, config, { source: traceFile }));
  } catch (err) {
    exitOnInputError(err);
  }
  const ms = performance.now() - t0;
  if (result.rows === 0) {
    // An empty trace replays to nothing: that is a wrong file, not a quiet room.
    process.stderr.write(`rackguard: ${traceFile}: no rows (an empty trace: nothing to replay)\n`);
    process.exit(2);
  }
  for (const e of result.events) process.stdout.write(`${json ? JSON.stringify(eventJson(e)) : eventLine(e)}\n`);
  if (!json) process.stdout.write(`${traceFile}: ${result.rows} rows over ${(result.durationS / 3600).toFixed(2)} h, ${result.events.length} events, replayed in ${(ms / 1000).toFixed(2)} s\n`);
}

/**
 * Loaded lazily: a drill needs the simulator, and `rackguard run` must never load firmware-sim/
 * (.dependency-cruiser.cjs allows main.ts only this dynamic edge into drill/).
 */
async function drillCommand(config: Config, o: DrillCommandOptions): Promise<void> {
  const drill = await import('../drill/command.js');
  try {
    drill.drillCommand(config, o, (text) => process.stdout.write(text));
  } catch (err) {
    exitOnInputError(err);
  }
}

/** Extra time main gives agent.stop() beyond the configured stop deadline before it exits anyway. */
const STOP_BACKSTOP_GRACE_MS = 2000;

/** How long a clean exit waits for STOPPING=1 to be sent (well inside the backstop grace). */
const STOPPING_WAIT_MS = 1000;

async function run(configFile: string | undefined, recordFile: string | undefined, dryRun = false): Promise<void> {
  // Signal handlers first, before anything that could block or take long: a signal must stop the
  // agent at any stage (issue 7: a start-up blocked on a FIFO ignored two SIGTERMs). The first
  // signal stops cleanly; a second one, or a stop that outlives its deadline, exits 1 at once.
  let agent: Agent | undefined;
  let logger: ReturnType<typeof createLogger> | undefined;
  let stopTimeoutS = 10;
  let stopping = false;
  let notifier: Notifier | undefined;
  let reloader: Reloader | undefined;
  const say = (level: 'info' | 'error', obj: object, msg: string): void => {
    if (logger) logger[level](obj, msg);
    else process.stderr.write(`rackguard: ${msg}\n`);
  };
  // Action hooks run in process groups of their own; one that ignores SIGTERM, or whose kill grace
  // outlasts the stop deadline, must not outlive us as an orphan (service/child-groups.ts).
  const reaper = new ChildGroupReaper(process.pid);
  const exit = (code: number): never => {
    const killed = reaper.killAll('SIGKILL');
    if (killed.length > 0) say('error', { processGroups: killed }, `killed ${killed.length} action process group${killed.length === 1 ? '' : 's'} still running at the exit (SIGKILL)`);
    process.exit(code);
  };
  const shutdown = (signal: string): void => {
    if (stopping) {
      say('error', { signal }, `${signal} again while stopping: exiting now, without a clean stop`);
      exit(1);
    }
    stopping = true;
    reaper.note();
    const told = notifier?.stopping();
    if (!agent) exit(0);
    say('info', { signal }, 'stopping');
    setTimeout(() => {
      say('error', { stopTimeoutS }, `stop did not finish within ${stopTimeoutS} s: exiting without a clean stop`);
      exit(1);
    }, stopTimeoutS * 1000 + STOP_BACKSTOP_GRACE_MS);
    agent!.stop().then(
      async () => {
        say('info', {}, 'stopped');
        // Let STOPPING=1 reach systemd before the exit, but never wait on a manager that does not answer.
        await Promise.race([told, new Promise((r) => setTimeout(r, STOPPING_WAIT_MS))]);
        exit(0);
      },
      (err: unknown) => {
        say('error', { err }, 'error while stopping');
        exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  // SIGHUP (`systemctl reload`): re-read the configuration; Node's default would end the process.
  process.on('SIGHUP', () => {
    if (stopping) return;
    if (!reloader) say('info', { signal: 'SIGHUP' }, 'SIGHUP ignored: the agent is still starting');
    else void reloader.request();
  });
  const config = loadOrExit(configFile);
  stopTimeoutS = config.stopTimeoutS;
  logger = createLogger({ level: config.logging.level });
  // sd_notify is the process's business (STYLE.md): the notifier is a part main adds, started last.
  notifier = new Notifier({ env: { ...process.env }, pid: process.pid, clock: systemClock, logger: logger.child({ component: 'notify' }), view: { progress: () => agent?.progress() ?? [], status: () => (agent ? agentStatusLine(agent) : 'starting') } });
  // As sd_notify(3)'s unset_environment: the commands the agent runs (action hooks) must not talk to systemd as us.
  for (const k of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID']) delete process.env[k];
  agent = createAgent(config, { logger, parts: [notifier], ...(recordFile ? { recordFile } : {}), ...(dryRun ? { actionsDryRun: true } : {}) });
  // The STATUS line names zone levels and device states: refresh it when either changes, not only on
  // the periodic refresh (READY goes out before the first poll, with every device still unknown).
  agent.on('detection', () => notifier?.refreshStatus());
  agent.on('deviceState', () => notifier?.refreshStatus());
  await agent.start();
  reloader = new Reloader({
    file: configFile!,
    agent,
    logger,
    onApplied: (c) => {
      stopTimeoutS = c.stopTimeoutS;
      logger!.level = c.logging.level;
    },
    onOutcome: (ok, summary) => notifier?.refreshStatus(ok ? undefined : summary),
  });
}

function count(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      record: { type: 'string' },
      trace: { type: 'string' },
      json: { type: 'boolean' },
      scenario: { type: 'string' },
      report: { type: 'string' },
      duration: { type: 'string' },
      'dry-run': { type: 'boolean' },
      zone: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  });
  const [command, arg] = positionals;
  // An unknown command is a usage error even with --help or --version: a typo must not look like success.
  if (command !== undefined && !COMMANDS.has(command)) usageError(`unknown command "${command}"`);
  if (values.version) {
    process.stdout.write(`${version()}\n`);
    return;
  }
  if (values.help || !command || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  switch (command) {
    case 'run':
      await run(values.config ?? arg, values.record, Boolean(values['dry-run']));
      return;
    case 'host': {
      // Loaded lazily, as the drill is: `rackguard run` never loads the host agent.
      const { runHostCommand } = await import('./actions/host-main.js');
      await runHostCommand(values.config ?? arg, Boolean(values['dry-run']));
      return;
    }
    case 'actions': {
      if (arg !== 'test') usageError(`unknown actions subcommand "${arg ?? ''}" (expected: actions test)`);
      const config = loadOrExit(values.config);
      // Loaded lazily: `rackguard run` never needs it.
      const { actionsTestCommand, ActionsTestUsageError } = await import('./actions/test-command.js');
      let code: number;
      try {
        code = await actionsTestCommand(config, { zone: values.zone, out: (text) => process.stdout.write(text) });
      } catch (err) {
        if (err instanceof ActionsTestUsageError) {
          process.stderr.write(`rackguard: ${values.config ?? ''}: ${err.message}\n`);
          process.exit(2);
        }
        throw err;
      }
      // Pending deadlines of commands nobody answered must not keep the process alive.
      process.exit(code);
    }
    case 'replay': {
      const config = loadOrExit(values.config);
      if (!values.trace) usageError('replay needs --trace FILE');
      replayCommand(config, values.trace, Boolean(values.json));
      return;
    }
    case 'drill': {
      const config = loadOrExit(values.config);
      if (!values.scenario) usageError('drill needs --scenario FILE');
      const durationS = values.duration === undefined ? undefined : Number(values.duration);
      if (durationS !== undefined && !(durationS > 0)) usageError(`--duration must be a positive number of seconds, got "${values.duration}"`);
      await drillCommand(config, { scenario: values.scenario, report: values.report, trace: values.trace, json: Boolean(values.json), durationS });
      return;
    }
    case 'check-config': {
      const file = arg ?? values.config;
      const cfg = loadOrExit(file);
      // What the schema cannot see: the outbox path on this machine (the agent would start anyway).
      const { errors, warnings } = preflightChecks(cfg);
      for (const w of warnings) process.stderr.write(`rackguard: ${file}: warning: ${w}\n`);
      if (errors.length > 0) {
        process.stderr.write(`rackguard: ${file}: ${errors.length} problem${errors.length === 1 ? '' : 's'} on this machine:\n  ${errors.join('\n  ')}\n`);
        process.exit(2);
      }
      const devices = cfg.buses.reduce((n, b) => n + (b.type === 'serial-stream' ? 1 : b.devices.length), 0);
      process.stdout.write(`${file}: OK (${count(cfg.buses.length, 'bus', 'buses')}, ${count(devices, 'device')}, ${count(cfg.points.size, 'point')}, ${count(cfg.zones.length, 'zone')}, ${count(cfg.chillers.length, 'chiller')})\n`);
      return;
    }
    default:
      usageError(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof TypeError && (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`rackguard: ${err.message}\n${USAGE}\n`);
    process.exit(2);
  }
  // Our own errors say what and where; a stack trace would only bury that. Anything else is a bug.
  const text = err instanceof RackguardError ? `${err.code}: ${err.message}` : err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`rackguard: ${text}\n`);
  process.exit(1);
});
