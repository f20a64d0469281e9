/**
 * A real influxd (1.x) for integration tests: config, meta/data/wal dirs in a temp dir, HTTP and RPC on
 * free loopback ports. stop()/restart() keep the ports and the data, for outage tests.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePorts } from './ports.js';
import { spawnAndWait, type SpawnedProcess } from './proc.js';
import { tempDir, type TempDir } from './tmp.js';

export const INFLUXD = '/usr/bin/influxd';

export interface Influxd {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  readonly process: SpawnedProcess;
  /** Runs an InfluxQL query (GET /query), returns the parsed JSON. */
  query(q: string, db?: string): Promise<InfluxQueryResult>;
  /** Writes raw line protocol (POST /write), returns the HTTP status. */
  writeLines(db: string, body: string, precision?: 'ms' | 'n'): Promise<{ status: number; text: string }>;
  stop(): Promise<void>;
  restart(): Promise<void>;
  cleanup(): Promise<void>;
}

export interface InfluxSeries {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values?: unknown[][];
}
export interface InfluxQueryResult {
  results: Array<{ statement_id: number; series?: InfluxSeries[]; error?: string }>;
  error?: string;
}

/** `auth`: authentication on, with an admin user `admin` / `auth` (the password given) created at start. */
export async function startInfluxd(opts: { auth?: string } = {}): Promise<Influxd> {
  const tmp: TempDir = await tempDir('rackguard-influxd-');
  let [httpPort, rpcPort] = (await freePorts(2)) as [number, number];
  for (const d of ['meta', 'data', 'wal']) mkdirSync(join(tmp.path, d));
  const conf = join(tmp.path, 'influxdb.conf');
  const writeConf = (): void => writeFileSync(
    conf,
    [
      'reporting-disabled = true',
      `bind-address = "127.0.0.1:${rpcPort}"`,
      '[meta]',
      `  dir = "${join(tmp.path, 'meta')}"`,
      '[data]',
      `  dir = "${join(tmp.path, 'data')}"`,
      `  wal-dir = "${join(tmp.path, 'wal')}"`,
      '  query-log-enabled = false',
      '[monitor]',
      '  store-enabled = false',
      '[http]',
      `  bind-address = "127.0.0.1:${httpPort}"`,
      '  log-enabled = false',
      ...(opts.auth !== undefined ? ['  auth-enabled = true'] : []),
      '[continuous_queries]',
      '  enabled = false',
      '',
    ].join('\n'),
  );
  writeConf();
  let url = `http://127.0.0.1:${httpPort}`;
  const launch = async (): Promise<SpawnedProcess> => {
    const p = await spawnAndWait(INFLUXD, ['-config', conf], { readyLine: /Listening on HTTP/, timeoutMs: 30_000 });
    // The line comes just before Serve(); /ping confirms requests are answered.
    const res = await fetch(`${url}/ping`);
    if (res.status !== 204) throw new Error(`influxd /ping answered ${res.status}`);
    if (opts.auth !== undefined) {
      // With no user yet, influxd takes this one request unauthenticated (the documented bootstrap).
      const q = new URLSearchParams({ q: `CREATE USER admin WITH PASSWORD '${opts.auth}' WITH ALL PRIVILEGES` });
      const made = await fetch(`${url}/query`, { method: 'POST', body: q });
      if (made.status !== 200 && made.status !== 401) throw new Error(`influxd: creating the admin user answered ${made.status}`);
    }
    return p;
  };
  // A free port can be taken by another test file between our probe and influxd's bind: try others.
  let proc: SpawnedProcess | undefined;
  for (let attempt = 1; !proc; attempt++) {
    try {
      proc = await launch();
    } catch (err) {
      if (attempt >= 5 || !/address already in use/.test((err as Error).message)) throw err;
      [httpPort, rpcPort] = (await freePorts(2)) as [number, number];
      url = `http://127.0.0.1:${httpPort}`;
      writeConf();
    }
  }
  return {
    port: httpPort,
    url,
    dir: tmp.path,
    get process() {
      return proc!;
    },
    async query(q, db) {
      const params = new URLSearchParams({ q, epoch: 'ms' });
      if (db) params.set('db', db);
      if (opts.auth !== undefined) {
        params.set('u', 'admin');
        params.set('p', opts.auth);
      }
      const res = await fetch(`${url}/query?${params.toString()}`, { method: 'POST' });
      return (await res.json()) as InfluxQueryResult;
    },
    async writeLines(db, body, precision = 'ms') {
      const res = await fetch(`${url}/write?db=${encodeURIComponent(db)}&precision=${precision}`, { method: 'POST', body });
      return { status: res.status, text: await res.text() };
    },
    async stop() {
      await proc!.stop('SIGTERM');
    },
    async restart() {
      await proc!.stop('SIGTERM');
      proc = await launch();
    },
    async cleanup() {
      await proc!.stop('SIGTERM');
      await tmp.cleanup();
    },
  };
}
