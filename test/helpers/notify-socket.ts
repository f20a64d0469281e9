/**
 * A fake systemd notification socket (NOTIFY_SOCKET) for tests: test/fixtures/notify_receiver.py binds
 * the AF_UNIX datagram socket (Node cannot) and prints each datagram as a JSON line; this collects
 * them with their arrival time and lets a test await one.
 */
import { join } from 'node:path';
import { spawnAndWait, type SpawnedProcess } from './proc.js';

const RECEIVER = join(import.meta.dirname, '..', 'fixtures', 'notify_receiver.py');

export interface Datagram {
  /** Arrival, performance.now() of the test process. */
  at: number;
  /** The assignments of the datagram, e.g. { READY: '1', STATUS: '…' }. */
  vars: Record<string, string>;
}

export interface NotifySocket {
  path: string;
  readonly datagrams: Datagram[];
  /** Resolves with the first datagram at index >= fromIndex for which pred holds. */
  waitFor(pred: (d: Datagram) => boolean, timeoutMs: number, fromIndex?: number, what?: string): Promise<Datagram>;
  stop(): Promise<void>;
}

export async function startNotifySocket(dir: string): Promise<NotifySocket> {
  const path = join(dir, 'notify.sock');
  const proc: SpawnedProcess = await spawnAndWait('/usr/bin/python3', [RECEIVER, path], { readyLine: /^listening$/, timeoutMs: 10_000 });
  const datagrams: Datagram[] = [];
  let waiters: Array<() => void> = [];
  let seen = 0;
  const collect = (): void => {
    for (; seen < proc.lines.length; seen++) {
      const line = proc.lines[seen]!;
      if (!line.startsWith('"')) continue;
      const vars: Record<string, string> = {};
      for (const a of (JSON.parse(line) as string).split('\n')) {
        const i = a.indexOf('=');
        if (i > 0) vars[a.slice(0, i)] = a.slice(i + 1);
      }
      datagrams.push({ at: performance.now(), vars });
    }
    for (const w of waiters) w();
  };
  proc.proc.stdout?.on('data', () => setImmediate(collect));
  return {
    path,
    datagrams,
    waitFor(pred, timeoutMs, fromIndex = 0, what = 'a datagram') {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          const d = datagrams.slice(fromIndex).find(pred);
          if (!d) return false;
          clearTimeout(timer);
          waiters = waiters.filter((w) => w !== waiter);
          resolve(d);
          return true;
        };
        const waiter = (): void => void check();
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== waiter);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got: ${JSON.stringify(datagrams.slice(-8).map((d) => d.vars))}`));
        }, timeoutMs);
        waiters.push(waiter);
        check();
      });
    },
    async stop() {
      await proc.stop('SIGTERM');
    },
  };
}
