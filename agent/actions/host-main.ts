/**
 * The process side of `rackguard host` (the host agent's main, as STYLE.md allows: argv is parsed by
 * agent/main.ts, signals and exit codes for this command live here). Exit codes as agent/main.ts:
 * 0 ok, 1 runtime failure, 2 bad configuration or usage.
 */
import { ConfigError } from '../config/load.js';
import { loadHostConfigFile, type HostConfig } from '../config/host-schema.js';
import { RackguardError } from '../errors.js';
import { createLogger } from '../log.js';
import { HostAgent } from './host-agent.js';

const STOP_DEADLINE_MS = 5000;

export async function runHostCommand(configFile: string | undefined, dryRun: boolean): Promise<void> {
  let agent: HostAgent | undefined;
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping || !agent) process.exit(stopping ? 1 : 0);
    stopping = true;
    setTimeout(() => process.exit(1), STOP_DEADLINE_MS).unref();
    agent.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`rackguard host: error while stopping after ${signal}: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  if (!configFile) {
    process.stderr.write('rackguard: host needs --config HOST.yaml\n');
    process.exit(2);
  }
  let config: HostConfig;
  try {
    config = loadHostConfigFile(configFile);
  } catch (err) {
    if (err instanceof ConfigError || (err instanceof RackguardError && err.code === 'E_CONFIG_READ')) {
      process.stderr.write(`rackguard: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createLogger({ level: config.logging.level, name: 'rackguard-host' });
  agent = new HostAgent(config, { logger, dryRun });
  try {
    await agent.start();
  } catch (err) {
    // A secret that cannot be read or a damaged seq state: refuse to run rather than run unprotected.
    if (err instanceof RackguardError && (err.code === 'E_SECRET_READ' || err.code === 'E_HOST_STATE')) {
      process.stderr.write(`rackguard: ${err.code}: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}
