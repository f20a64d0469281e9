/**
 * A Server-Sent Events reader over fetch, for tests: parses `event:`/`data:`/`id:` messages as they
 * arrive and lets a test await the first one that matches.
 */
export interface SseMessage {
  event: string;
  data: string;
  id?: string;
}

export class SseReader {
  readonly messages: SseMessage[] = [];
  /** Settles when the server ends the stream (or it fails). */
  readonly ended: Promise<void>;
  private waiters: Array<() => void> = [];
  private done = false;
  private readonly abort = new AbortController();

  private constructor(readonly response: Response) {
    this.ended = this.pump().finally(() => {
      this.done = true;
      this.notify();
    });
  }

  static async open(url: string, headers: Record<string, string> = {}): Promise<SseReader> {
    const ctl = new AbortController();
    const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: ctl.signal });
    const r = new SseReader(res);
    r.abort.signal.addEventListener('abort', () => ctl.abort());
    return r;
  }

  close(): void {
    this.abort.abort();
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private async pump(): Promise<void> {
    if (!this.response.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of this.response.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const msg: SseMessage = { event: 'message', data: '' };
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const c = line.indexOf(':');
            const field = c < 0 ? line : line.slice(0, c);
            const value = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
            if (field === 'event') msg.event = value;
            else if (field === 'data') data.push(value);
            else if (field === 'id') msg.id = value;
          }
          if (data.length === 0) continue;
          msg.data = data.join('\n');
          this.messages.push(msg);
          this.notify();
        }
      }
    } catch {
      // aborted by close(), or the connection dropped: `ended` settles either way
    }
  }

  /** The first message (already received or to come) for which `pred` holds. */
  async next(pred: (m: SseMessage) => boolean, timeoutMs: number, what: string): Promise<SseMessage> {
    const deadline = performance.now() + timeoutMs;
    let from = 0;
    for (;;) {
      for (; from < this.messages.length; from++) if (pred(this.messages[from]!)) return this.messages[from]!;
      if (this.done) throw new Error(`SSE stream ended while waiting for ${what}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${this.messages.length} messages: ${this.messages.slice(-3).map((m) => `${m.event} ${m.data.slice(0, 200)}`).join(' | ')}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}
