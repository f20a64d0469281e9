/**
 * A real mosquitto for integration tests: its own config, persistence dir and free loopback port in a
 * temp dir. stop()/restart() keep the port and the persistence dir, so an outage test can take the broker
 * down and bring it back with its persistent sessions (SIGTERM makes mosquitto save them).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { spawnAndWait, type SpawnedProcess } from './proc.js';
import { tempDir, type TempDir } from './tmp.js';

export const MOSQUITTO = '/usr/sbin/mosquitto';
const MOSQUITTO_PASSWD = '/usr/bin/mosquitto_passwd';

export interface MosquittoOptions {
  /** user → password; when set, anonymous clients are refused. */
  users?: Record<string, string>;
  /** mosquitto acl_file text, e.g. `user u\ntopic write rackguard/#`. */
  acl?: string;
  /** Largest payload the broker accepts, bytes (mosquitto `message_size_limit`). */
  messageSizeLimit?: number;
  /** Extra config lines. */
  extra?: string[];
  /** TLS on the listener (the URL becomes mqtts://): PEM files; `requireCertificate` asks clients for one signed by `cafile`. */
  tls?: { cafile: string; certfile: string; keyfile: string; requireCertificate?: boolean };
}

export interface Mosquitto {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  readonly process: SpawnedProcess;
  /** SIGTERM (mosquitto saves persistence), await exit. */
  stop(): Promise<void>;
  /** Starts again on the same port with the same persistence. */
  restart(): Promise<void>;
  /** stop() and remove the temp dir. */
  cleanup(): Promise<void>;
}

export async function startMosquitto(opts: MosquittoOptions = {}): Promise<Mosquitto> {
  const tmp: TempDir = await tempDir('rackguard-mosquitto-');
  let port = await freePort();
  const dataDir = join(tmp.path, 'data');
  mkdirSync(dataDir);
  const lines = [
    'LISTENER',
    'persistence true',
    `persistence_location ${dataDir}/`,
    'autosave_interval 1',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
    'log_type debug',
    'connection_messages true',
    // mosquitto 2.0 keeps at most 1000 messages per offline session by default: unlimited here, so an
    // outage test measures rackguard and not this limit.
    'max_queued_messages 0',
    'max_inflight_messages 0',
  ];
  // Started as root, mosquitto drops to user "mosquitto", who cannot write our 0700 temp dir.
  if (process.getuid?.() === 0) lines.push(`user ${userInfo().username}`);
  if (opts.users) {
    const pw = join(tmp.path, 'passwd');
    writeFileSync(pw, '');
    for (const [u, p] of Object.entries(opts.users)) execFileSync(MOSQUITTO_PASSWD, ['-b', pw, u, p]);
    lines.push(`password_file ${pw}`, 'allow_anonymous false');
  } else lines.push('allow_anonymous true');
  if (opts.acl !== undefined) {
    const acl = join(tmp.path, 'acl');
    writeFileSync(acl, `${opts.acl}\n`);
    lines.push(`acl_file ${acl}`);
  }
  if (opts.messageSizeLimit !== undefined) lines.push(`message_size_limit ${opts.messageSizeLimit}`);
  // Listener options: mosquitto reads them for the listener above them (the first line).
  if (opts.tls) lines.splice(1, 0, `cafile ${opts.tls.cafile}`, `certfile ${opts.tls.certfile}`, `keyfile ${opts.tls.keyfile}`, `require_certificate ${opts.tls.requireCertificate ? 'true' : 'false'}`);
  lines.push(...(opts.extra ?? []));
  const conf = join(tmp.path, 'mosquitto.conf');
  const writeConf = (): void => writeFileSync(conf, `${lines.map((l) => (l === 'LISTENER' ? `listener ${port} 127.0.0.1` : l)).join('\n')}\n`);
  writeConf();

  const launch = () => spawnAndWait(MOSQUITTO, ['-c', conf], { readyLine: /mosquitto version .* running/, timeoutMs: 15_000 });
  // A free port can be taken by another test file between our probe and mosquitto's bind: try others.
  let proc: SpawnedProcess | undefined;
  for (let attempt = 1; !proc; attempt++) {
    try {
      proc = await launch();
    } catch (err) {
      if (attempt >= 5 || !/Address already in use/i.test((err as Error).message)) throw err;
      port = await freePort();
      writeConf();
    }
  }
  let current: SpawnedProcess = proc;
  const broker: Mosquitto = {
    port,
    url: `${opts.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${port}`,
    dir: tmp.path,
    get process() {
      return current;
    },
    async stop() {
      await current.stop('SIGTERM');
    },
    async restart() {
      await current.stop('SIGTERM');
      current = await launch();
    },
    async cleanup() {
      await current.stop('SIGTERM');
      await tmp.cleanup();
    },
  };
  return broker;
}
