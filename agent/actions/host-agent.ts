/**
 * `rackguard host`: the agent on each server that the gateway asks to shut down (issue 8, item 3).
 * A Component (agent/component.ts). It subscribes to `<base>/hosts/<host>/cmd` and accepts a command
 * only when host-protocol.ts's judgeCommand() says so (signature with this host's secret, addressed to
 * this host, within its validity window, seq above the last accepted one), persists the seq BEFORE it
 * acts, and then runs only the argv configured locally for that action: nothing in the message is
 * ever executed, and no shell is involved. Every rejection is logged and published with its reason.
 *
 * Replies: `accepted` once the local command has started (not merely "message received": upsmon's
 * secondaries that acknowledge by disconnecting let power go too early, nut#2133), then `done` or
 * `failed` with the exit code and the output tail. `test` and dry-run commands get `would-act`, and
 * the optional local `test` command's result. Availability is a retained status with a last will.
 *
 * The protocol is in docs/host-agent.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import type { Component } from '../component.js';
import type { HostConfig } from '../config/host-schema.js';
import { MIN_SECRET_CHARS } from '../config/host-schema.js';
import { readRegularFile } from '../config/read-file.js';
import { RackguardError, asError } from '../errors.js';
import { readCredential } from '../outputs/context.js';
import { LEAN_MQTT_OPTIONS } from '../outputs/mqtt-connection.js';
import {
  chooseReplyTopic,
  commandTopic,
  judgeCommand,
  MAX_OUTPUT_TAIL_CHARS,
  PROTOCOL_VERSION,
  signReply,
  statusTopic,
  tail,
  type FailReason,
  type HostCommand,
  type HostStatus,
  type UnsignedHostReply,
} from './host-protocol.js';
import { FileSeqStore, type SeqStore } from './seq-file.js';

/** MQTT 5 session expiry with clean: false: commands sent while we reconnect wait for us, s. */
const SESSION_EXPIRY_S = 24 * 3600;
/** Our own deadline on the offline status at stop. */
const STOP_PUBLISH_TIMEOUT_MS = 2000;

export interface HostAgentDeps {
  logger: Logger;
  clock?: Clock;
  /** Replaces mqtt.connect (tests). */
  connect?: (url: string, opts: IClientOptions) => MqttClient;
  /** Source of PATH/LANG for the local command and of RACKGUARD_MQTT_* credentials. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** `--dry-run`: confirm, never act (as `dryRun: true` in host.yaml). */
  dryRun?: boolean;
  /** Replaces the state file (tests). */
  seqStore?: SeqStore;
}

/** What one local command run produced. */
interface RunResult {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  spawnError?: Error;
  output: string;
}

/** Reads a host secret file: its first line, at least MIN_SECRET_CHARS characters. E_SECRET_READ otherwise. */
export function readHostSecret(file: string, logger?: Logger): Buffer {
  let text: string;
  try {
    text = readRegularFile(file, 4096);
  } catch (err) {
    throw new RackguardError('E_SECRET_READ', `cannot read host secret file ${file}: ${(err as Error).message}`, { cause: err });
  }
  const secret = (text.split(/\r?\n/)[0] ?? '').trim();
  if (secret.length < MIN_SECRET_CHARS) {
    throw new RackguardError('E_SECRET_READ', `host secret file ${file}: the secret has ${secret.length} characters, at least ${MIN_SECRET_CHARS} are needed (e.g. openssl rand -hex 32)`);
  }
  try {
    if ((statSync(file).mode & 0o077) !== 0) logger?.warn({ file }, 'the host secret file is readable by group or others: chmod 600 it');
  } catch {
    // read above succeeded; a stat failure here changes nothing
  }
  return Buffer.from(secret, 'utf8');
}

export class HostAgent implements Component {
  readonly name = 'host-agent';
  private readonly clock: Clock;
  private readonly env: NodeJS.ProcessEnv;
  private readonly seqStore: SeqStore;
  private readonly dryRun: boolean;
  private client: MqttClient | undefined;
  private secret: Buffer | undefined;
  private lastSeq = 0;
  /** The signature of the command accepted last: a byte-identical copy of it is a redelivery, not a replay attack. */
  private lastAcceptedSig: string | undefined;
  private readonly children = new Set<ChildProcess>();
  private readonly timers = new Set<ReturnType<Clock['setTimeout']>>();

  constructor(
    private readonly config: HostConfig,
    private readonly deps: HostAgentDeps,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.env = deps.env ?? process.env;
    this.seqStore = deps.seqStore ?? new FileSeqStore(join(config.stateDir, 'last-seq.json'));
    this.dryRun = config.dryRun || Boolean(deps.dryRun);
  }

  get base(): string {
    return this.config.baseTopic;
  }

  /**
   * Output files of commands a previous run did not see end: the shutdown command stops this agent by
   * design, so after a real shutdown its file is never read back. A command still running keeps
   * writing to its (unlinked) file: nothing is lost that anyone would read.
   */
  private removeStaleOutputs(): void {
    let names: string[];
    try {
      names = readdirSync(this.config.stateDir);
    } catch {
      return; // no state directory yet
    }
    for (const name of names) {
      if (!/^command-\d+\.out$/.test(name)) continue;
      try {
        rmSync(join(this.config.stateDir, name), { force: true });
      } catch (err) {
        this.deps.logger.warn({ file: name, err: asError(err).message }, 'cannot remove an old command output file');
      }
    }
  }

  /**
   * Reads the secret and the last accepted seq (a damaged state file is E_HOST_STATE: the agent does
   * not start rather than accept replays), then connects in the background; resolves at once.
   */
  async start(): Promise<void> {
    if (this.client) return;
    const { config, deps } = this;
    this.secret = readHostSecret(config.secretFile, deps.logger);
    this.lastSeq = this.seqStore.read();
    this.removeStaleOutputs();
    const username = readCredential(config.mqtt.usernameFile, 'RACKGUARD_MQTT_USERNAME', this.env);
    const password = readCredential(config.mqtt.passwordFile, 'RACKGUARD_MQTT_PASSWORD', this.env);
    const pem = (f: string | undefined): Buffer | undefined => (f === undefined ? undefined : Buffer.from(readRegularFile(f, 1024 * 1024)));
    const will: HostStatus = { v: PROTOCOL_VERSION, host: config.host, state: 'offline' };
    const opts: IClientOptions = {
      ...LEAN_MQTT_OPTIONS,
      clientId: config.mqtt.clientId ?? `rackguard-host-${config.host}`,
      protocolVersion: config.mqtt.protocolVersion,
      clean: false,
      keepalive: config.mqtt.keepaliveS,
      reconnectPeriod: config.mqtt.reconnectMs,
      connectTimeout: 10_000,
      queueQoSZero: false,
      will: { topic: statusTopic(this.base, config.host), payload: Buffer.from(JSON.stringify(will)), qos: 1, retain: true },
      ...(config.mqtt.protocolVersion === 5 ? { properties: { sessionExpiryInterval: SESSION_EXPIRY_S } } : {}),
      ...(username !== undefined ? { username } : {}),
      ...(password !== undefined ? { password } : {}),
      ...(config.mqtt.ca ? { ca: pem(config.mqtt.ca) } : {}),
      ...(config.mqtt.cert ? { cert: pem(config.mqtt.cert) } : {}),
      ...(config.mqtt.key ? { key: pem(config.mqtt.key) } : {}),
    };
    deps.logger.info({ host: config.host, lastSeq: this.lastSeq, dryRun: this.dryRun, topic: commandTopic(this.base, config.host) }, 'host agent starting');
    const client = (deps.connect ?? mqtt.connect)(config.mqtt.url, opts);
    this.client = client;
    client.on('connect', () => this.onConnect(client));
    client.on('message', (topic, payload, packet) => this.onMessage(topic, payload, packet));
    client.on('error', (err) => deps.logger.error({ err: asError(err).message }, 'mqtt error'));
    client.on('offline', () => deps.logger.warn({}, 'mqtt offline; reconnecting'));
  }

  /**
   * Says `offline` (retained) and disconnects. A local command already running is left alone: it
   * may be the shutdown that is stopping us.
   */
  async stop(): Promise<void> {
    for (const t of this.timers) this.clock.clearTimeout(t);
    this.timers.clear();
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    try {
      if (client.connected) {
        const offline: HostStatus = { v: PROTOCOL_VERSION, host: this.config.host, state: 'offline', tsMs: this.clock.wallMs() };
        await Promise.race([
          client.publishAsync(statusTopic(this.base, this.config.host), JSON.stringify(offline), { qos: 1, retain: true }),
          new Promise((r) => setTimeout(r, STOP_PUBLISH_TIMEOUT_MS).unref()),
        ]);
      }
    } catch (err) {
      this.deps.logger.warn({ err: asError(err).message }, 'could not publish the offline status');
    }
    await client.endAsync(true);
  }

  private onConnect(client: MqttClient): void {
    const { config, deps } = this;
    const online: HostStatus = { v: PROTOCOL_VERSION, host: config.host, state: 'online', dryRun: this.dryRun, tsMs: this.clock.wallMs() };
    client.publish(statusTopic(this.base, config.host), JSON.stringify(online), { qos: 1, retain: true });
    const topic = commandTopic(this.base, config.host);
    client.subscribe(topic, { qos: 1 }, (err) => {
      if (err) deps.logger.error({ topic, err: err.message }, 'cannot subscribe to the command topic');
      else deps.logger.info({ topic }, 'host agent ready: subscribed');
    });
  }

  /** Judges one command and acts on it; synchronous up to the spawn, so seqs are handled in arrival order. */
  private onMessage(topic: string, payload: Buffer, packet: IPublishPacket): void {
    const { config, deps } = this;
    if (topic !== commandTopic(this.base, config.host) || !this.secret) return;
    const props = packet.properties;
    const respond = (reply: Omit<UnsignedHostReply, 'v' | 'host' | 'tsMs'>): void => this.reply(props?.responseTopic, props?.correlationData, reply);
    const verdict = judgeCommand(payload, {
      host: config.host,
      secret: this.secret,
      nowMs: this.clock.wallMs(),
      maxClockSkewMs: config.maxClockSkewS * 1000,
      lastSeq: this.lastSeq,
    });
    if (!verdict.accept && verdict.reason === 'replayed' && verdict.cmd !== undefined && verdict.cmd.seq === this.lastSeq && verdict.cmd.sig === this.lastAcceptedSig) {
      // The same signed command again (a QoS 1 redelivery: the gateway resent it after a lost PUBACK,
      // or the broker redelivered it to our persistent session). It was acted on once; a `rejected`
      // reply for the copy would reach the gateway under the same seq and could replace the real
      // acknowledgement or final report in its trail. So no reply: logged only.
      deps.logger.info({ seq: verdict.cmd.seq, incident: verdict.cmd.incident, bytes: payload.byteLength }, 'duplicate delivery of the command accepted last: ignored (it runs once)');
      return;
    }
    if (!verdict.accept) {
      deps.logger.warn({ reason: verdict.reason, detail: verdict.detail, seq: verdict.hints.seq, incident: verdict.hints.incident, bytes: payload.byteLength }, `command rejected: ${verdict.reason}`);
      respond({ seq: verdict.hints.seq, incident: verdict.hints.incident, status: 'rejected', final: true, reason: verdict.reason, detail: verdict.detail });
      return;
    }
    const cmd = verdict.cmd;
    const ids = { seq: cmd.seq, incident: cmd.incident };
    // Persist first: if we acted and then lost power before recording the seq, the same command
    // replayed after the reboot would be accepted again.
    try {
      this.seqStore.write(cmd.seq);
    } catch (err) {
      deps.logger.error({ ...ids, err: asError(err).message }, 'command refused: its seq cannot be persisted');
      respond({ ...ids, status: 'rejected', final: true, reason: 'state-write-failed', detail: asError(err).message });
      return;
    }
    this.lastSeq = cmd.seq;
    this.lastAcceptedSig = cmd.sig;
    const dryRun = this.dryRun || cmd.dryRun || cmd.action === 'test';
    deps.logger.info({ ...ids, action: cmd.action, gateway: cmd.gateway, dryRun }, 'command accepted');
    if (dryRun) {
      const check = config.commands.test;
      respond({
        ...ids,
        status: 'would-act',
        final: check === undefined,
        detail: `would run ${config.commands.shutdown[0]}${check ? `; running the test command ${check[0]}` : ''}`,
      });
      if (check) this.runLocal(check, cmd, true, () => undefined, respond);
      return;
    }
    this.runLocal(config.commands.shutdown, cmd, false, () => respond({ ...ids, status: 'accepted', final: false, detail: `started ${config.commands.shutdown[0]}` }), respond);
  }

  /**
   * Runs a configured argv in its own process group (so a timeout can kill its children too), with
   * the event in the environment, and reports its end. `onStarted` runs once the process exists.
   */
  private runLocal(argv: readonly string[], cmd: HostCommand, dryRun: boolean, onStarted: () => void, respond: (r: Omit<UnsignedHostReply, 'v' | 'host' | 'tsMs'>) => void): void {
    const { config, deps } = this;
    const ids = { seq: cmd.seq, incident: cmd.incident };
    // A clean environment: the agent's own may hold broker credentials.
    const env: NodeJS.ProcessEnv = {
      PATH: this.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      ...(this.env.LANG !== undefined ? { LANG: this.env.LANG } : {}),
      RACKGUARD_HOST: config.host,
      RACKGUARD_GATEWAY: cmd.gateway,
      RACKGUARD_ACTION: cmd.action,
      RACKGUARD_INCIDENT: cmd.incident,
      RACKGUARD_SEQ: String(cmd.seq),
      RACKGUARD_DRY_RUN: dryRun ? '1' : '0',
    };
    // The output goes to a file, not to pipes: the shutdown command stops this agent (its unit is
    // stopped with the others, KillMode=process keeps the command alive), and a pipe without its
    // reader kills the command with SIGPIPE at its next line of output, halfway through a shutdown.
    const outFile = join(config.stateDir, `command-${cmd.seq}.out`);
    let outFd: number | 'ignore' = 'ignore';
    try {
      mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
      outFd = openSync(outFile, 'w', 0o600);
    } catch (err) {
      // No output tail then, but the command still runs: it was accepted and recorded.
      deps.logger.warn({ ...ids, file: outFile, err: asError(err).message }, 'cannot open the command output file; running without its output');
    }
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { detached: true, shell: false, stdio: ['ignore', outFd, outFd], env });
    } finally {
      // The child holds its own copy of the descriptor.
      if (typeof outFd === 'number') closeSync(outFd);
    }
    this.children.add(child);
    const readOutput = (): string => {
      if (outFd === 'ignore') return '';
      try {
        return readTail(outFile, 4 * MAX_OUTPUT_TAIL_CHARS);
      } catch (err) {
        return `(output unreadable: ${asError(err).message})`;
      } finally {
        rmSync(outFile, { force: true });
      }
    };
    let timedOut = false;
    let killTimer: ReturnType<Clock['setTimeout']> | undefined;
    const killGroup = (signal: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        // ESRCH: the whole group is gone already
      }
    };
    const deadline = this.clock.setTimeout(() => {
      this.timers.delete(deadline);
      timedOut = true;
      deps.logger.warn({ ...ids, argv0: argv[0], timeoutS: config.commandTimeoutS }, 'local command timed out: killing its process group');
      killGroup('SIGTERM');
      killTimer = this.clock.setTimeout(() => {
        if (killTimer) this.timers.delete(killTimer);
        killTimer = undefined;
        killGroup('SIGKILL');
        maybeFinish();
      }, config.killGraceS * 1000);
      this.timers.add(killTimer);
    }, config.commandTimeoutS * 1000);
    this.timers.add(deadline);

    let result: RunResult | undefined;
    let reported = false;
    // Final report once the leader exited and, after a timeout, once the group got its SIGKILL.
    const maybeFinish = (): void => {
      if (reported || !result || (timedOut && killTimer !== undefined)) return;
      reported = true;
      this.clock.clearTimeout(deadline);
      this.timers.delete(deadline);
      this.children.delete(child);
      this.finish(result, ids, argv, respond);
    };
    child.once('spawn', () => {
      deps.logger.info({ ...ids, argv0: argv[0], pid: child.pid }, 'local command started');
      onStarted();
    });
    child.once('error', (err) => {
      // Without a pid it never started (ENOENT, EACCES): no 'exit' follows.
      if (child.pid === undefined) {
        result = { exitCode: null, signal: null, timedOut: false, spawnError: err, output: readOutput() };
        maybeFinish();
      }
    });
    child.once('exit', (code, signal) => {
      // The file holds everything the leader wrote; a grandchild still writing adds after the report.
      result = { exitCode: code, signal, timedOut, output: readOutput() };
      maybeFinish();
    });
  }

  private finish(r: RunResult, ids: { seq: number; incident: string }, argv: readonly string[], respond: (r: Omit<UnsignedHostReply, 'v' | 'host' | 'tsMs'>) => void): void {
    const outputTail = tail(r.output);
    let reason: FailReason | undefined;
    let detail: string;
    if (r.spawnError) {
      reason = 'spawn-failed';
      detail = `cannot start ${argv[0]}: ${r.spawnError.message}`;
    } else if (r.timedOut) {
      reason = 'timeout';
      detail = `${argv[0]} still running after ${this.config.commandTimeoutS} s: its process group was killed`;
    } else if (r.signal) {
      reason = 'signal';
      detail = `${argv[0]} was killed by ${r.signal}`;
    } else if (r.exitCode !== 0) {
      reason = 'exit-code';
      detail = `${argv[0]} exited with code ${r.exitCode}`;
    } else detail = `${argv[0]} exited with code 0`;
    const status = reason === undefined ? 'done' : 'failed';
    this.deps.logger[status === 'done' ? 'info' : 'error']({ ...ids, exitCode: r.exitCode, signal: r.signal, reason }, `local command ${status}: ${detail}`);
    respond({ ...ids, status, final: true, ...(reason ? { reason } : {}), detail, exitCode: r.exitCode, signal: r.signal, outputTail });
  }

  /** Publishes a signed reply: to the command's MQTT 5 response topic (when allowed) with its correlation data, else the reply topic. */
  private reply(responseTopic: string | undefined, correlationData: Buffer | undefined, body: Omit<UnsignedHostReply, 'v' | 'host' | 'tsMs'>): void {
    const client = this.client;
    if (!client || !this.secret) return;
    const reply = signReply({ v: PROTOCOL_VERSION, host: this.config.host, tsMs: this.clock.wallMs(), ...body }, this.secret);
    const topic = chooseReplyTopic(this.base, this.config.host, responseTopic);
    const properties = this.config.mqtt.protocolVersion === 5 && correlationData ? { properties: { correlationData } } : {};
    client.publish(topic, JSON.stringify(reply), { qos: 1, ...properties }, (err) => {
      if (err) this.deps.logger.error({ topic, seq: body.seq, status: body.status, err: err.message }, 'cannot publish the reply');
    });
  }
}

/** The last `maxBytes` bytes of a file, as UTF-8 (a character cut at the start is dropped by tail()). */
function readTail(file: string, maxBytes: number): string {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const len = Math.min(size, maxBytes);
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, size - len);
    return buf.toString('utf8');
  } finally {
    closeSync(fd);
  }
}
