/**
 * The local HTTP endpoint (issue 10): /healthz, /readyz, /metrics, /api/state, /api/events, the SSE
 * stream /api/events/stream and the status page at /. Node's own http server: a handful of GET routes
 * do not need a framework, and every dependency is RSS on a Raspberry Pi.
 *
 * Monitoring never depends on it: a port that cannot be bound (in use, address not on this host) is
 * logged as an error naming the address and port, and retried with backoff while the agent goes on
 * polling and alarming; /readyz is then simply not reachable. Only an unreadable or empty token file
 * fails start(), as a bad config would (the loader has already checked that the file exists).
 *
 * With `tokenFile` set, every request must carry the token: `Authorization: Bearer <token>`, or
 * `?token=<token>` (EventSource cannot set headers, so the page passes it on in the query string).
 * Compared in constant time. The token is never logged (request paths are logged without the query).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Backoff } from '../acquisition/backoff.js';
import type { Clock, TimerHandle } from '../clock.js';
import type { Component } from '../component.js';
import type { Config } from '../config/model.js';
import { RackguardError } from '../errors.js';
import { packageRoot } from '../paths.js';
import { createMetrics, type Metrics } from './metrics.js';
import { actionEventJson, buildState, detectorEventJson, deviceStateEventJson, EventLog, SensorHistory, type AgentView, type EventJson, type StateJson } from './state.js';
import { statusPageHtml } from './status-page.js';

export interface HttpServerDeps {
  view: AgentView;
  /** Temperature points of the zones: their recent values are kept for the page's sparklines. */
  sensorPoints: Iterable<string>;
  clock: Clock;
  logger: Logger;
}

/** SSE: a state message at most this often, and only when something changed. */
const STATE_PUSH_INTERVAL_MS = 1000;
/** SSE: a comment line this often, so that proxies and browsers keep an idle stream open. */
const PING_INTERVAL_MS = 15_000;
/** An SSE client that stops reading is dropped once this much waits in its socket buffer. */
const SSE_MAX_BUFFERED_BYTES = 1024 * 1024;
/** Beyond this many SSE clients a new one gets 503: each costs a socket and a JSON encoding per second. */
const SSE_MAX_CLIENTS = 32;
/** Bind retries: 1 s doubling to 60 s. */
const BIND_RETRY_INITIAL_MS = 1000;
const BIND_RETRY_MAX_MS = 60_000;

const COMMON_HEADERS = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' } as const;
/** The page is one file with inline CSS, JS and SVG: nothing may come from elsewhere. */
const PAGE_CSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

interface SseClient {
  res: ServerResponse;
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** `http://127.0.0.1:9108/`, `http://[::1]:9108/`. */
export function urlOf(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
}

export class HttpServer implements Component {
  readonly name = 'http';
  private server: Server | undefined;
  private running = false;
  private tokenDigest: Buffer | undefined;
  private metrics: Metrics | undefined;
  private version = '';
  private readonly history: SensorHistory;
  private readonly events: EventLog;
  private readonly clients = new Set<SseClient>();
  private unsubscribe: (() => void) | undefined;
  private dirty = false;
  private pushTimer: TimerHandle | undefined;
  private pingTimer: TimerHandle | undefined;
  private retryTimer: TimerHandle | undefined;
  private readonly backoff = new Backoff(BIND_RETRY_INITIAL_MS, BIND_RETRY_MAX_MS);
  private boundPort: number | undefined;

  constructor(
    private readonly config: NonNullable<Config['http']>,
    private readonly deps: HttpServerDeps,
  ) {
    this.history = new SensorHistory(deps.sensorPoints);
    this.events = new EventLog(config.recentEvents);
  }

  /** The port listened on (the real one when configured as 0); undefined while not listening. */
  get port(): number | undefined {
    return this.boundPort;
  }

  get url(): string | undefined {
    return this.boundPort === undefined ? undefined : urlOf(this.config.bind, this.boundPort);
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.tokenDigest = this.config.tokenFile === undefined ? undefined : digest(readToken(this.config.tokenFile));
    this.version ||= packageVersion();
    this.metrics ??= createMetrics(this.deps.view, { version: this.version, sseClients: () => this.clients.size });
    this.running = true;
    this.backoff.reset();
    this.unsubscribe = this.deps.view.subscribe({
      samples: (samples) => {
        this.history.add(samples);
        this.dirty = true;
      },
      detection: (e) => this.addEvent(detectorEventJson(e)),
      deviceState: (h, prev) => this.addEvent(deviceStateEventJson(h, prev, this.deps.clock.wallMs())),
      response: (deviceId, busId, ms) => this.metrics?.observeLatency(deviceId, busId, ms),
      action: (e) => {
        this.metrics?.countAction(e.action, e.status);
        this.addEvent(actionEventJson(e));
      },
    });
    await this.listen();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    const { clock } = this.deps;
    for (const t of [this.pushTimer, this.pingTimer, this.retryTimer]) clock.clearTimeout(t);
    this.pushTimer = this.pingTimer = this.retryTimer = undefined;
    for (const c of this.clients) c.res.end();
    this.clients.clear();
    const server = this.server;
    this.server = undefined;
    this.boundPort = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Keep-alive sockets would hold close() open until they time out.
      server.closeAllConnections();
    });
  }

  /** One attempt; on failure, logs and schedules the next. Resolves either way. */
  private listen(): Promise<void> {
    const { bind, port } = this.config;
    const server = createServer((req, res) => this.handle(req, res));
    // A slow or idle client must not hold a socket for ever (SSE responses are exempt: they write).
    server.requestTimeout = 30_000;
    server.headersTimeout = 10_000;
    return new Promise<void>((resolve) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        server.off('listening', onListening);
        server.close();
        if (!this.running) return resolve();
        const delay = this.backoff.next();
        const e = new RackguardError('E_HTTP_BIND', `http: cannot listen on ${bind}:${port}: ${err.code ?? err.message}`, { cause: err, retryable: true });
        this.deps.logger.error(
          { err: e.message, code: err.code, bind, port, retryInMs: delay },
          `${e.message}; status endpoint unavailable, retrying in ${Math.round(delay / 1000)} s (monitoring goes on)`,
        );
        this.retryTimer = this.deps.clock.setTimeout(() => {
          this.retryTimer = undefined;
          if (this.running) void this.listen();
        }, delay);
        resolve();
      };
      const onListening = (): void => {
        server.off('error', onError);
        if (!this.running) {
          server.close();
          return resolve();
        }
        this.server = server;
        this.boundPort = (server.address() as AddressInfo).port;
        this.backoff.reset();
        server.on('error', (err) => this.deps.logger.error({ err }, 'http server error'));
        this.deps.logger.info({ url: this.url, bind, port: this.boundPort, token: this.tokenDigest !== undefined }, `status page and metrics on ${this.url}`);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen({ host: bind, port, exclusive: true });
    });
  }

  private addEvent(e: Omit<EventJson, 'seq'>): void {
    const full = this.events.push(e);
    this.dirty = true;
    const msg = `id: ${full.seq}\nevent: event\ndata: ${JSON.stringify(full)}\n\n`;
    for (const c of this.clients) this.send(c, msg);
  }

  state(): StateJson {
    const { view, clock } = this.deps;
    return buildState({
      site: view.site,
      gateway: view.gateway,
      version: this.version,
      zones: view.zones(),
      health: view.health(),
      outputs: view.outputsStats(),
      ready: view.readiness().ready,
      history: this.history,
      wallMs: clock.wallMs(),
      monoMs: clock.monoMs(),
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      return this.reply(res, 400, { error: 'bad request line' });
    }
    if (this.tokenDigest && !this.authorized(req, url)) {
      res.setHeader('www-authenticate', 'Bearer realm="rackguard"');
      return this.reply(res, 401, { error: 'token required: Authorization: Bearer <token> or ?token=' });
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return this.reply(res, 405, { error: `${req.method} not allowed` });
    }
    try {
      switch (url.pathname) {
        case '/healthz':
          return this.reply(res, 200, { status: 'ok' });
        case '/readyz': {
          const r = this.deps.view.readiness();
          return this.reply(res, r.ready ? 200 : 503, r.ready ? { ready: true } : { ready: false, reasons: r.reasons });
        }
        case '/metrics':
          return void this.metricsReply(res);
        case '/api/state':
          return this.reply(res, 200, this.state());
        case '/api/events':
          return this.reply(res, 200, this.events.all());
        case '/api/events/stream':
          return this.openStream(req, res);
        case '/':
        case '/index.html':
          res.writeHead(200, { ...COMMON_HEADERS, 'content-type': 'text/html; charset=utf-8', 'content-security-policy': PAGE_CSP });
          return void res.end(statusPageHtml());
        default:
          return this.reply(res, 404, { error: `no such path: ${url.pathname}` });
      }
    } catch (err) {
      this.deps.logger.error({ err, path: url.pathname }, 'http request failed');
      if (!res.headersSent) this.reply(res, 500, { error: 'internal error' });
      else res.destroy();
    }
  }

  private async metricsReply(res: ServerResponse): Promise<void> {
    try {
      const body = await this.metrics!.render();
      res.writeHead(200, { ...COMMON_HEADERS, 'content-type': this.metrics!.contentType });
      res.end(body);
    } catch (err) {
      this.deps.logger.error({ err }, 'metrics rendering failed');
      this.reply(res, 500, { error: 'metrics unavailable' });
    }
  }

  private authorized(req: IncomingMessage, url: URL): boolean {
    const header = req.headers.authorization;
    const m = header === undefined ? null : /^Bearer\s+(.+)$/i.exec(header.trim());
    const given = m ? m[1]! : url.searchParams.get('token');
    if (given === null) return false;
    // Equal-length digests: timingSafeEqual neither leaks the token's length nor throws on a mismatch.
    return timingSafeEqual(digest(given), this.tokenDigest!);
  }

  private reply(res: ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { ...COMMON_HEADERS, 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify(body));
  }

  private openStream(req: IncomingMessage, res: ServerResponse): void {
    if (this.clients.size >= SSE_MAX_CLIENTS) return this.reply(res, 503, { error: `too many stream clients (${SSE_MAX_CLIENTS})` });
    res.writeHead(200, { ...COMMON_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    if (req.method === 'HEAD') return void res.end();
    req.socket.setTimeout(0);
    req.socket.setNoDelay(true);
    const client: SseClient = { res };
    this.clients.add(client);
    const drop = (): void => {
      this.clients.delete(client);
      if (this.clients.size === 0) this.stopTimers();
    };
    res.on('close', drop);
    let msg = `retry: 3000\n\nevent: state\ndata: ${JSON.stringify(this.state())}\n\n`;
    // A reconnecting EventSource sends the id of the last event it saw: it gets what it missed.
    const last = Number(req.headers['last-event-id']);
    if (Number.isInteger(last) && last >= 0) for (const e of this.events.after(last)) msg += `id: ${e.seq}\nevent: event\ndata: ${JSON.stringify(e)}\n\n`;
    this.send(client, msg);
    this.startTimers();
  }

  private send(c: SseClient, msg: string): void {
    if (c.res.writableEnded || c.res.destroyed) return;
    c.res.write(msg);
    if (c.res.writableLength > SSE_MAX_BUFFERED_BYTES) {
      this.deps.logger.warn({ bufferedBytes: c.res.writableLength }, 'SSE client does not read: dropped');
      c.res.destroy();
    }
  }

  private startTimers(): void {
    const { clock } = this.deps;
    if (this.pushTimer === undefined) {
      const push = (): void => {
        this.pushTimer = clock.setTimeout(() => {
          if (this.dirty && this.clients.size > 0) {
            this.dirty = false;
            const msg = `event: state\ndata: ${JSON.stringify(this.state())}\n\n`;
            for (const c of this.clients) this.send(c, msg);
          }
          push();
        }, STATE_PUSH_INTERVAL_MS);
      };
      push();
    }
    if (this.pingTimer === undefined) {
      const ping = (): void => {
        this.pingTimer = clock.setTimeout(() => {
          for (const c of this.clients) this.send(c, ': ping\n\n');
          ping();
        }, PING_INTERVAL_MS);
      };
      ping();
    }
  }

  private stopTimers(): void {
    this.deps.clock.clearTimeout(this.pushTimer);
    this.deps.clock.clearTimeout(this.pingTimer);
    this.pushTimer = this.pingTimer = undefined;
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** The token file's content without surrounding whitespace (a trailing newline is usual); never logged. */
function readToken(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RackguardError('E_SECRET_READ', `http.tokenFile: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  const token = text.trim();
  if (token === '') throw new RackguardError('E_SECRET_READ', `http.tokenFile: ${file} is empty`);
  return token;
}
