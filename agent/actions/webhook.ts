/**
 * The `http` action: a webhook POST with a deadline per attempt, retries with backoff on network
 * errors, 5xx and 429, and an optional HMAC-SHA256 signature of the exact body bytes
 * (`X-Rackguard-Signature: sha256=<hex>`, as GitHub's `X-Hub-Signature-256`).
 *
 * The default body is Alertmanager's webhook format, version 4
 * (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config), so any receiver built
 * for Alertmanager (chat, paging, ticketing bridges) takes it as it is. One alert per request: the
 * zone's incident at one level.
 */
import { createHash, createHmac } from 'node:crypto';
import type { Clock, TimerHandle } from '../clock.js';
import type { HttpActionDef } from '../config/actions-schema.js';
import { readCredential } from '../outputs/context.js';
import type { ActionContext, ActionResult } from './types.js';

/** Alertmanager's "zero time": what endsAt says while an alert fires. */
export const ZERO_TIME = '0001-01-01T00:00:00Z';
/** Backoff between attempts never grows past this. */
const MAX_BACKOFF_MS = 60_000;
/** Bytes of the response body kept for the record. */
const RESPONSE_TAIL_BYTES = 1024;

export interface WebhookDeps {
  clock: Clock;
  site: string;
  gateway: string;
  /** Ends waiting (attempt or backoff) at once: the agent is stopping. */
  signal?: AbortSignal;
  /** 'resolved' for onClear hooks (the incident is over); default 'firing'. */
  status?: 'firing' | 'resolved';
  /** Wall ms the incident started (startsAt); default ctx.ts. */
  startsAtMs?: number;
  /** A link a receiver may show (the gateway's status page); default empty. */
  externalURL?: string;
  /** Extra fields of the 'event' format body. */
  extra?: Record<string, unknown>;
  /** The global fetch, or a test's. */
  fetch?: typeof fetch;
}

export interface AlertmanagerAlert {
  status: 'firing' | 'resolved';
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
  generatorURL: string;
  fingerprint: string;
}

export interface AlertmanagerBody {
  version: '4';
  groupKey: string;
  truncatedAlerts: number;
  status: 'firing' | 'resolved';
  receiver: string;
  groupLabels: Record<string, string>;
  commonLabels: Record<string, string>;
  commonAnnotations: Record<string, string>;
  externalURL: string;
  alerts: AlertmanagerAlert[];
}

/** A stable 16-hex-digit hash of the label set (sorted, so key order does not matter), as Alertmanager's fingerprint. */
export function fingerprint(labels: Record<string, string>): string {
  const h = createHash('sha256');
  for (const k of Object.keys(labels).sort()) h.update(`${k}\u0000${labels[k]}\u0000`);
  return h.digest('hex').slice(0, 16);
}

/** The Alertmanager v4 webhook body for one incident at one level. */
export function alertmanagerBody(def: Pick<HttpActionDef, 'name'>, ctx: ActionContext, deps: Pick<WebhookDeps, 'site' | 'gateway' | 'status' | 'startsAtMs' | 'externalURL'>): AlertmanagerBody {
  const status = deps.status ?? 'firing';
  const labels = { alertname: 'RackguardCooling', zone: ctx.zone, level: ctx.level, site: deps.site, gateway: deps.gateway, incident: ctx.incident };
  const eta = ctx.etaS === null ? 'not rising' : `${Math.round(ctx.etaS)} s to the critical temperature`;
  const annotations = {
    summary: status === 'firing' ? `${deps.site}/${deps.gateway}: zone ${ctx.zone} ${ctx.level}` : `${deps.site}/${deps.gateway}: zone ${ctx.zone} back to normal`,
    description: `${ctx.reason} (ETA: ${eta}; incident ${ctx.incident}${ctx.dryRun ? '; dry run' : ''})`,
  };
  const groupLabels = { zone: ctx.zone, incident: ctx.incident };
  const externalURL = deps.externalURL ?? '';
  return {
    version: '4',
    groupKey: `{}:{incident="${ctx.incident}", zone="${ctx.zone}"}`,
    truncatedAlerts: 0,
    status,
    receiver: def.name,
    groupLabels,
    commonLabels: labels,
    commonAnnotations: annotations,
    externalURL,
    alerts: [
      {
        status,
        labels,
        annotations,
        startsAt: new Date(deps.startsAtMs ?? ctx.ts).toISOString(),
        endsAt: status === 'firing' ? ZERO_TIME : new Date(ctx.ts).toISOString(),
        generatorURL: externalURL,
        fingerprint: fingerprint(labels),
      },
    ],
  };
}

/** `sha256=<hex>` of the body bytes under the key: what a receiver recomputes to trust the request. */
export function signBody(body: Buffer, key: string): string {
  return `sha256=${createHmac('sha256', key).update(body).digest('hex')}`;
}

/**
 * The URL as records and logs may show it: scheme, host and port only. Webhook paths and queries
 * often are the secret (a chat service's incoming-webhook URL is its own credential).
 */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    return u.pathname === '/' && u.search === '' ? u.origin : `${u.origin}/…`;
  } catch {
    return '(invalid URL)';
  }
}

function retryable(status: number): boolean {
  return status >= 500 || status === 429;
}

/** Resolves after ms on the injected clock, or at once when the signal aborts. */
function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    let t: TimerHandle | undefined = undefined;
    const onAbort = (): void => {
      clock.clearTimeout(t);
      resolve();
    };
    t = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Posts the webhook until a 2xx, a non-retryable answer, the last retry or the abort. Never throws:
 * every outcome is an ActionResult (httpStatus, attempts, the last error or response tail).
 */
/** The first `max` bytes of the response body, as text; the rest is cancelled, not downloaded. */
async function readHead(res: Response, max: number): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  try {
    while (n < max) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      n += value.byteLength;
    }
  } catch {
    // cut off (deadline, reset): what came is enough for the record
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).subarray(0, max).toString('utf8');
}

export async function runWebhook(def: HttpActionDef, ctx: ActionContext, deps: WebhookDeps): Promise<ActionResult> {
  const { clock } = deps;
  const started = clock.monoMs();
  const doFetch = deps.fetch ?? fetch;
  const result = (status: ActionResult['status'], message: string, detail: Record<string, unknown>): ActionResult => ({ status, message, durationMs: Math.round(clock.monoMs() - started), detail: { url: safeUrl(def.url), ...detail } });

  const payload =
    def.format === 'alertmanager'
      ? alertmanagerBody(def, ctx, deps)
      : { ...deps.extra, action: def.name, status: deps.status ?? 'firing', incident: ctx.incident, zone: ctx.zone, level: ctx.level, etaS: ctx.etaS, reason: ctx.reason, ts: new Date(ctx.ts).toISOString(), dryRun: ctx.dryRun };
  const body = Buffer.from(JSON.stringify(payload));
  const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'rackguard', ...def.headers };
  if (def.hmacSecretFile !== undefined) {
    let key: string | undefined;
    try {
      key = readCredential(def.hmacSecretFile, 'RACKGUARD_WEBHOOK_HMAC');
    } catch (err) {
      return result('failed', `${def.name}: ${(err as Error).message}`, { attempts: 0 });
    }
    if (!key) return result('failed', `${def.name}: the HMAC key file ${def.hmacSecretFile} is empty`, { attempts: 0 });
    headers['x-rackguard-signature'] = signBody(body, key);
  }

  let lastError = '';
  let lastStatus: number | null = null;
  let timedOut = false;
  const attempts = def.retries + 1;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (deps.signal?.aborted) return result('failed', `${def.name}: stopped (the agent is stopping) after ${attempt - 1} attempt(s)`, { attempts: attempt - 1, httpStatus: lastStatus });
    const ac = new AbortController();
    const timer = clock.setTimeout(() => ac.abort(new Error(`no answer within ${def.timeoutS} s`)), def.timeoutS * 1000);
    const onAbort = (): void => ac.abort(new Error('the agent is stopping'));
    deps.signal?.addEventListener('abort', onAbort, { once: true });
    timedOut = false;
    try {
      const res = await doFetch(def.url, { method: 'POST', headers, body, signal: ac.signal, redirect: 'manual' });
      lastStatus = res.status;
      if (res.status >= 200 && res.status < 300) {
        // The status is the verdict: the body is not waited for (a receiver that streams megabytes, or
        // holds its body open, must neither fill memory nor turn a 200 into a timeout and a second POST).
        void res.body?.cancel().catch(() => undefined);
        return result('succeeded', `${def.name}: HTTP ${res.status} after ${attempt} attempt(s)`, { httpStatus: res.status, attempts: attempt });
      }
      // A refusal: a bounded head of its body for the record, whatever of it comes before the deadline.
      const text = await readHead(res, RESPONSE_TAIL_BYTES);
      lastError = `HTTP ${res.status}${text ? `: ${text.split('\n')[0]!.slice(0, 200)}` : ''}`;
      if (!retryable(res.status)) return result('failed', `${def.name}: ${lastError} (not retried)`, { httpStatus: res.status, attempts: attempt, responseTail: text });
    } catch (err) {
      const reason = ac.signal.reason as Error | undefined;
      timedOut = ac.signal.aborted && !deps.signal?.aborted;
      lastError = ac.signal.aborted && reason ? reason.message : `${(err as Error).message}${(err as { cause?: { code?: string } }).cause?.code ? ` (${(err as { cause: { code: string } }).cause.code})` : ''}`;
    } finally {
      clock.clearTimeout(timer);
      deps.signal?.removeEventListener('abort', onAbort);
    }
    if (attempt < attempts) await sleep(clock, Math.min(MAX_BACKOFF_MS, def.retryInitialMs * 2 ** (attempt - 1)), deps.signal);
  }
  return result(timedOut ? 'timeout' : 'failed', `${def.name}: ${lastError} after ${attempts} attempt(s)`, { httpStatus: lastStatus, attempts, error: lastError });
}
