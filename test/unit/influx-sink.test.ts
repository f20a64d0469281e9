/**
 * The InfluxDB sink through its seams, on virtual time: a local HTTP server on a loopback port plays
 * InfluxDB's faults (a write that never answers, a 404 for a missing database), the outbox is in memory.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { VirtualClock } from '../../agent/clock.js';
import { influxSchema } from '../../agent/config/outputs-schema.js';
import type { OutputContext } from '../../agent/outputs/context.js';
import { InfluxSink } from '../../agent/outputs/influx.js';
import type { OutboxEntry } from '../../agent/outputs/outbox.js';
import { settle } from '../helpers/fake-mqtt.js';
import { MemoryOutbox } from '../helpers/memory-outbox.js';

const logger = pino({ level: process.env.RACKGUARD_TEST_LOG ?? 'silent' });
const TS = Date.UTC(2026, 0, 1, 12);
const context: OutputContext = { site: 's1', gateway: 'g1', points: new Map(), zones: [] };

function sample(i: number): OutboxEntry {
  return { type: 'sample', sample: { pointId: 'r1.t', deviceId: 'r1', value: 20 + i, unit: '°C', quality: 'good', ts: TS + i * 1000, mono: i * 1000 } };
}

interface FakeInflux {
  url: string;
  requests: Array<{ path: string; body: string; res: ServerResponse }>;
  /** Resolves at the next request whose path starts with `prefix`. */
  next(prefix: string): Promise<{ path: string; body: string; res: ServerResponse }>;
  server: Server;
}

async function fakeInflux(handle: (path: string, body: string, res: ServerResponse) => void): Promise<FakeInflux> {
  const requests: FakeInflux['requests'] = [];
  const waiters: Array<{ prefix: string; resolve: (r: FakeInflux['requests'][number]) => void }> = [];
  const server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const r = { path: req.url ?? '', body, res };
      requests.push(r);
      for (const w of waiters.filter((x) => r.path.startsWith(x.prefix))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(r);
      }
      handle(r.path, body, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, requests, server, next: (prefix) => new Promise((resolve) => waiters.push({ prefix, resolve })) };
}

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

describe('InfluxDB sink seams (local HTTP server, virtual time)', () => {
  it('drain deadline: stop() returns at drainMs of virtual time although a write hangs, and acks nothing', async () => {
    const influx = await fakeInflux((path, _body, res) => {
      if (path.startsWith('/query')) res.writeHead(200, { 'content-type': 'application/json' }).end('{"results":[{"statement_id":0}]}');
      // /write: never answered
    });
    servers.push(influx.server);
    const clock = new VirtualClock({ startWallMs: TS });
    const outbox = new MemoryOutbox();
    const sink = new InfluxSink(influxSchema.parse({ url: influx.url, database: 'rg', flushIntervalMs: 100, requestTimeoutMs: 60_000 }), { outbox, context, logger, clock, startAt: 'beginning', drainMs: 500 });
    await sink.start();
    const write = influx.next('/write');
    outbox.append([sample(1), sample(2)]);
    await settle();
    clock.advance(100); // the partial batch waits flushIntervalMs
    const req = await write;
    expect(req.body.split('\n')).toHaveLength(2);
    let stopped = false;
    const stopping = sink.stop().then(() => (stopped = true));
    await settle();
    clock.advance(499);
    await settle();
    expect(stopped).toBe(false);
    clock.advance(1);
    await stopping;
    expect(sink.stats().state).toBe('stopped');
    // The write was abandoned, not acknowledged: the records stay for the next start.
    expect(outbox.acks).toEqual([]);
    // Answering it now changes nothing: once the sink has read the 204 (it counts the points written),
    // the records are still not acknowledged.
    req.res.writeHead(204).end();
    await expect.poll(() => sink.stats().pointsWritten, { timeout: 15_000, interval: 5 }).toBe(2);
    await settle();
    expect(outbox.acks).toEqual([]);
  });

  it('404 database not found: the sink creates the database again, then writes the same batch', async () => {
    let dropped = true;
    const influx = await fakeInflux((path, _body, res) => {
      if (path.startsWith('/query')) {
        dropped = false;
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"results":[{"statement_id":0}]}');
      } else if (dropped) res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"database not found: \\"rg\\""}');
      else res.writeHead(204).end();
    });
    servers.push(influx.server);
    const clock = new VirtualClock({ startWallMs: TS });
    const outbox = new MemoryOutbox();
    const sink = new InfluxSink(influxSchema.parse({ url: influx.url, database: 'rg', flushIntervalMs: 100, retryInitialMs: 200 }), { outbox, context, logger, clock, startAt: 'beginning' });
    await sink.start();
    // First batch: CREATE DATABASE, write.
    let write = influx.next('/write');
    outbox.append([sample(1)]);
    await settle();
    clock.advance(100);
    await write;
    // The 204 travels back over the loopback socket: wait for the ack it causes.
    await expect.poll(() => outbox.cursorOf('influx'), { timeout: 15_000, interval: 5 }).toBe(1);
    // Someone drops the database: the next write gets a 404.
    dropped = true;
    const failing = influx.next('/write');
    outbox.append([sample(2)]);
    await settle();
    clock.advance(100);
    await failing;
    // The 404 travels back over the loopback socket: wait for the backoff it causes, then look.
    await expect.poll(() => sink.stats().state, { timeout: 15_000, interval: 5 }).toBe('backoff');
    expect(outbox.cursorOf('influx')).toBe(1);
    expect(sink.stats().lastError).toMatch(/database not found/);
    // After the backoff: CREATE DATABASE again, then the same record is written.
    const created = influx.next('/query');
    write = influx.next('/write');
    clock.advance(200);
    expect((await created).path).toMatch(/CREATE\+DATABASE|CREATE%20DATABASE/i);
    expect((await write).body).toContain('value=22');
    await expect.poll(() => outbox.cursorOf('influx'), { timeout: 15_000, interval: 5 }).toBe(2);
    await sink.stop();
  });
});
