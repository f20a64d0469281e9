/**
 * A host's BMC over IPMI (issue 8), through Debian's ipmitool (no maintained npm IPMI client exists):
 *   ipmitool -I lanplus -H <address> -p <port> -U <user> -E -C <cipherSuite> chassis power soft|status|off
 * The password goes ONLY in the IPMI_PASSWORD environment variable (`-E`): argv is world-readable in
 * /proc/<pid>/cmdline, the environment is not. User name and password are read from their files at
 * each call. Every call has a deadline (`timeoutS`), after which ipmitool is killed: its own lanplus
 * retries take about 20 s to give up on a silent BMC.
 *
 * shutdown(): `chassis power soft` (ACPI soft-off) → acknowledged; then the power state is polled
 * until off, or until forceOffAfterS, then `chassis power off` only if allowForceOff (bmc-power-watch).
 * Test or dry run: `chassis power status` only (reachable, credentials valid) → would-act.
 */
import { spawn } from 'node:child_process';
import type { IpmiHostDef } from '../config/actions-schema.js';
import { readBmcCredentials } from './bmc-credentials.js';
import { watchPowerOff, type PowerState } from './bmc-power-watch.js';
import type { TransportDeps } from './transport-deps.js';
import type { HostOutcome, HostTransport } from './types.js';

export interface IpmiTransportOptions {
  /** The ipmitool binary, an absolute path (no PATH lookup). Default /usr/bin/ipmitool. */
  ipmitoolPath?: string;
  /** Power-state polling interval after the soft power-off, ms. Default 5000. */
  pollIntervalMs?: number;
}

export const DEFAULT_IPMITOOL = '/usr/bin/ipmitool';
const DEFAULT_POLL_INTERVAL_MS = 5000;
/** Kept of ipmitool's stdout/stderr: its answers and error lines are short. */
const OUTPUT_CAP_BYTES = 8192;

type PowerCommand = 'soft' | 'status' | 'off';

/** Why an ipmitool call did not give an answer; `status` is the outcome it maps to. */
export class IpmiCallError extends Error {
  constructor(
    readonly status: 'failed' | 'unreachable' | 'timeout',
    message: string,
    readonly detail: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'IpmiCallError';
  }
}

/** The argv of one call (pure; exported for the tests): never the password. */
export function ipmitoolArgs(host: IpmiHostDef, username: string, command: PowerCommand): string[] {
  return ['-I', 'lanplus', '-H', host.address, '-p', String(host.port), '-U', username, '-E', '-C', String(host.cipherSuite), 'chassis', 'power', command];
}

/** "Chassis Power is on|off" → the state (pure). */
export function parsePowerStatus(stdout: string): PowerState {
  const m = /Chassis Power is (on|off)/i.exec(stdout);
  return m ? (m[1]!.toLowerCase() as PowerState) : 'unknown';
}

/** ipmitool's error lines without its "Error: " prefix, for a one-line message. */
function errorText(stderr: string, stdout: string): string {
  const lines = `${stderr}\n${stdout}`
    .split('\n')
    .map((l) => l.trim().replace(/^Error:\s*/i, ''))
    .filter((l) => l !== '' && !/^Loading IANA PEN Registry/i.test(l));
  return lines.length > 0 ? lines.slice(-3).join('; ') : 'no output';
}

/** Errors that mean the BMC's address cannot be reached at all, not that it refused us. */
const UNREACHABLE_RE = /lookup|name or service not known|no route to host|network is unreachable|connection refused|host is unreachable/i;

export function createIpmiTransport(deps: TransportDeps, opts: IpmiTransportOptions = {}): HostTransport<IpmiHostDef> {
  const ipmitool = opts.ipmitoolPath ?? DEFAULT_IPMITOOL;
  const pollIntervalMs = opts.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
  const { clock, logger } = deps;

  const where = (host: IpmiHostDef): string => `host ${host.name} (ipmi ${host.address}:${host.port})`;

  /** One ipmitool call with its deadline; resolves with stdout, rejects with an IpmiCallError. */
  function call(host: IpmiHostDef, command: PowerCommand, deadlineMs: number, signal: AbortSignal): Promise<string> {
    const what = `ipmitool chassis power ${command}`;
    let creds;
    try {
      creds = readBmcCredentials(host.name, host);
    } catch (err) {
      return Promise.reject(new IpmiCallError('failed', `${where(host)}: ${(err as Error).message}`, { command }));
    }
    const started = clock.monoMs();
    return new Promise<string>((resolve, reject) => {
      let stdout = '';
      let stderr = '';
      let killedFor: 'deadline' | 'abort' | undefined;
      let settled = false;
      const child = spawn(ipmitool, ipmitoolArgs(host, creds.username, command), {
        // A minimal environment: the password, a C locale for parseable answers, nothing inherited
        // that could change ipmitool's behaviour.
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', IPMI_PASSWORD: creds.password },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const append = (cur: string, chunk: Buffer): string => (cur.length >= OUTPUT_CAP_BYTES ? cur : cur + chunk.toString('utf8').slice(0, OUTPUT_CAP_BYTES - cur.length));
      child.stdout.on('data', (c: Buffer) => (stdout = append(stdout, c)));
      child.stderr.on('data', (c: Buffer) => (stderr = append(stderr, c)));
      const kill = (why: 'deadline' | 'abort'): void => {
        if (killedFor) return;
        killedFor = why;
        child.kill('SIGKILL');
      };
      const timer = clock.setTimeout(() => kill('deadline'), deadlineMs);
      const onAbort = (): void => kill('abort');
      signal.addEventListener('abort', onAbort, { once: true });
      const finish = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clock.clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        fn();
      };
      child.once('error', (err) => finish(() => reject(new IpmiCallError('failed', `${where(host)}: cannot run ${ipmitool}: ${err.message}`, { command }))));
      child.once('close', (code, sig) => {
        const durationMs = Math.round(clock.monoMs() - started);
        finish(() => {
          const detail = { command, exitCode: code, signal: sig, durationMs };
          if (killedFor === 'deadline') {
            reject(new IpmiCallError('unreachable', `${where(host)}: no answer from the BMC within ${Math.round(deadlineMs / 100) / 10} s (${what} killed)`, detail));
          } else if (killedFor === 'abort') {
            reject(new IpmiCallError('failed', `${where(host)}: ${what} aborted (the agent is stopping)`, detail));
          } else if (code !== 0) {
            const text = errorText(stderr, stdout);
            reject(new IpmiCallError(UNREACHABLE_RE.test(text) ? 'unreachable' : 'failed', `${where(host)}: ${what} failed (exit ${String(code ?? sig)}): ${text}`, { ...detail, output: text }));
          } else {
            resolve(stdout);
          }
        });
      });
    });
  }

  const fail = (host: IpmiHostDef, started: number, err: unknown): HostOutcome => {
    const afterMs = Math.round(clock.monoMs() - started);
    if (err instanceof IpmiCallError) return { host: host.name, status: err.status, message: err.message, afterMs, detail: { via: 'ipmi', ...err.detail } };
    return { host: host.name, status: 'failed', message: `${where(host)}: ${(err as Error).message}`, afterMs, detail: { via: 'ipmi' } };
  };

  return {
    async shutdown(host, ctx, o) {
      const started = clock.monoMs();
      const callDeadlineMs = host.timeoutS * 1000;
      // A dry run never changes the power, whatever the caller asked.
      if (o.test || ctx.dryRun) {
        try {
          // Bounded by the acknowledgement deadline too: past it the coordinator has moved on (and
          // `actions test` exits), which must neither leave ipmitool running nor replace this host's
          // clear "no answer from the BMC" by a bare hostSyncS timeout.
          const state = parsePowerStatus(await call(host, 'status', Math.min(callDeadlineMs, o.ackTimeoutMs), o.signal));
          return {
            host: host.name,
            status: 'would-act',
            message: `${where(host)}: reachable, credentials valid, power is ${state}; would send chassis power soft`,
            afterMs: Math.round(clock.monoMs() - started),
            detail: { via: 'ipmi', powerState: state },
          };
        } catch (err) {
          return fail(host, started, err);
        }
      }
      try {
        // The coordinator waits ackTimeoutMs for the acknowledgement: the call must not outlive it.
        await call(host, 'soft', Math.min(callDeadlineMs, o.ackTimeoutMs), o.signal);
      } catch (err) {
        return fail(host, started, err);
      }
      logger.info({ host: host.name, incident: ctx.incident }, 'ipmi: chassis power soft accepted; polling the power state');
      void watchPowerOff({
        host: host.name,
        clock,
        logger,
        requestedAtMono: started,
        pollIntervalMs,
        forceOffAfterMs: host.forceOffAfterS * 1000,
        allowForceOff: host.allowForceOff,
        forceOffName: 'chassis power off',
        readPower: async () => parsePowerStatus(await call(host, 'status', callDeadlineMs, o.signal)),
        forceOff: async () => {
          await call(host, 'off', callDeadlineMs, o.signal);
        },
        signal: o.signal,
        onLater: o.onLater,
      }).catch((err: unknown) => logger.error({ host: host.name, err: (err as Error).message }, 'ipmi: power watch failed'));
      return {
        host: host.name,
        status: 'acknowledged',
        message: `${where(host)}: the BMC accepted chassis power soft`,
        afterMs: Math.round(clock.monoMs() - started),
        detail: { via: 'ipmi', command: 'soft' },
      };
    },
  };
}
