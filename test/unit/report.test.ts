import { describe, expect, it } from 'vitest';
import type { TimedEvent } from '../../agent/detection/replay.js';
import type { Evidence, Level } from '../../agent/detection/types.js';
import type { DrillResult, Series } from '../../drill/drill.js';
import { MAX_POINTS_PER_SERIES, decimate, escapeHtml, formatDuration, renderReport } from '../../drill/report.js';

const evidence = (etaCriticalS: number | null): Evidence => ({ sensors: [], chillers: [], agreeingAlarm: 2, agreeingCritical: 0, k: 2, etaCriticalS });

function level(timeS: number, zone: string, from: Level, to: Level, reason: string, eta: number | null = null): TimedEvent {
  return { timeS, event: { kind: 'zone_level', zone, from, level: to, reason, mono: timeS * 1000, ts: timeS * 1000, evidence: evidence(eta) } };
}

function ramp(pointId: string, offset: number, n: number, stepS = 5, nullAt: number[] = []): Series {
  const t: number[] = [];
  const v: Array<number | null> = [];
  for (let i = 0; i < n; i++) {
    t.push(i * stepS);
    v.push(nullAt.includes(i) ? null : 22 + offset + Math.max(0, i * stepS - 600) / 30);
  }
  return { pointId, t, v };
}

function result(n = 300): DrillResult {
  const events: TimedEvent[] = [
    level(610, 'aisle-a', 'normal', 'warning', 'rack01 rising 2.0 °C/min'),
    level(650, 'aisle-a', 'warning', 'alarm', '2 of 3 sensors > 1 °C/min & <script>alert(1)</script>', 900),
    level(660, 'aisle-b', 'normal', 'alarm', 'chiller ch1 tripped (code 17) & "quoted"', 840),
    level(1100, 'aisle-a', 'alarm', 'critical', 'ETA 35 °C < 600 s', 420),
    { timeS: 1200, event: { kind: 'zone_blind', zone: 'aisle-b', blind: true, level: 'warning', reason: 'only 1 good sensor < k=2', mono: 0, ts: 0, evidence: evidence(null) } },
  ];
  return {
    scenario: { name: 'trip <test>', description: 'Chiller trips at 600 s & the room heats', durationS: n * 5 },
    zones: [
      { id: 'aisle-a', sensors: ['rack01.temperature', 'rack02.temperature', 'rack03.temperature'], warnTempC: 27, alarmTempC: 32, criticalTempC: 35 },
      { id: 'aisle-b', sensors: ['rack05.temperature', 'rack06.temperature'], warnTempC: 27, alarmTempC: 32, criticalTempC: 35 },
    ],
    series: [
      ramp('rack01.temperature', 0.2, n),
      ramp('rack02.temperature', -0.4, n, 5, [40, 41, 42]),
      ramp('rack03.temperature', 0.9, n),
      ramp('rack05.temperature', 0, n),
      ramp('rack06.temperature', 1.1, n, 5, [200]),
    ],
    events,
    headline: {
      onsetS: 600,
      alarmAfterS: 50,
      criticalAfterS: 500,
      lead32S: 312,
      lead35S: null,
      zones: [
        { zone: 'aisle-a', alarmAtS: 650, criticalAtS: 1100, median32AtS: 962, median35AtS: null },
        { zone: 'aisle-b', alarmAtS: 660, criticalAtS: null, median32AtS: 970, median35AtS: null },
      ],
    },
    rows: n * 5,
  };
}

const count = (html: string, re: RegExp): number => (html.match(re) ?? []).length;

/** The markup of each zone's section, in order. */
function sections(html: string): string[] {
  return html.split('<section class="zone">').slice(1);
}

describe('renderReport', () => {
  const r = result();
  const html = renderReport(r);

  it('is a self-contained HTML page: no script, no link, no external resource', () => {
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html).toContain('<meta charset="utf-8">');
    expect(html).toMatch(/<\/html>\s*$/);
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/https?:/i);
    expect(html).not.toMatch(/<link|\bsrc=|\bhref=|@import|url\(/i);
  });

  it('shows the scenario and the headline numbers, n/a where null', () => {
    expect(html).toContain('<title>rackguard drill: trip &lt;test&gt;</title>');
    expect(html).toContain('Chiller trips at 600 s &amp; the room heats');
    expect(html).toContain('<div class="v">50 s</div><div class="k">failure → alarm</div>');
    expect(html).toContain('<div class="v">8 min 20 s</div><div class="k">failure → critical</div>');
    expect(html).toContain('<div class="v">5 min 12 s</div><div class="k">lead before 32 °C</div>');
    expect(html).toContain('<div class="v">n/a</div><div class="k">lead before 35 °C</div>');
  });

  it('draws one chart per zone with a line per sensor, the three thresholds and a marker per event', () => {
    expect(count(html, /<svg /g)).toBe(r.zones.length);
    const secs = sections(html);
    expect(secs).toHaveLength(2);
    r.zones.forEach((z, i) => {
      const s = secs[i]!;
      expect(count(s, /<path class="series"/g)).toBe(z.sensors.length);
      for (const id of z.sensors) expect(s).toContain(`data-sensor="${id}"`);
      for (const th of ['warn 27 °C', 'alarm 32 °C', 'critical 35 °C']) expect(s).toContain(th);
      expect(count(s, /class="threshold"/g)).toBe(3);
      expect(count(s, /stroke-dasharray="7 5"/g)).toBe(3);
      expect(count(s, /<g class="marker"/g)).toBe(r.events.filter((e) => e.event.zone === z.id).length);
      expect(count(s, /<g class="onset"/g)).toBe(1);
      // legend: one key per sensor
      for (const id of z.sensors) expect(s).toMatch(new RegExp(`<i style="background:#[0-9a-f]{6}"></i>${id.replace('.', '\\.')}`));
    });
    // marker colours follow the level moved to
    expect(secs[0]).toContain('data-level="critical"><title>');
    expect(secs[0]).toMatch(/stroke="#8b0000"/);
    expect(secs[1]).toContain('data-level="blind"');
  });

  it('breaks a sensor line where a sample has no value', () => {
    const s = sections(html)[0]!;
    const d = /data-sensor="rack02\.temperature" d="([^"]*)"/.exec(s)![1]!;
    expect(count(d, /M/g)).toBe(2);
    const d1 = /data-sensor="rack01\.temperature" d="([^"]*)"/.exec(s)![1]!;
    expect(count(d1, /M/g)).toBe(1);
  });

  it('lists every event in the timeline, escaped, with ETA', () => {
    const tbody = /<table class="events">[\s\S]*?<tbody>([\s\S]*?)<\/tbody>/.exec(html)![1]!;
    expect(count(tbody, /<tr>/g)).toBe(r.events.length);
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).toContain('code 17) &amp; &quot;quoted&quot;');
    expect(tbody).toContain('warning → <b style="color:#e8490f">alarm</b>');
    expect(tbody).toContain('BLIND (quorum lost)');
    expect(tbody).toContain('<td class="num">15 min 00 s</td>');
  });

  it('says that no action policy is configured', () => {
    expect(html).toContain('no action policy configured (dry run)');
  });

  it('uses minutes on short runs and hours on long ones', () => {
    expect(html).toContain('time (min)');
    const long = renderReport(result(24 * 720));
    expect(long).toContain('time (h)');
    expect(long).not.toContain('time (min)');
  });

  it('keeps a 24 h drill small', () => {
    const long = renderReport(result(24 * 720));
    for (const s of sections(long)) {
      for (const m of s.matchAll(/<path class="series"[^>]* d="([^"]*)"/g)) expect(count(m[1]!, /[ML]/g)).toBeLessThanOrEqual(MAX_POINTS_PER_SERIES);
    }
    expect(long.length).toBeLessThan(500_000);
  });

  it('renders an empty timeline', () => {
    const quiet = renderReport({ ...result(), events: [] });
    expect(quiet).toContain('No events');
    expect(quiet).not.toContain('<table class="events">');
  });
});

describe('decimate', () => {
  it('passes short series through, nulls as breaks', () => {
    expect(decimate([0, 5, 10], [20, null, 21])).toEqual([[0, 20], null, [10, 21]]);
  });

  it('bounds the point count and keeps extremes and breaks', () => {
    const n = 17_280;
    const t = Array.from({ length: n }, (_, i) => i * 5);
    const v: Array<number | null> = t.map((s) => 22 + Math.sin(s / 600));
    v[5000] = 40; // a one-sample glitch
    for (let i = 9000; i < 9100; i++) v[i] = null; // a dead stretch
    const out = decimate(t, v);
    const points = out.filter((p) => p !== null);
    expect(points.length).toBeLessThanOrEqual(MAX_POINTS_PER_SERIES);
    expect(points.length).toBeGreaterThan(MAX_POINTS_PER_SERIES * 0.9);
    expect(points.some((p) => p[1] === 40)).toBe(true);
    expect(out.filter((p) => p === null).length).toBeGreaterThanOrEqual(1);
    const times = points.map((p) => p[0]);
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    expect(decimate(t, v, 100).filter((p) => p !== null).length).toBeLessThanOrEqual(100);
  });
});

describe('helpers', () => {
  it('escapes HTML', () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  });
  it('formats durations', () => {
    expect([null, 47, 312, -12, 3 * 3600 + 5 * 60].map(formatDuration)).toEqual(['n/a', '47 s', '5 min 12 s', '−12 s', '3 h 05 min']);
  });
});
