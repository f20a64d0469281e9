/**
 * The cost of the local HTTP endpoint (issue 10): `rackguard run` on the reference rack, as in the
 * agent suite, with and without `http:`. With it on, a Prometheus-like scraper fetches /metrics every
 * 15 s and one status page stays open on the SSE stream for the whole window, as on a gateway that
 * a Prometheus server scrapes while an engineer watches. Then, after the window, 200 scrapes one after
 * the other time /metrics itself (observability.metrics_scrape_ms, from request to the last byte).
 * A third run is the service as installed: outputs, HTTP and the unit's node flags.
 */
import { measureAgent, UNIT_NODE_FLAGS, type RunningAgent } from './agent.js';
import type { Figures } from '../results.js';

const SCRAPE_EVERY_MS = 15_000;
const TIMED_SCRAPES = 200;

async function scrape(url: string): Promise<{ ms: number; bytes: number; samples: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}metrics`);
  const text = await res.text();
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`GET /metrics: HTTP ${res.status}`);
  return { ms, bytes: Buffer.byteLength(text), samples: text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length };
}

/** A Prometheus scraper and an open status page (SSE), until the window ends. */
async function watchers(ctx: RunningAgent, stop: AbortSignal): Promise<void> {
  const url = ctx.url!;
  const page = fetch(`${url}api/events/stream`, { signal: stop }).then(
    async (res) => {
      // Read the stream as a browser does, so its events are produced and sent.
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) void chunk;
    },
    () => undefined,
  );
  while (!stop.aborted) {
    // A failed scrape is a figure's problem, not the bench's: the timed scrapes after the window report it.
    await scrape(url).catch((err: unknown) => process.stderr.write(`observability: scrape during the window failed: ${String(err)}\n`));
    await new Promise<void>((r) => {
      const t = setTimeout(r, SCRAPE_EVERY_MS);
      stop.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
    });
  }
  await page.catch(() => undefined);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function run(): Promise<Figures> {
  const base = await measureAgent({ outputs: false, nodeFlags: [] });
  const times: number[] = [];
  let last = { bytes: 0, samples: 0 };
  const withHttp = await measureAgent({
    outputs: false,
    http: true,
    nodeFlags: [],
    during: watchers,
    after: async (ctx) => {
      for (let i = 0; i < TIMED_SCRAPES; i++) {
        const s = await scrape(ctx.url!);
        times.push(s.ms);
        last = s;
      }
    },
  });
  const service = await measureAgent({ outputs: true, http: true, nodeFlags: UNIT_NODE_FLAGS, during: watchers });
  times.sort((a, b) => a - b);
  const round = (n: number): number => Math.round(n * 10) / 10;
  return {
    metrics_scrape_ms: round(percentile(times, 50)),
    metrics_scrape_p99_ms: round(percentile(times, 99)),
    metrics_bytes: last.bytes,
    metrics_samples: last.samples,
    rss_mb_with_http: withHttp.rssMb,
    rss_target: '<= 90 MB (agent.rss_mb with the HTTP endpoint on)',
    rss_mb_without_http: base.rssMb,
    http_rss_cost_mb: round(withHttp.rssMb - base.rssMb),
    cpu_pct_with_http: withHttp.cpuPct,
    cpu_pct_without_http: base.cpuPct,
    service_rss_mb: service.rssMb,
    service_cpu_pct: service.cpuPct,
    service_setup: `outbox + MQTT + HTTP, ${UNIT_NODE_FLAGS.join(' ')}`,
  };
}
