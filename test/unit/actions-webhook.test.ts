/**
 * The http action against a local Node http server on a free loopback port: Alertmanager v4 body,
 * a 500 retried then 200, the HMAC header verifying over the exact bytes received, a 4xx not retried,
 * a silent server timing out per attempt.
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { systemClock, VirtualClock } from '../../agent/clock.js';
import type { HttpActionDef } from '../../agent/config/actions-schema.js';
import { fingerprint, runWebhook, ZERO_TIME } from '../../agent/actions/webhook.js';
import type { ActionContext } from '../../agent/actions/types.js';

const dir = mkdtempSync(join(tmpdir(), 'rackguard-webhook-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const keyFile = join(dir, 'hmac.key');
writeFileSync(keyFile, 'a-long-shared-secret-for-the-receiver-0123\n');

interface Received {
  headers: IncomingMessage['headers'];
  body: Buffer;
}

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

/** A server answering each request with the next status of `answers` (the last one repeats); `null`: never answer. */
async function serve(answers: Array<number | null>): Promise<{ url: string; got: Received[] }> {
  const got: Received[] = [];
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({ headers: req.headers, body: Buffer.concat(chunks) });
      const status = answers[Math.min(got.length - 1, answers.length - 1)];
      if (status === null) return;
      res.writeHead(status!, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'boom');
    });
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server!.address() as AddressInfo).port}/hook`, got };
}

const ctx: ActionContext = { incident: 'row-a-1', zone: 'row-a', level: 'alarm', etaS: 300, reason: 'rising fast', ts: Date.UTC(2026, 10, 30, 1, 2, 3), dryRun: false };

function def(url: string, over: Partial<HttpActionDef> = {}): HttpActionDef {
  return { kind: 'http', name: 'pager', url, timeoutS: 5, retries: 3, retryInitialMs: 10, format: 'alertmanager', headers: {}, ...over };
}

describe('webhook action', () => {
  it('posts the Alertmanager v4 body; a 500 is retried, then 200 succeeds; the HMAC verifies over the bytes received', async () => {
    const { url, got } = await serve([500, 200]);
    const r = await runWebhook(def(url, { hmacSecretFile: keyFile }), ctx, { clock: systemClock, site: 'dc1', gateway: 'gw1', startsAtMs: ctx.ts - 60_000 });
    expect(r.status).toBe('succeeded');
    expect(r.detail).toMatchObject({ httpStatus: 200, attempts: 2 });
    // The path may be the secret (incoming-webhook URLs): records show the origin only.
    expect(r.detail.url).toBe(`${new URL(url).origin}/…`);
    expect(JSON.stringify(r)).not.toContain('/hook');
    expect(got).toHaveLength(2);
    for (const g of got) {
      const expected = `sha256=${createHmac('sha256', 'a-long-shared-secret-for-the-receiver-0123').update(g.body).digest('hex')}`;
      expect(g.headers['x-rackguard-signature']).toBe(expected);
      expect(g.headers['content-type']).toBe('application/json');
    }
    const body = JSON.parse(got[1]!.body.toString('utf8'));
    const labels = { alertname: 'RackguardCooling', zone: 'row-a', level: 'alarm', site: 'dc1', gateway: 'gw1', incident: 'row-a-1' };
    expect(body).toEqual({
      version: '4',
      groupKey: '{}:{incident="row-a-1", zone="row-a"}',
      truncatedAlerts: 0,
      status: 'firing',
      receiver: 'pager',
      groupLabels: { zone: 'row-a', incident: 'row-a-1' },
      commonLabels: labels,
      commonAnnotations: body.alerts[0].annotations,
      externalURL: '',
      alerts: [
        {
          status: 'firing',
          labels,
          annotations: { summary: 'dc1/gw1: zone row-a alarm', description: 'rising fast (ETA: 300 s to the critical temperature; incident row-a-1)' },
          startsAt: '2026-11-30T01:01:03.000Z',
          endsAt: ZERO_TIME,
          generatorURL: '',
          fingerprint: fingerprint(labels),
        },
      ],
    });
    // Stable: the same labels in another order give the same fingerprint; another level does not.
    expect(fingerprint({ ...labels })).toBe(fingerprint(Object.fromEntries(Object.entries(labels).reverse())));
    expect(fingerprint({ ...labels, level: 'critical' })).not.toBe(fingerprint(labels));
  });

  it('resolved (onClear): status resolved, endsAt set', async () => {
    const { url, got } = await serve([200]);
    const r = await runWebhook(def(url), ctx, { clock: systemClock, site: 'dc1', gateway: 'gw1', status: 'resolved' });
    expect(r.status).toBe('succeeded');
    const body = JSON.parse(got[0]!.body.toString('utf8'));
    expect(body.status).toBe('resolved');
    expect(body.alerts[0].endsAt).toBe('2026-11-30T01:02:03.000Z');
    expect(got[0]!.headers['x-rackguard-signature']).toBeUndefined();
  });

  it('a 4xx is not retried; retries end with a failure naming the last status', async () => {
    const a = await serve([400]);
    const r = await runWebhook(def(a.url), ctx, { clock: systemClock, site: 's', gateway: 'g' });
    expect(r.status).toBe('failed');
    expect(r.detail).toMatchObject({ httpStatus: 400, attempts: 1 });
    expect(a.got).toHaveLength(1);
    await new Promise<void>((res) => server!.close(() => res()));
    const b = await serve([503]);
    const r2 = await runWebhook(def(b.url, { retries: 2 }), ctx, { clock: systemClock, site: 's', gateway: 'g' });
    expect(r2.status).toBe('failed');
    expect(r2.detail).toMatchObject({ httpStatus: 503, attempts: 3 });
    expect(r2.message).toMatch(/HTTP 503: boom after 3 attempt/);
    expect(b.got).toHaveLength(3);
  });

  it('a server that never answers: each attempt times out, the result is timeout', async () => {
    // Virtual time: each deadline falls due once its request has reached the server. On real time a
    // loaded machine could reach a 0.2 s deadline before the POST did (then it never arrives at all).
    const { url, got } = await serve([null]);
    const clock = new VirtualClock();
    let result: Awaited<ReturnType<typeof runWebhook>> | undefined;
    void runWebhook(def(url, { timeoutS: 0.2, retries: 1 }), ctx, { clock, site: 's', gateway: 'g' }).then((r) => (result = r));
    await expect.poll(() => got.length, { timeout: 20_000, message: 'attempt 1 reaches the server' }).toBe(1);
    clock.advance(200); // attempt 1's deadline
    // The backoff before the retry is scheduled once the aborted fetch has settled.
    await expect.poll(() => clock.pendingTimers(), { timeout: 20_000, message: 'attempt 1 ends at its deadline and a retry is scheduled' }).toBe(1);
    clock.advance(10); // retryInitialMs
    await expect.poll(() => got.length, { timeout: 20_000, message: 'attempt 2 reaches the server' }).toBe(2);
    clock.advance(200); // attempt 2's deadline
    await expect.poll(() => result, { timeout: 20_000, message: 'attempt 2 ends at its deadline' }).toBeDefined();
    const r = result!;
    expect(r.status).toBe('timeout');
    expect(r.message).toMatch(/no answer within 0.2 s after 2 attempt/);
    expect(got).toHaveLength(2);
  });

  it('a 200 whose body never ends succeeds at once, without downloading it', async () => {
    let written = 0;
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        // An endless body: 64 KiB whenever the socket drains, until the client goes away.
        const chunk = Buffer.alloc(65_536, 'x');
        const pump = (): void => {
          while (!res.destroyed && res.write(chunk)) written += chunk.length;
        };
        res.on('drain', pump);
        pump();
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    const closed = new Promise<void>((r) => server!.once('connection', (sock) => sock.once('close', () => r())));
    const r = await runWebhook(def(url, { timeoutS: 30, retries: 0 }), ctx, { clock: systemClock, site: 's', gateway: 'g' });
    expect(r.status).toBe('succeeded');
    expect(r.detail).toMatchObject({ httpStatus: 200, attempts: 1 });
    await closed; // the client dropped the connection instead of downloading the rest
    expect(written).toBeLessThan(64 * 1024 * 1024);
  });

  it('a 200 whose body is held open (headers sent, no byte more) succeeds once: no timeout, no second POST', async () => {
    let posts = 0;
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      req.resume();
      req.on('end', () => {
        posts++;
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' });
        res.flushHeaders(); // and never the 100 bytes
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    // The deadline is wide for a loaded machine (the headers must beat it); a client waiting for the
    // body would still run into it, time out and POST again.
    const r = await runWebhook(def(url, { timeoutS: 5, retries: 2 }), ctx, { clock: systemClock, site: 's', gateway: 'g' });
    expect(r.status).toBe('succeeded');
    expect(r.detail).toMatchObject({ httpStatus: 200, attempts: 1 });
    expect(posts).toBe(1);
  });

  it('a refused connection is retried and fails with the network error', async () => {
    const { url } = await serve([200]);
    await new Promise<void>((res) => server!.close(() => res()));
    server = undefined;
    const r = await runWebhook(def(url, { retries: 1 }), ctx, { clock: systemClock, site: 's', gateway: 'g' });
    expect(r.status).toBe('failed');
    expect(r.detail).toMatchObject({ attempts: 2 });
    expect(r.message).toMatch(/ECONNREFUSED/);
  });
});
