/**
 * Reaching a host through its host agent (`rackguard host`, docs/host-agent.md): a signed command on
 * `<hostsBaseTopic>/hosts/<host>/cmd`, over the gateway's own MQTT connection, built on
 * host-client.ts's sendHostCommand. The first reply is the acknowledgement the coordinator waits for;
 * the final report (done/failed) follows through `onLater`.
 *
 * A host agent acknowledges only once its local command has started (not by disconnecting, which let
 * NUT cut power too early, nut#2133), so `acknowledged` here means "the host is shutting down".
 */
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import type { Clock } from '../clock.js';
import type { AgentHostDef } from '../config/actions-schema.js';
import { asError, RackguardError } from '../errors.js';
import { readHostSecret } from './host-agent.js';
import { HostReplyRouter, sendHostCommand, type ReplyOutcome } from './host-client.js';
import type { HostReply } from './host-protocol.js';
import { FileSeqStore, type SeqStore } from './seq-file.js';
import type { TransportDeps } from './transport-deps.js';
import type { ActionContext, HostOutcome, HostTransport } from './types.js';

/** The gateway's command counter, under TransportDeps.stateDir (one per gateway, see docs/host-agent.md). */
export const GATEWAY_SEQ_FILE = 'host-command-seq.json';

/** Commands expire after this unless the caller says otherwise (the shutdown config's commandTtlS default). */
const DEFAULT_COMMAND_TTL_S = 120;

export interface HostAgentTransportOptions {
  /** How long a command stays valid after it is issued, s (shutdown.commandTtlS). */
  commandTtlS?: number;
  /** Replaces the file-backed counter (tests). */
  seqStore?: SeqStore;
}

/** A transport with resources to release (the reply router's listener on the shared client). */
export interface ClosableHostTransport<H extends AgentHostDef = AgentHostDef> extends HostTransport<H> {
  close(): void;
}

type Opts = Parameters<HostTransport['shutdown']>[2];

export function createHostAgentTransport(deps: TransportDeps, options: HostAgentTransportOptions = {}): ClosableHostTransport {
  const ttlS = options.commandTtlS ?? DEFAULT_COMMAND_TTL_S;
  let seqStore = options.seqStore;
  let router: HostReplyRouter | undefined;

  const outcome = (host: AgentHostDef, status: HostOutcome['status'], message: string, afterMs: number, detail: Record<string, unknown> = {}): HostOutcome => ({
    host: host.name,
    status,
    message,
    afterMs,
    detail: { via: 'agent', ...detail },
  });

  /** What the first reply means to the coordinator. */
  const fromAck = (host: AgentHostDef, o: ReplyOutcome, seq: number, test: boolean): HostOutcome => {
    if (o.kind === 'timeout') return outcome(host, 'timeout', `no reply from the host agent within ${Math.round(o.afterMs)} ms`, o.afterMs, { seq });
    const r = o.reply;
    const detail = replyDetail(r, seq);
    switch (r.status) {
      case 'accepted':
        return outcome(host, 'acknowledged', `accepted; local command started${r.detail ? ` (${r.detail})` : ''}`, o.afterMs, detail);
      case 'would-act':
        return outcome(host, 'would-act', `would act${r.detail ? `: ${r.detail}` : ''}`, o.afterMs, detail);
      case 'rejected':
        return outcome(host, 'rejected', `rejected: ${r.reason ?? 'no reason given'}${r.detail ? ` (${r.detail})` : ''}`, o.afterMs, detail);
      case 'failed':
        return outcome(host, 'failed', `failed: ${r.reason ?? 'no reason given'}${r.detail ? ` (${r.detail})` : ''}`, o.afterMs, detail);
      case 'done':
        // Only a test command's report can come first; a shutdown is always `accepted` first.
        return outcome(host, test ? 'would-act' : 'acknowledged', `done${r.detail ? `: ${r.detail}` : ''}`, o.afterMs, detail);
    }
  };

  /** What the final report means (it follows a non-final acknowledgement). */
  const fromFinal = (host: AgentHostDef, o: ReplyOutcome, seq: number, test: boolean): HostOutcome => {
    if (o.kind === 'timeout') return outcome(host, 'timeout', `no final report from the host agent within ${Math.round(o.afterMs)} ms`, o.afterMs, { seq, final: true });
    const r = o.reply;
    const detail = { ...replyDetail(r, seq), final: true };
    if (r.status === 'done') return outcome(host, test ? 'would-act' : 'acknowledged', `local ${test ? 'test' : 'shutdown'} command done${r.detail ? `: ${r.detail}` : ''}`, o.afterMs, detail);
    return fromAck(host, o, seq, test);
  };

  return {
    async shutdown(host: AgentHostDef, ctx: ActionContext, opts: Opts): Promise<HostOutcome> {
      const t0 = deps.clock.monoMs();
      const since = (): number => deps.clock.monoMs() - t0;
      const test = opts.test || ctx.dryRun;
      if (opts.signal.aborted) return outcome(host, 'failed', 'not asked: cancelled (the agent is stopping)', 0);
      const client = deps.mqtt;
      if (!client) return outcome(host, 'unreachable', 'no MQTT connection to the host agents\' broker (outputs.mqtt missing or unreachable)', 0);
      if (!client.connected) {
        // The broker is down: wait for it within the host's acknowledgement deadline (mqtt.js keeps
        // reconnecting). Sending now would fail on the reply subscription, or queue a command that
        // the broker may deliver long after the trail said "not asked".
        const up = await connectedWithin(client, opts.ackTimeoutMs, opts.signal, deps.clock);
        if (!up) return outcome(host, 'unreachable', `not asked: no connection to the broker within ${opts.ackTimeoutMs} ms (the command was not sent and is not queued)`, since());
      }
      let secret: Buffer;
      try {
        secret = readHostSecret(host.secretFile, deps.logger);
      } catch (err) {
        return outcome(host, 'failed', `not asked: ${asError(err).message}`, since(), { code: codeOf(err) });
      }
      seqStore ??= new FileSeqStore(join(deps.stateDir, GATEWAY_SEQ_FILE));
      router ??= new HostReplyRouter(client, deps.hostsBaseTopic, deps.logger);
      const sending = sendHostCommand(client, host.name, { action: test ? 'test' : 'shutdown', incident: ctx.incident, dryRun: test, ttlS }, {
        secret,
        seqStore,
        replies: router,
        baseTopic: deps.hostsBaseTopic,
        gateway: deps.gateway,
        protocolVersion: client.options.protocolVersion === 5 ? 5 : 4,
        ackTimeoutMs: Math.max(1, opts.ackTimeoutMs - since()),
        // The final report is a power-off in progress: wait as long as the host is given to be off,
        // and at least as long as the command is valid (a late delivery may still be acted on).
        finalTimeoutMs: Math.max(opts.ackTimeoutMs, host.forceOffAfterS * 1000, ttlS * 1000),
        clock: deps.clock,
      });
      let handle;
      try {
        handle = await sending;
      } catch (err) {
        // The host was never asked: the counter could not be persisted, or the publish failed.
        const e = asError(err);
        const status = e instanceof RackguardError && e.code === 'E_HOST_STATE' ? 'failed' : 'unreachable';
        return outcome(host, status, `not asked: ${e.message}`, since(), { code: codeOf(err) });
      }
      const seq = handle.command.seq;
      const finalPending = handle.ack.kind === 'reply' && !handle.ack.reply.final;
      let first = fromAck(host, handle.ack, seq, test);
      if (handle.ack.kind === 'timeout') {
        if (!handle.published) {
          const until = new Date(handle.command.expiresAtMs).toISOString();
          first = outcome(host, 'unreachable', `the broker did not confirm the command within ${Math.round(handle.ack.afterMs)} ms: it stays queued in the gateway's MQTT client and is valid until ${until}; the host may still act on it, and its late reply is recorded`, handle.ack.afterMs, { seq, published: false, expiresAtMs: handle.command.expiresAtMs });
        }
        // A host that answers after the deadline (it was away, or the command waited in a queue) did
        // act: its reply, and the final report after it, still go into the trail.
        if (opts.onLater) {
          const onLater = opts.onLater;
          void handle.late.then((o) => {
            if (o.kind !== 'reply') return;
            const late = fromAck(host, o, seq, test);
            onLater({ ...late, message: `late reply: ${late.message}`, detail: { ...late.detail, late: true } });
            if (!o.reply.final) void handle.final.then((f) => onLater(fromFinal(host, f, seq, test)));
          });
        }
      }
      if (handle.reissued) {
        // The action went through, but the clocks disagree: the trail and the log must say so, so that
        // the operator fixes NTP before it matters more (the gateway's STATUS says clock unsynced too).
        const { seq: refusedSeq, reason, hostClockOffsetMs } = handle.reissued;
        const skew = `${hostClockOffsetMs >= 0 ? 'behind' : 'ahead of'} the host's by ${Math.abs(Math.round(hostClockOffsetMs / 1000))} s`;
        deps.logger.warn({ host: host.name, refusedSeq, seq, reason, hostClockOffsetMs }, `host ${host.name} refused command ${refusedSeq} (${reason}): this gateway's clock is ${skew}; sent again as ${seq} in the host's time (check NTP on the gateway and on the host)`);
        first.message = `${first.message} [sent again in the host's time after "${reason}": this gateway's clock is ${skew}]`;
        first.detail = { ...first.detail, reissued: handle.reissued };
      }
      // Tells the caller a report follows through onLater (a started command, or a host's test check).
      if (finalPending) first.detail = { ...first.detail, finalPending: true };
      if (finalPending && opts.onLater) {
        const onLater = opts.onLater;
        void handle.final.then((o) => onLater(fromFinal(host, o, seq, test)));
      }
      return first;
    },
    close(): void {
      router?.detach();
      router = undefined;
    },
  };
}

function replyDetail(r: HostReply, seq: number): Record<string, unknown> {
  const d: Record<string, unknown> = { seq, reply: r.status };
  if (r.reason !== undefined) d.reason = r.reason;
  if (r.detail !== undefined) d.hostDetail = r.detail;
  if (r.exitCode !== undefined) d.exitCode = r.exitCode;
  if (r.signal !== undefined) d.signal = r.signal;
  if (r.outputTail !== undefined) d.outputTail = r.outputTail;
  return d;
}

function codeOf(err: unknown): string | undefined {
  return err instanceof RackguardError ? err.code : undefined;
}

/** Resolves true once `client` is connected, false at the deadline or on abort. */
function connectedWithin(client: MqttClient, ms: number, signal: AbortSignal, clock: Clock): Promise<boolean> {
  if (client.connected) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const done = (v: boolean): void => {
      clock.clearTimeout(timer);
      client.off('connect', onConnect);
      signal.removeEventListener('abort', onAbort);
      resolve(v);
    };
    const onConnect = (): void => done(true);
    const onAbort = (): void => done(false);
    const timer = clock.setTimeout(() => done(false), ms);
    client.on('connect', onConnect);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
