/**
 * A host's BMC over Redfish (issue 8; DMTF DSP0266): ComputerSystem.Reset with GracefulShutdown.
 *
 *   GET  /redfish/v1                    service root (readable without credentials): Systems, Sessions
 *   POST …/SessionService/Sessions      {UserName, Password} → X-Auth-Token + Location (auth: session)
 *   GET  /redfish/v1/Systems            the system: `systemId`, or the first member
 *   GET  the system                     Actions["#ComputerSystem.Reset"].target and
 *                                       ResetType@Redfish.AllowableValues (or its @Redfish.ActionInfo)
 *   POST target {"ResetType":"GracefulShutdown"}      2xx → acknowledged
 *   DELETE the session                  always, errors included: BMCs allow only a few sessions
 * Then PowerState is polled until "Off", or until forceOffAfterS, after which ForceOff is sent ONLY if
 * allowForceOff (bmc-power-watch). Test or dry run: reachable, credentials valid (session created and
 * deleted), GracefulShutdown allowed → would-act, nothing posted to the Reset action.
 *
 * Plain node http/https rather than fetch: a BMC's self-signed certificate needs a per-host CA (`ca`),
 * which fetch cannot take without the undici package.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readRegularFile } from '../config/read-file.js';
import type { RedfishHostDef } from '../config/actions-schema.js';
import { readBmcCredentials, type BmcCredentials } from './bmc-credentials.js';
import { watchPowerOff, type PowerState } from './bmc-power-watch.js';
import type { TransportDeps } from './transport-deps.js';
import type { HostOutcome, HostTransport } from './types.js';

export interface RedfishTransportOptions {
  /** PowerState polling interval after the GracefulShutdown, ms. Default 5000. */
  pollIntervalMs?: number;
}

const DEFAULT_POLL_INTERVAL_MS = 5000;
/** Redfish answers are small JSON documents; a BMC sending more is broken. */
const MAX_BODY_BYTES = 1024 * 1024;
const SERVICE_ROOT = '/redfish/v1';
const GRACEFUL = 'GracefulShutdown';
const FORCE_OFF = 'ForceOff';

type OutcomeStatus = 'failed' | 'unreachable' | 'timeout';

/** Why a Redfish exchange gave no usable answer; `status` is the outcome it maps to. */
export class RedfishError extends Error {
  constructor(
    readonly status: OutcomeStatus,
    message: string,
    readonly detail: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'RedfishError';
  }
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: unknown;
}

/** What a status code means here, for messages. */
function statusMeaning(code: number): string {
  if (code === 401) return 'credentials rejected';
  if (code === 403) return 'forbidden for this account';
  if (code === 404) return 'not found';
  if (code === 405) return 'method not allowed';
  if (code === 501) return 'not implemented by this BMC';
  if (code === 503) return 'service unavailable';
  return 'unexpected answer';
}

/** The Redfish error's own text: error.message or the first @Message.ExtendedInfo message. */
function redfishMessage(body: unknown): string | undefined {
  const e = (body as { error?: { message?: unknown; '@Message.ExtendedInfo'?: Array<{ Message?: unknown }> } } | undefined)?.error;
  const ext = e?.['@Message.ExtendedInfo']?.[0]?.Message;
  if (typeof ext === 'string' && ext !== '') return ext;
  return typeof e?.message === 'string' && e.message !== '' ? e.message : undefined;
}

const odataId = (v: unknown): string | undefined => {
  const id = (v as { '@odata.id'?: unknown } | undefined)?.['@odata.id'];
  return typeof id === 'string' && id.startsWith('/') ? id : undefined;
};

/** Maps a Redfish PowerState to ours: only "Off" is off ("PoweringOff" is still on). */
export function powerStateOf(system: unknown): PowerState {
  const s = (system as { PowerState?: unknown } | undefined)?.PowerState;
  if (s === 'Off') return 'off';
  if (typeof s === 'string') return 'on';
  return 'unknown';
}

/** One connection's worth of state: the base URL, the credentials, the session while one is open. */
class RedfishClient {
  private token: string | undefined;
  private sessionUri: string | undefined;
  private sessionsPath = `${SERVICE_ROOT}/SessionService/Sessions`;
  private readonly base: URL;
  private readonly ca: string | undefined;
  /** Monotonic ms after which no request may still be running (the acknowledgement deadline). */
  phaseDeadline = Infinity;

  constructor(
    private readonly host: RedfishHostDef,
    private readonly creds: BmcCredentials,
    private readonly deps: TransportDeps,
    private readonly signal: AbortSignal,
  ) {
    this.base = new URL(host.url);
    try {
      this.ca = host.ca !== undefined ? readRegularFile(host.ca, 1024 * 1024) : undefined;
    } catch (err) {
      throw new RedfishError('failed', `${this.where}: cannot read the ca file ${host.ca}: ${(err as Error).message}`);
    }
  }

  get where(): string {
    return `host ${this.host.name} (redfish ${this.base.origin})`;
  }

  /** One request with its deadline; non-2xx answers are RedfishErrors naming method, path, status. */
  async call(method: string, path: string, body?: unknown, opts: { auth?: boolean; ignoreDeadline?: boolean } = {}): Promise<Answer> {
    const a = await this.raw(method, path, body, opts);
    if (a.status < 200 || a.status > 299) {
      const text = redfishMessage(a.body);
      throw new RedfishError('failed', `${this.where}: ${method} ${path}: HTTP ${a.status} (${statusMeaning(a.status)})${text ? `: ${text}` : ''}`, { httpStatus: a.status, method, path });
    }
    return a;
  }

  private raw(method: string, path: string, body: unknown, opts: { auth?: boolean; ignoreDeadline?: boolean }): Promise<Answer> {
    const { clock } = this.deps;
    const perCall = this.host.timeoutS * 1000;
    const deadlineMs = opts.ignoreDeadline ? perCall : Math.min(perCall, this.phaseDeadline - clock.monoMs());
    const what = `${method} ${path}`;
    if (deadlineMs <= 0) return Promise.reject(new RedfishError('timeout', `${this.where}: no time left for ${what}`, { method, path }));
    const url = new URL(path, this.base);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { accept: 'application/json', 'OData-Version': '4.0' };
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    if (opts.auth !== false) {
      if (this.token !== undefined) headers['X-Auth-Token'] = this.token;
      else if (this.host.auth === 'basic') headers.authorization = `Basic ${Buffer.from(`${this.creds.username}:${this.creds.password}`).toString('base64')}`;
    }
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<Answer>((resolve, reject) => {
      // Settles exactly once, whichever comes first: the whole answer, an error, the deadline, an
      // abort, or the connection closing mid-answer (then neither 'end' nor a request error may come).
      let settled = false;
      let verdict: RedfishError | undefined;
      const req = send(url, { method, headers, ...(url.protocol === 'https:' && this.ca !== undefined ? { ca: this.ca } : {}) });
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clock.clearTimeout(timer);
        this.signal.removeEventListener('abort', onAbort);
        fn();
      };
      const fail = (e: RedfishError): void => {
        verdict ??= e;
        req.destroy(e);
        settle(() => reject(verdict));
      };
      const timer = clock.setTimeout(() => fail(new RedfishError('timeout', `${this.where}: no answer to ${what} within ${Math.round(deadlineMs / 100) / 10} s`, { method, path })), deadlineMs);
      const onAbort = (): void => fail(new RedfishError('failed', `${this.where}: ${what} aborted (the agent is stopping)`, { method, path }));
      if (!opts.ignoreDeadline) this.signal.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (settled) return;
        const unreachable = ['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ECONNRESET'].includes(err.code ?? '');
        const hint = /certificate|self.signed/i.test(err.message) ? ' (a self-signed BMC certificate needs `ca:`)' : '';
        settle(() => reject(new RedfishError(unreachable ? 'unreachable' : 'failed', `${this.where}: ${what}: ${err.code ?? err.message}${err.code && err.message !== err.code ? ` (${err.message})` : ''}${hint}`, { method, path })));
      });
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY_BYTES) fail(new RedfishError('failed', `${this.where}: ${what}: answer larger than ${MAX_BODY_BYTES} bytes`, { method, path }));
          else chunks.push(c);
        });
        res.on('error', () => undefined); // settled by 'close' below or by the verdict
        res.once('close', () => {
          if (!res.complete) settle(() => reject(verdict ?? new RedfishError('failed', `${this.where}: ${what}: the connection closed in the middle of the answer`, { method, path })));
        });
        res.once('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text === '' ? undefined : JSON.parse(text);
          } catch {
            parsed = undefined; // a non-JSON error page: the status code says enough
          }
          settle(() => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed }));
        });
      });
      req.end(payload);
    });
  }

  /** The service root; remembers where sessions are made. */
  async serviceRoot(): Promise<{ systems: string }> {
    const root = (await this.call('GET', SERVICE_ROOT, undefined, { auth: false })).body as { Systems?: unknown; Links?: { Sessions?: unknown } } | undefined;
    this.sessionsPath = odataId(root?.Links?.Sessions) ?? this.sessionsPath;
    return { systems: odataId(root?.Systems) ?? `${SERVICE_ROOT}/Systems` };
  }

  /** Opens a session when auth is 'session' (no-op for basic). */
  async login(): Promise<void> {
    if (this.host.auth !== 'session' || this.token !== undefined) return;
    const a = await this.call('POST', this.sessionsPath, { UserName: this.creds.username, Password: this.creds.password }, { auth: false });
    const token = a.headers['x-auth-token'];
    const location = typeof a.headers.location === 'string' ? a.headers.location : odataId(a.body);
    if (location !== undefined) this.sessionUri = new URL(location, this.base).pathname;
    if (typeof token !== 'string' || token === '') {
      throw new RedfishError('failed', `${this.where}: POST ${this.sessionsPath} answered ${a.status} without an X-Auth-Token`, { httpStatus: a.status });
    }
    this.token = token;
  }

  /** Deletes the session, if one is open; never throws (a failure is logged). */
  async logout(): Promise<void> {
    const uri = this.sessionUri;
    if (this.token === undefined) return;
    try {
      if (uri === undefined) throw new Error('the BMC gave no session Location to delete');
      await this.call('DELETE', uri, undefined, { ignoreDeadline: true });
    } catch (err) {
      this.deps.logger.warn({ host: this.host.name, err: (err as Error).message }, 'redfish: could not delete the session (it will time out on the BMC)');
    } finally {
      this.token = undefined;
      this.sessionUri = undefined;
    }
  }

  async get(path: string): Promise<unknown> {
    return (await this.call('GET', path)).body;
  }
}

interface ResetInfo {
  systemPath: string;
  target: string;
  /** Undefined when the BMC lists no allowable values (then every type is tried as asked). */
  allowed: string[] | undefined;
  power: PowerState;
}

/** Finds the system and its Reset action, with the allowable reset types. */
async function discover(c: RedfishClient, host: RedfishHostDef): Promise<ResetInfo> {
  const { systems } = await c.serviceRoot();
  await c.login();
  const coll = (await c.get(systems)) as { Members?: unknown[] } | undefined;
  const members = (coll?.Members ?? []).map(odataId).filter((m): m is string => m !== undefined);
  const systemPath = host.systemId !== undefined ? members.find((m) => m.replace(/\/+$/, '').split('/').pop() === host.systemId) : members[0];
  if (systemPath === undefined) {
    throw new RedfishError('failed', `${c.where}: ${host.systemId !== undefined ? `no system "${host.systemId}"` : 'no system'} in ${systems} (members: ${members.join(', ') || 'none'})`);
  }
  const system = await c.get(systemPath);
  const reset = (system as { Actions?: Record<string, unknown> } | undefined)?.Actions?.['#ComputerSystem.Reset'] as Record<string, unknown> | undefined;
  const target = typeof reset?.target === 'string' ? reset.target : undefined;
  if (target === undefined) throw new RedfishError('failed', `${c.where}: ${systemPath} has no #ComputerSystem.Reset action`);
  let allowed = Array.isArray(reset?.['ResetType@Redfish.AllowableValues']) ? (reset['ResetType@Redfish.AllowableValues'] as unknown[]).map(String) : undefined;
  const actionInfo = typeof reset?.['@Redfish.ActionInfo'] === 'string' ? reset['@Redfish.ActionInfo'] : undefined;
  if (allowed === undefined && actionInfo !== undefined) {
    const info = (await c.get(actionInfo)) as { Parameters?: Array<{ Name?: unknown; AllowableValues?: unknown }> } | undefined;
    const p = info?.Parameters?.find((x) => x.Name === 'ResetType');
    if (Array.isArray(p?.AllowableValues)) allowed = p.AllowableValues.map(String);
  }
  return { systemPath, target, allowed, power: powerStateOf(system) };
}

export function createRedfishTransport(deps: TransportDeps, opts: RedfishTransportOptions = {}): HostTransport<RedfishHostDef> {
  const { clock, logger } = deps;
  const pollIntervalMs = opts.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;

  const outcomeOf = (host: RedfishHostDef, started: number, err: unknown): HostOutcome => {
    const afterMs = Math.round(clock.monoMs() - started);
    if (err instanceof RedfishError) return { host: host.name, status: err.status, message: err.message, afterMs, detail: { via: 'redfish', ...err.detail } };
    return { host: host.name, status: 'failed', message: `host ${host.name} (redfish ${host.url}): ${(err as Error).message}`, afterMs, detail: { via: 'redfish' } };
  };

  return {
    async shutdown(host, ctx, o) {
      const started = clock.monoMs();
      const test = o.test || ctx.dryRun; // a dry run never changes the power, whatever the caller asked
      let client: RedfishClient;
      try {
        client = new RedfishClient(host, readBmcCredentials(host.name, host), deps, o.signal);
      } catch (err) {
        return outcomeOf(host, started, err);
      }
      client.phaseDeadline = started + o.ackTimeoutMs;
      let info: ResetInfo;
      try {
        info = await discover(client, host);
        if (info.allowed !== undefined && !info.allowed.includes(GRACEFUL)) {
          throw new RedfishError('failed', `${client.where}: ${GRACEFUL} is not allowed by the BMC (ResetType@Redfish.AllowableValues: ${info.allowed.join(', ') || 'none'})`, { allowable: info.allowed });
        }
        const afterMs = (): number => Math.round(clock.monoMs() - started);
        const base = { via: 'redfish', system: info.systemPath, allowable: info.allowed ?? null, powerState: info.power };
        if (test) {
          return { host: host.name, status: 'would-act', message: `${client.where}: reachable, credentials valid, ${GRACEFUL} allowed, power is ${info.power}; would send ${GRACEFUL}`, afterMs: afterMs(), detail: base };
        }
        if (info.power === 'off') {
          return { host: host.name, status: 'powered-off', message: `${client.where}: power is already off; nothing sent`, afterMs: afterMs(), detail: { ...base, forced: false } };
        }
        await client.call('POST', info.target, { ResetType: GRACEFUL });
      } catch (err) {
        return outcomeOf(host, started, err);
      } finally {
        await client.logout();
      }
      logger.info({ host: host.name, incident: ctx.incident }, 'redfish: GracefulShutdown accepted; polling PowerState');

      // Polling holds one session for its whole run (re-opened if the BMC expired it), deleted before
      // the final report goes out.
      void (async () => {
        let outcome: HostOutcome | undefined;
        let poller: RedfishClient | undefined;
        try {
          const p = (poller = new RedfishClient(host, readBmcCredentials(host.name, host), deps, o.signal));
          const withLogin = async <T>(fn: () => Promise<T>): Promise<T> => {
            await p.login();
            try {
              return await fn();
            } catch (err) {
              if (!(err instanceof RedfishError) || err.detail.httpStatus !== 401 || host.auth !== 'session') throw err;
              await p.logout(); // the session expired on the BMC: one new one
              await p.login();
              return fn();
            }
          };
          const { target, allowed, systemPath } = info;
          outcome = await watchPowerOff({
            host: host.name,
            clock,
            logger,
            requestedAtMono: started,
            pollIntervalMs,
            forceOffAfterMs: host.forceOffAfterS * 1000,
            allowForceOff: host.allowForceOff,
            forceOffName: FORCE_OFF,
            readPower: () => withLogin(async () => powerStateOf(await p.get(systemPath))),
            forceOff: async () => {
              if (allowed !== undefined && !allowed.includes(FORCE_OFF)) throw new Error(`${FORCE_OFF} is not allowed by the BMC (AllowableValues: ${allowed.join(', ')})`);
              await withLogin(() => p.call('POST', target, { ResetType: FORCE_OFF }));
            },
            signal: o.signal,
          });
        } catch (err) {
          if (!o.signal.aborted) outcome = outcomeOf(host, started, err);
        } finally {
          await poller?.logout();
        }
        if (outcome === undefined) return;
        try {
          o.onLater?.(outcome);
        } catch (err) {
          logger.error({ host: host.name, err: (err as Error).message }, 'onLater handler threw');
        }
      })();
      return {
        host: host.name,
        status: 'acknowledged',
        message: `${client.where}: the BMC accepted ${GRACEFUL}`,
        afterMs: Math.round(clock.monoMs() - started),
        detail: { via: 'redfish', system: info.systemPath },
      };
    },
  };
}
