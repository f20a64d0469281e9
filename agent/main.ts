#!/usr/bin/env node
/**
 * rackguard's process entry: argv, signals and exit codes live here and nowhere else.
 *
 * Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createAgent } from './app.js';
import { ConfigError, loadConfigFile } from './config/load.js';
import type { Config } from './config/model.js';
import { RackguardError } from './errors.js';
import { createLogger } from './log.js';
import { packageRoot } from './paths.js';

const USAGE = `Usage:
  rackguard run --config FILE          start acquisition (logs samples and device health)
  rackguard check-config FILE          validate a configuration file and exit
  rackguard --version | --help

Exit codes: 0 ok, 1 runtime failure, 2 invalid configuration or usage.`;

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

async function run(configFile: string | undefined): Promise<void> {
  const config = loadOrExit(configFile);
  const logger = createLogger({ level: config.logging.level });
  const agent = createAgent(config, { logger });
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    agent.stop().then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  agent.start();
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
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
  });
  const [command, arg] = positionals;
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
      await run(values.config ?? arg);
      return;
    case 'check-config': {
      const file = arg ?? values.config;
      const cfg = loadOrExit(file);
      const devices = cfg.buses.reduce((n, b) => n + (b.type === 'serial-stream' ? 1 : b.devices.length), 0);
      process.stdout.write(`${file}: OK (${count(cfg.buses.length, 'bus', 'buses')}, ${count(devices, 'device')}, ${count(cfg.points.size, 'point')}, ${count(cfg.zones.length, 'zone')}, ${count(cfg.chillers.length, 'chiller')})\n`);
      return;
    }
    default:
      process.stderr.write(`rackguard: unknown command "${command}"\n${USAGE}\n`);
      process.exit(2);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof TypeError && (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`rackguard: ${err.message}\n${USAGE}\n`);
    process.exit(2);
  }
  process.stderr.write(`rackguard: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
