/**
 * host.yaml, the configuration of `rackguard host` (agent/actions/host-agent.ts): its schema, and a
 * loader that reports every problem at once with its path, as the agent's own loader does
 * (./load.ts), and checks the files it names now rather than at the first command.
 * Every field is shown commented in config/host.example.yaml.
 */
import { accessSync, constants } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { NAME_PATTERN } from '../actions/host-protocol.js';
import { RackguardError } from '../errors.js';
import { HOUR_S, MINUTE_MS } from './durations.js';
import { ConfigError, formatIssues, yamlToData } from './load.js';
import { configFileChecker, MAX_CONFIG_FILE_BYTES, readRegularFile } from './read-file.js';

export const HOST_CONFIG_VERSION = 1;

const name = z.string().regex(NAME_PATTERN, { message: 'expected letters, digits, "_", "-" or "." (no "/", "+", "#" or spaces), at most 63' });

/** A local command: an argv array run without a shell; argv[0] an absolute path (no PATH lookup). */
const argv = z.array(z.string().min(1)).min(1);

export const hostConfigSchema = z
  .object({
    version: z.literal(HOST_CONFIG_VERSION),
    /** This host's name, as the gateway's action config names it; a topic level. */
    host: name,
    mqtt: z
      .object({
        /** The gateway's broker: mqtt://host:1883 or mqtts://host:8883. */
        url: z.string().regex(/^mqtts?:\/\/[^/\s]+/, { message: 'expected mqtt://host[:port] or mqtts://host[:port]' }),
        /** 5 (default): replies use the command's response topic and correlation data. 4: the fixed reply topic. */
        protocolVersion: z.union([z.literal(4), z.literal(5)]).default(5),
        /** Stable id, so the broker keeps our session (clean: false). Default `rackguard-host-<host>`. */
        clientId: z.string().min(1).max(128).optional(),
        /** Files holding the username / password (first line). */
        usernameFile: z.string().min(1).optional(),
        passwordFile: z.string().min(1).optional(),
        /** PEM files for TLS (mqtts://). */
        ca: z.string().min(1).optional(),
        cert: z.string().min(1).optional(),
        key: z.string().min(1).optional(),
        keepaliveS: z.int().min(1).max(65_535).default(30),
        /** mqtt.js reconnects at this fixed period after a lost connection, ms. */
        reconnectMs: z.int().min(100).max(10 * MINUTE_MS).default(2000),
      })
      .strict(),
    /** Topic root shared with the gateway (its `actions` config): commands arrive on `<baseTopic>/hosts/<host>/cmd`. */
    baseTopic: z
      .string()
      .min(1)
      .refine((t) => !/[+#]/.test(t) && !t.endsWith('/'), { message: 'expected a topic without wildcards or a trailing "/"' })
      .default('rackguard'),
    /** File holding this host's HMAC secret (first line, at least 32 characters). Shared only with the gateway. */
    secretFile: z.string().min(1),
    /** Directory for the state file (the last accepted seq). Must survive reboots: not /run or /tmp. */
    stateDir: z.string().min(1).default('/var/lib/rackguard-host'),
    commands: z
      .object({
        /** Run on an accepted `shutdown`, e.g. [/usr/bin/systemctl, poweroff]. */
        shutdown: argv,
        /** Optional harmless check run on `test` and on dry-run commands, e.g. [/usr/bin/systemctl, is-system-running]. */
        test: argv.optional(),
      })
      .strict(),
    /** A local command still running after this is killed with its whole process group. */
    commandTimeoutS: z.number().positive().max(HOUR_S).default(120),
    /** Between SIGTERM and SIGKILL to the command's process group at the timeout, s. */
    killGraceS: z.number().min(0).max(60).default(5),
    /** Tolerated clock difference with the gateway (both must be NTP-synced), s. */
    maxClockSkewS: z.number().min(0).max(HOUR_S).default(30),
    /** Confirm (`would-act`), never run the shutdown command. `--dry-run` sets it too. */
    dryRun: z.boolean().default(false),
    logging: z.object({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info') }).strict().prefault({}),
  })
  .strict();

export type HostConfig = z.output<typeof hostConfigSchema>;

/** At least this many characters of secret: 32 hex characters carry 128 bits. */
export const MIN_SECRET_CHARS = 32;

/**
 * Reads host.yaml: E_CONFIG_READ when it cannot be read; a ConfigError (E_CONFIG_INVALID) listing
 * every problem otherwise. Relative paths are resolved against the file's directory. The result is frozen.
 */
export function loadHostConfigFile(file: string): HostConfig {
  let text: string;
  try {
    text = readRegularFile(file, MAX_CONFIG_FILE_BYTES);
  } catch (err) {
    throw new RackguardError('E_CONFIG_READ', `${file}: cannot read configuration: ${(err as Error).message}`, { cause: err });
  }
  return parseHostConfig(text, file, dirname(resolve(file)));
}

export function parseHostConfig(text: string, source: string, baseDir: string): HostConfig {
  const doc = yamlToData(text);
  if (!doc.ok) throw new ConfigError(source, doc.problems);
  if (doc.data === null || doc.data === undefined) throw new ConfigError(source, ['(root): the file is empty; expected a mapping with version, host, mqtt, secretFile and commands']);
  const parsed = hostConfigSchema.safeParse(doc.data, { reportInput: true });
  if (!parsed.success) throw new ConfigError(source, formatIssues(parsed.error.issues));
  const cfg = parsed.data;
  const problems: string[] = [];
  const abs = (f: string): string => (isAbsolute(f) ? f : resolve(baseDir, f));
  const check = configFileChecker(baseDir, problems);
  const checkFile = (where: string, f: string | undefined): string | undefined => (f === undefined ? undefined : check(where, f));
  cfg.secretFile = checkFile('secretFile', cfg.secretFile)!;
  for (const f of ['usernameFile', 'passwordFile', 'ca', 'cert', 'key'] as const) {
    const p = checkFile(`mqtt.${f}`, cfg.mqtt[f]);
    if (p !== undefined) cfg.mqtt[f] = p;
  }
  cfg.stateDir = abs(cfg.stateDir);
  for (const action of ['shutdown', 'test'] as const) {
    const cmd = cfg.commands[action];
    if (!cmd) continue;
    // No PATH lookup: which binary runs must not depend on the environment the agent was started in.
    if (!isAbsolute(cmd[0]!)) problems.push(`commands.${action}[0]: expected an absolute path, got ${JSON.stringify(cmd[0])}`);
    else {
      try {
        accessSync(cmd[0]!, constants.X_OK);
      } catch (err) {
        problems.push(`commands.${action}[0]: ${cmd[0]} is not executable here: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
  }
  if (problems.length > 0) throw new ConfigError(source, problems);
  return deepFreeze(cfg);
}

function deepFreeze<T>(obj: T): T {
  if (obj && typeof obj === 'object' && !Object.isFrozen(obj)) {
    Object.freeze(obj);
    for (const v of Object.values(obj)) deepFreeze(v);
  }
  return obj;
}
