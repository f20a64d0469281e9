#!/usr/bin/env node
/**
 * `npm start`: the demo. The simulated rack (firmware-sim) and the agent, on the embedded defaults
 * of config/demo.yaml, with no hardware and no servers: a socat pty pair stands in for the RS-485
 * line and the simulator serves the chiller on a free loopback TCP port.
 *
 *   npm start                       run until Ctrl-C
 *   npm start -- --duration 60      stop by itself after 60 s
 *   npm start -- --time-scale 10    run the scenario ten times faster
 *   npm start -- --scenario FILE    another firmware-sim scenario
 *   npm start -- --mqtt-port N      the embedded broker's port (default 1883, 0 = any free port)
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createAgent } from '../agent/app.js';
import { loadConfigFile } from '../agent/config/load.js';
import { createLogger } from '../agent/log.js';
import { packageRoot } from '../agent/paths.js';
import { loadScenarioFile, startSimulator } from '../firmware-sim/index.js';
import { pointAtSimulator, writeConfigVariant } from './lib/config-variant.js';
import { freePort } from './lib/ports.js';
import { startPtyPair } from './lib/pty.js';
import { tempDir } from './lib/tmp.js';
import { startEmbeddedBroker, type EmbeddedBroker } from './lib/embedded-broker.js';

async function main(): Promise<void> {
  const root = packageRoot();
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      'time-scale': { type: 'string', default: '1' },
      scenario: { type: 'string', default: join(root, 'firmware-sim', 'scenarios', 'demo.yaml') },
      config: { type: 'string', default: join(root, 'config', 'demo.yaml') },
      'mqtt-port': { type: 'string', default: '1883' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write('usage: npm start -- [--duration S] [--time-scale K] [--scenario FILE] [--config FILE] [--mqtt-port N]\n');
    return;
  }
  const timeScale = Number(values['time-scale']);
  const durationS = values.duration === undefined ? undefined : Number(values.duration);
  if (!(timeScale > 0) || (durationS !== undefined && !(durationS > 0))) {
    process.stderr.write('demo: --time-scale and --duration must be positive numbers\n');
    process.exit(2);
  }

  const log = createLogger({ name: 'demo' });
  const tmp = await tempDir('rackguard-demo-');
  const pty = await startPtyPair({ dir: tmp.path });
  const tcpPort = await freePort();
  // No broker configured: an embedded one on 127.0.0.1:1883, so mosquitto_sub can watch.
  let broker: EmbeddedBroker | undefined;
  const file = writeConfigVariant(values.config, join(tmp.path, 'demo.yaml'), (raw) => {
    pointAtSimulator(raw, pty.a, tcpPort);
    const outputs = (raw.outputs ??= {}) as { outbox?: { path?: string }; mqtt?: { url: string } };
    outputs.outbox = { ...outputs.outbox, path: join(tmp.path, 'outbox.db') };
  });
  if (!(loadConfigFile(file).outputs?.mqtt)) {
    broker = await startEmbeddedBroker(Number(values['mqtt-port']));
    writeConfigVariant(file, file, (raw) => {
      ((raw.outputs as { mqtt?: { url: string } }).mqtt = { url: broker!.url });
    });
  }
  const config = loadConfigFile(file);
  const scenario = loadScenarioFile(values.scenario, { config });
  const sim = await startSimulator({ config, scenario, serialPath: pty.b, tcpPort, timeScale, logger: createLogger({ name: 'sim' }) });
  const agent = createAgent(config, { logger: createLogger({ name: 'rackguard', level: config.logging.level }) });
  log.info(
    { serialLine: `${pty.a} <-> ${pty.b}`, chiller: `127.0.0.1:${tcpPort}`, mqtt: config.outputs?.mqtt?.url, scenario: scenario.name, timeScale },
    `demo: simulated rack on a virtual RS-485 line and Modbus TCP; ${scenario.description} Ctrl-C stops.`,
  );
  await agent.start();
  if (broker) log.info(`demo: MQTT on ${broker.url}; watch with: mosquitto_sub -h 127.0.0.1 -p ${broker.port} -t 'rackguard/#' -v`);

  let stopping = false;
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'demo: stopping');
    await agent.stop();
    await sim.stop();
    await broker?.stop();
    await pty.stop();
    await tmp.cleanup();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  if (durationS !== undefined) setTimeout(() => void stop(`--duration ${durationS}`), durationS * 1000);
}

main().catch((err: unknown) => {
  process.stderr.write(`demo: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
