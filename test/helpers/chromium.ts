/**
 * Headless Chromium (Debian `chromium`) driven over the DevTools protocol, for tests of the status page.
 *
 * The browser listens on a port it picks itself (`--remote-debugging-port=0`) and prints its WebSocket
 * URL on stderr; we talk to it over one WebSocket (the `ws` package: Node 20 has no global WebSocket
 * without a flag) with flattened sessions, one per page. Each browser gets a fresh profile in a temp dir
 * and every background network feature is off: the tests run on loopback only.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import WebSocket from 'ws';
import { spawnAndWait, type SpawnedProcess } from './proc.js';
import { tempDir, type TempDir } from './tmp.js';

export const CHROMIUM_PATH = process.env.RACKGUARD_CHROMIUM ?? '/usr/bin/chromium';

interface Pending {
  method: string;
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
}

/** A browser message the page produced: console output or an uncaught exception. */
export interface PageMessage {
  kind: 'console' | 'exception';
  text: string;
}

export interface Page {
  /** Navigates and resolves once the load event fired. */
  goto(url: string, timeoutMs?: number): Promise<void>;
  /** Evaluates `expression` in the page (promises awaited) and returns its JSON value; throws on a page exception. */
  evaluate<T>(expression: string): Promise<T>;
  /**
   * Re-evaluates `expression` every `intervalMs` (default 100) until it returns something neither
   * undefined, null nor false, and returns that. The page's DOM has no event a test can await from
   * outside, so this is a bounded poll; its failure names `what` and the last value seen.
   */
  waitFor<T>(expression: string, timeoutMs: number, what: string, intervalMs?: number): Promise<T>;
  /** Sets the viewport (CSS pixels), e.g. a laptop 1366×900 or a phone 390×844 at deviceScaleFactor 2. */
  viewport(width: number, height: number, deviceScaleFactor?: number, mobile?: boolean): Promise<void>;
  /** Writes a PNG of the page (the full page when `fullPage`) to `path`, creating its directory. */
  screenshot(path: string, fullPage?: boolean): Promise<void>;
  /** Console lines and uncaught exceptions so far. */
  readonly messages: PageMessage[];
}

export interface Chromium {
  newPage(): Promise<Page>;
  /** Closes the browser, stops the process and removes its profile. Safe to call twice. */
  stop(): Promise<void>;
}

export async function startChromium(opts: { timeoutMs?: number } = {}): Promise<Chromium> {
  const profile: TempDir = await tempDir('rackguard-chromium-');
  let proc: SpawnedProcess;
  try {
    proc = await spawnAndWait(
      CHROMIUM_PATH,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--no-default-browser-check',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-extensions',
        '--mute-audio',
        '--remote-debugging-address=127.0.0.1',
        '--remote-debugging-port=0',
        `--user-data-dir=${profile.path}`,
        'about:blank',
      ],
      { readyLine: /DevTools listening on ws:\/\//, timeoutMs: opts.timeoutMs ?? 30_000, killGraceMs: 3000 },
    );
  } catch (err) {
    await profile.cleanup();
    throw err;
  }
  const wsUrl = /DevTools listening on (ws:\/\/\S+)/.exec(proc.readyLine)![1]!;
  const socket = new WebSocket(wsUrl, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
  } catch (err) {
    await proc.stop('SIGKILL');
    await profile.cleanup();
    throw new Error(`cannot connect to Chromium's DevTools at ${wsUrl}: ${(err as Error).message}`);
  }

  let nextId = 1;
  const pending = new Map<number, Pending>();
  const sessionListeners = new Map<string, (method: string, params: Record<string, unknown>) => void>();
  let closedError: Error | undefined;

  socket.on('message', (data) => {
    const msg = JSON.parse(String(data)) as {
      id?: number;
      result?: Record<string, unknown>;
      error?: { message: string; data?: string };
      method?: string;
      params?: Record<string, unknown>;
      sessionId?: string;
    };
    if (msg.id !== undefined) {
      const p = pending.get(msg.id);
      if (!p) return;
      pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`CDP ${p.method}: ${msg.error.message}${msg.error.data ? ` (${msg.error.data})` : ''}`));
      else p.resolve(msg.result ?? {});
    } else if (msg.method && msg.sessionId) {
      sessionListeners.get(msg.sessionId)?.(msg.method, msg.params ?? {});
    }
  });
  socket.on('close', () => {
    closedError = new Error('the DevTools connection to Chromium closed');
    for (const p of pending.values()) p.reject(closedError);
    pending.clear();
  });

  function send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> {
    if (closedError) return Promise.reject(closedError);
    const id = nextId++;
    return new Promise((resolve, reject) => {
      pending.set(id, { method, resolve, reject });
      socket.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  async function newPage(): Promise<Page> {
    const { targetId } = (await send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
    const { sessionId } = (await send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
    const messages: PageMessage[] = [];
    const loadWaiters = new Set<() => void>();
    sessionListeners.set(sessionId, (method, params) => {
      if (method === 'Page.loadEventFired') for (const w of loadWaiters) w();
      else if (method === 'Runtime.consoleAPICalled') {
        const args = (params.args as Array<{ value?: unknown; description?: string }>) ?? [];
        messages.push({ kind: 'console', text: `${String(params.type)}: ${args.map((a) => (a.value !== undefined ? String(a.value) : a.description ?? '')).join(' ')}` });
      } else if (method === 'Runtime.exceptionThrown') {
        const d = params.exceptionDetails as { text: string; exception?: { description?: string } };
        messages.push({ kind: 'exception', text: d.exception?.description ?? d.text });
      }
    });
    const call = (method: string, params?: Record<string, unknown>) => send(method, params, sessionId);
    await call('Page.enable');
    await call('Runtime.enable');

    async function evaluate<T>(expression: string): Promise<T> {
      const r = (await call('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true })) as {
        result: { value?: T };
        exceptionDetails?: { text: string; exception?: { description?: string } };
      };
      if (r.exceptionDetails) throw new Error(`page threw evaluating ${expression}: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
      return r.result.value as T;
    }

    return {
      messages,
      async goto(url, timeoutMs = 15_000) {
        let timer: NodeJS.Timeout | undefined;
        let waiter: (() => void) | undefined;
        const loaded = new Promise<void>((resolve, reject) => {
          waiter = () => resolve();
          loadWaiters.add(waiter);
          timer = setTimeout(() => reject(new Error(`page ${url} did not load within ${timeoutMs} ms`)), timeoutMs);
        });
        try {
          const nav = (await call('Page.navigate', { url })) as { errorText?: string };
          if (nav.errorText) throw new Error(`navigating to ${url}: ${nav.errorText}`);
          await loaded;
        } finally {
          clearTimeout(timer);
          loadWaiters.delete(waiter!);
        }
      },
      evaluate,
      async waitFor<T>(expression: string, timeoutMs: number, what: string, intervalMs = 100): Promise<T> {
        const deadline = performance.now() + timeoutMs;
        let last: unknown;
        for (;;) {
          last = await evaluate<unknown>(expression);
          if (last !== undefined && last !== null && last !== false) return last as T;
          if (performance.now() > deadline) {
            const errors = messages.filter((m) => m.kind === 'exception').map((m) => m.text);
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last value ${JSON.stringify(last)})${errors.length ? `; page exceptions: ${errors.join(' | ')}` : ''}`);
          }
          await new Promise((r) => setTimeout(r, intervalMs));
        }
      },
      async viewport(width, height, deviceScaleFactor = 1, mobile = false) {
        await call('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor, mobile });
      },
      async screenshot(path, fullPage = true) {
        const r = (await call('Page.captureScreenshot', { format: 'png', captureBeyondViewport: fullPage })) as { data: string };
        await mkdir(dirname(path), { recursive: true });
        await writeFile(path, Buffer.from(r.data, 'base64'));
      },
    };
  }

  let stopped = false;
  return {
    newPage,
    async stop() {
      if (stopped) return;
      stopped = true;
      // Browser.close lets Chromium end its helper processes itself; a signal is the fallback.
      try {
        await Promise.race([send('Browser.close'), proc.exited, new Promise((r) => setTimeout(r, 3000))]);
      } catch {
        // the connection closed as the browser went away: expected
      }
      socket.terminate();
      await proc.stop('SIGTERM');
      await profile.cleanup();
    },
  };
}

/** Where tests keep screenshots: test-artifacts/ at the repository root (ignored by git). */
export const ARTIFACTS_DIR = join(import.meta.dirname, '..', '..', 'test-artifacts');
