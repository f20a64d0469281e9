#!/usr/bin/env node
/**
 * rackguard-sim: serves the simulated rack of an agent config.
 *
 *   rackguard-sim --config FILE [--serial PATH] [--tcp-port N] [--tcp-host 127.0.0.1] [--scenario FILE]
 *                 [--time-scale K] [--emulate-baud] [--turnaround-ms N] [--seed N]
 *
 * Logs JSON lines to stdout (pretty when stdout is a terminal) and prints `{"msg":"ready",…,"tcpPort":N}`
 * once listening. Exit codes: 0 after SIGINT/SIGTERM, 1 on a runtime failure (port lost, cannot open),
 * 2 on bad usage, configuration or scenario.
 */
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { loadConfigFile } from '../agent/config/load.js';
import { RackguardError } from '../agent/errors.js';
import { loadScenarioFile } from './scenario.js';
import { startSimulator, type Simulator } from './index.js';

const USAGE =
  'usage: rackguard-sim --config FILE [--serial PATH] [--tcp-port N] [--tcp-host HOST] [--scenario FILE]\n' +
  '                     [--time-scale K] [--emulate-baud] [--turnaround-ms N] [--seed N]';

function makeLogger(): Logger {
  if (process.stdout.isTTY) return pino({ name: 'rackguard-sim', transport: { target: 'pino-pretty', options: { colorize: true } } });
  return pino({ name: 'rackguard-sim' }, pino.destination({ dest: 1, sync: true }));
}

function numberArg(name: string, value: string | undefined, check: (n: number) => boolean): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || !check(n)) throw new UsageError(`--${name}: invalid value "${value}"`);
  return n;
}

class UsageError extends Error {}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        config: { type: 'string' },
        serial: { type: 'string' },
        'tcp-port': { type: 'string' },
        'tcp-host': { type: 'string' },
        scenario: { type: 'string' },
        'time-scale': { type: 'string' },
        'emulate-baud': { type: 'boolean' },
        'turnaround-ms': { type: 'string' },
        seed: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }

  const logger = makeLogger();
  let sim: Simulator;
  let lost: (err: Error | undefined) => void = () => {};
  const portLost = new Promise<Error | undefined>((resolve) => (lost = resolve));
  try {
    if (!args.config) throw new UsageError('--config is required');
    const tcpPort = numberArg('tcp-port', args['tcp-port'], (n) => Number.isInteger(n) && n >= 0 && n <= 65535);
    const timeScale = numberArg('time-scale', args['time-scale'], (n) => n > 0);
    const turnaroundMs = numberArg('turnaround-ms', args['turnaround-ms'], (n) => n >= 0);
    const seed = numberArg('seed', args.seed, (n) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff);
    const config = loadConfigFile(args.config);
    const scenario = args.scenario ? loadScenarioFile(args.scenario, { config }) : undefined;
    sim = await startSimulator({
      config,
      ...(scenario ? { scenario } : {}),
      ...(args.serial !== undefined ? { serialPath: args.serial } : {}),
      ...(tcpPort !== undefined ? { tcpPort } : {}),
      ...(args['tcp-host'] !== undefined ? { tcpHost: args['tcp-host'] } : {}),
      ...(timeScale !== undefined ? { timeScale } : {}),
      ...(turnaroundMs !== undefined ? { turnaroundMs } : {}),
      ...(seed !== undefined ? { seed } : {}),
      emulateBaud: args['emulate-baud'] ?? false,
      logger,
      onSerialClose: (err) => lost(err),
    });
  } catch (err) {
    const usage = err instanceof UsageError;
    const bad = err instanceof RackguardError && (err.code === 'E_CONFIG_INVALID' || err.code === 'E_CONFIG_READ' || err.code === 'E_SCENARIO_INVALID');
    if (usage) process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    else logger.fatal({ err }, (err as Error).message);
    logger.flush?.();
    return usage || bad ? 2 : 1;
  }

  const serving = (t: 'rtu' | 'tcp') => sim.rack.devices(t).map((d) => ({ id: d.id, unitId: d.unitId, points: d.points.length }));
  logger.info(
    {
      config: args.config,
      scenario: sim.rack.scenario?.name,
      timeScale: sim.rack.timeScale,
      serialPath: sim.serialPath,
      rtu: serving('rtu'),
      tcp: serving('tcp'),
      tcpPort: sim.tcpPort,
    },
    'ready',
  );

  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    for (const s of ['SIGINT', 'SIGTERM'] as const) process.once(s, () => resolve(s));
  });
  const outcome = await Promise.race([signalled.then((signal) => ({ signal })), portLost.then((err) => ({ err }))]);
  if ('signal' in outcome) logger.info({ signal: outcome.signal, counters: sim.rack.counters() }, 'stopping');
  else logger.error({ err: outcome.err, path: sim.serialPath }, 'serial port lost; stopping');
  await sim.stop();
  logger.flush?.();
  return 'signal' in outcome ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
    // Nothing should be left running; exit explicitly in case a transport keeps a handle alive.
    setTimeout(() => process.exit(code), 200).unref();
  },
  (err: unknown) => {
    process.stderr.write(`rackguard-sim: ${String(err)}\n`);
    process.exit(1);
  },
);
