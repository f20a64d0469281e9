/**
 * The drill report: one self-contained HTML page (inline CSS and inline SVG, no script, no external
 * font or link), so it can be mailed, archived or opened offline next to the rack it describes.
 *
 * Pure: a DrillResult in, a string out.
 */
import type { PlannedAction } from '../agent/actions/plan.js';
import type { Level } from '../agent/detection/types.js';
import type { TimedEvent } from '../agent/detection/replay.js';
import type { DrillResult, Series } from './drill.js';

/** Largest number of points drawn per sensor series (a 24 h drill at 5 s has 17 280 samples). */
export const MAX_POINTS_PER_SERIES = 1500;

/** Marker colours by the level a zone moves to. */
export const LEVEL_COLOURS: Readonly<Record<Level, string>> = {
  normal: '#2e9d46',
  warning: '#f0a202',
  alarm: '#e8490f',
  critical: '#8b0000',
};
const BLIND_COLOUR = '#6b6b8a';
const ONSET_COLOUR = '#222';

/** Sensor line colours: distinct from the level colours above so a line is never read as a marker. */
const SENSOR_COLOURS = ['#1f77b4', '#9467bd', '#17becf', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#393b79', '#637939', '#5254a3', '#8ca252', '#843c39'];

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A point of a decimated series, or null where the line breaks (a sample without a value). */
export type PlotPoint = readonly [timeS: number, tempC: number] | null;

/**
 * Reduces a series to at most `maxPoints` points, keeping what a reader must see: per time bucket
 * the lowest and the highest reading (so a one-sample glitch survives), and a break wherever the
 * bucket holds a failed read. A bucket with failed reads keeps the last value before the first of
 * them and the first value after the last of them.
 */
export function decimate(t: readonly number[], v: ReadonlyArray<number | null>, maxPoints = MAX_POINTS_PER_SERIES): PlotPoint[] {
  const n = Math.min(t.length, v.length);
  const out: PlotPoint[] = [];
  if (n <= maxPoints) {
    for (let i = 0; i < n; i++) {
      const y = v[i]!;
      out.push(y === null ? null : [t[i]!, y]);
    }
    return out;
  }
  const buckets = Math.max(1, Math.floor(maxPoints / 2));
  const t0 = t[0]!;
  const span = t[n - 1]! - t0 || 1;
  let i = 0;
  for (let b = 0; b < buckets && i < n; b++) {
    const end = b === buckets - 1 ? Infinity : t0 + (span * (b + 1)) / buckets;
    let lo = -1;
    let hi = -1;
    let beforeNull = -1;
    let afterNull = -1;
    let sawNull = false;
    for (; i < n && t[i]! < end; i++) {
      const y = v[i]!;
      if (y === null) {
        sawNull = true;
        afterNull = -1;
        continue;
      }
      if (!sawNull) {
        beforeNull = i;
        if (lo < 0 || y < v[lo]!) lo = i;
        if (hi < 0 || y > v[hi]!) hi = i;
      } else if (afterNull < 0) afterNull = i;
    }
    const pt = (k: number): PlotPoint => [t[k]!, v[k]!];
    if (!sawNull) {
      if (lo < 0) continue;
      if (lo === hi) out.push(pt(lo));
      else for (const k of lo < hi ? [lo, hi] : [hi, lo]) out.push(pt(k));
    } else {
      if (beforeNull >= 0) out.push(pt(beforeNull));
      if (out.length === 0 || out[out.length - 1] !== null) out.push(null);
      if (afterNull >= 0) out.push(pt(afterNull));
    }
  }
  return out;
}

/** "n/a", "47 s", "5 min 12 s", "3 h 05 min"; negative durations keep their sign. */
export function formatDuration(s: number | null): string {
  if (s === null) return 'n/a';
  const sign = s < 0 ? '−' : '';
  const a = Math.round(Math.abs(s));
  if (a < 120) return `${sign}${a} s`;
  if (a < 7200) return `${sign}${Math.floor(a / 60)} min ${String(a % 60).padStart(2, '0')} s`;
  return `${sign}${Math.floor(a / 3600)} h ${String(Math.floor((a % 3600) / 60)).padStart(2, '0')} min`;
}

/** Time from the start as h:mm:ss (or m:ss under an hour). */
function clock(s: number): string {
  const a = Math.round(s);
  const h = Math.floor(a / 3600);
  const m = Math.floor((a % 3600) / 60);
  const sec = String(a % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/** A "nice" tick step (1, 2, 2.5 or 5 × 10^n) giving about `target` ticks over `range`. */
function niceStep(range: number, target: number): number {
  const raw = range / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const f of [1, 2, 2.5, 5, 10]) if (f * mag >= raw) return f * mag;
  return 10 * mag;
}

function ticks(lo: number, hi: number, step: number): number[] {
  const out: number[] = [];
  for (let x = Math.ceil(lo / step - 1e-9) * step; x <= hi + 1e-9; x += step) out.push(Number(x.toFixed(6)));
  return out;
}

const num = (x: number): string => (Math.round(x * 10) / 10).toString();

interface ZoneView {
  id: string;
  sensors: string[];
  warnTempC: number;
  alarmTempC: number;
  criticalTempC: number;
}

// Chart geometry in SVG user units; the SVG scales to the page width through its viewBox.
const W = 1120;
const H = 380;
const M = { left: 56, right: 118, top: 34, bottom: 42 };

function eventTarget(e: TimedEvent): { label: string; colour: string } {
  const ev = e.event;
  if (ev.kind === 'zone_level') return { label: ev.level, colour: LEVEL_COLOURS[ev.level] };
  return { label: ev.blind ? 'blind' : 'quorum back', colour: BLIND_COLOUR };
}

function zoneChart(zone: ZoneView, series: Map<string, Series>, events: TimedEvent[], onsetS: number | null, durationS: number, colourOf: (id: string) => string, actions: readonly PlannedAction[] = []): string {
  const lines = zone.sensors.map((id) => ({ id, points: decimate(series.get(id)?.t ?? [], series.get(id)?.v ?? []) }));
  let tMax = durationS;
  let yLo = zone.warnTempC;
  let yHi = zone.criticalTempC;
  for (const l of lines) {
    for (const p of l.points) {
      if (!p) continue;
      if (p[0] > tMax) tMax = p[0];
      if (p[1] < yLo) yLo = p[1];
      if (p[1] > yHi) yHi = p[1];
    }
  }
  yLo = Math.floor(yLo - 1);
  yHi = Math.ceil(yHi + 1);
  tMax = Math.max(tMax, 1);

  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const x = (t: number): number => M.left + (t / tMax) * pw;
  const y = (c: number): number => M.top + ((yHi - c) / (yHi - yLo)) * ph;
  const f = (n: number): string => n.toFixed(1);

  const hours = tMax > 2 * 3600;
  const unitS = hours ? 3600 : 60;
  const xStep = niceStep(tMax / unitS, 10);
  const yStep = niceStep(yHi - yLo, 8);

  const parts: string[] = [];
  parts.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" class="plot"/>`);
  for (const c of ticks(yLo, yHi, yStep)) {
    parts.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${f(y(c))}" y2="${f(y(c))}" class="grid"/>`);
    parts.push(`<text x="${M.left - 6}" y="${f(y(c) + 4)}" class="tick" text-anchor="end">${num(c)}</text>`);
  }
  for (const u of ticks(0, tMax / unitS, xStep)) {
    const px = f(x(u * unitS));
    parts.push(`<line x1="${px}" x2="${px}" y1="${M.top}" y2="${M.top + ph}" class="grid"/>`);
    parts.push(`<text x="${px}" y="${M.top + ph + 16}" class="tick" text-anchor="middle">${num(u)}</text>`);
  }
  parts.push(`<text x="${M.left + pw / 2}" y="${H - 6}" class="axis" text-anchor="middle">time (${hours ? 'h' : 'min'})</text>`);
  parts.push(`<text x="14" y="${M.top + ph / 2}" class="axis" text-anchor="middle" transform="rotate(-90 14 ${M.top + ph / 2})">inlet °C</text>`);

  for (const [name, temp, colour] of [
    ['warn', zone.warnTempC, LEVEL_COLOURS.warning],
    ['alarm', zone.alarmTempC, LEVEL_COLOURS.alarm],
    ['critical', zone.criticalTempC, LEVEL_COLOURS.critical],
  ] as const) {
    const py = f(y(temp));
    parts.push(
      `<g class="threshold" data-threshold="${name}"><line x1="${M.left}" x2="${M.left + pw}" y1="${py}" y2="${py}" stroke="${colour}" stroke-dasharray="7 5" stroke-width="1.5"/>` +
        `<text x="${M.left + pw + 6}" y="${f(y(temp) + 4)}" fill="${colour}" class="thlabel">${name} ${num(temp)} °C</text></g>`,
    );
  }

  for (const l of lines) {
    let d = '';
    let pen = false;
    for (const p of l.points) {
      if (!p) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${f(x(p[0]))} ${f(y(p[1]))}`;
      pen = true;
    }
    parts.push(`<path class="series" data-sensor="${escapeHtml(l.id)}" d="${d}" stroke="${colourOf(l.id)}"><title>${escapeHtml(l.id)}</title></path>`);
  }

  if (onsetS !== null) {
    const px = f(x(onsetS));
    parts.push(
      `<g class="onset"><line x1="${px}" x2="${px}" y1="${M.top - 10}" y2="${M.top + ph}" stroke="${ONSET_COLOUR}" stroke-width="2" stroke-dasharray="2 3"/>` +
        `<text x="${px}" y="${M.top - 14}" class="mlabel" text-anchor="middle">failure</text></g>`,
    );
  }
  // Labels of close markers are staggered over three rows so that they stay legible.
  let lastLabelX = -Infinity;
  let row = 0;
  for (const e of events) {
    const { label, colour } = eventTarget(e);
    const px = x(e.timeS);
    row = px - lastLabelX < 60 ? (row + 1) % 3 : 0;
    lastLabelX = px;
    const ly = M.top + 12 + row * 12;
    const tip = `${clock(e.timeS)}  ${e.event.kind === 'zone_level' ? `${e.event.from} → ${e.event.level}` : label}: ${e.event.reason}`;
    parts.push(
      `<g class="marker" data-level="${escapeHtml(label)}"><title>${escapeHtml(tip)}</title>` +
        `<line x1="${f(px)}" x2="${f(px)}" y1="${M.top}" y2="${M.top + ph}" stroke="${colour}" stroke-width="2" opacity="0.85"${e.event.kind === 'zone_blind' ? ' stroke-dasharray="4 3"' : ''}/>` +
        `<text x="${f(px + 3)}" y="${ly}" fill="${colour}" class="mlabel">${escapeHtml(label)}</text></g>`,
    );
  }

  // Planned actions: a triangle under the plot at the trigger time, the action's name on hover and
  // in the table below; a refused (safety gate) action is hollow.
  for (const a of actions) {
    const px = x(a.atS);
    const by = M.top + ph;
    const colour = LEVEL_COLOURS[a.level];
    const tip = `${clock(a.atS)}  ${a.action} (${a.level}, ${a.incident}) ${a.status}: ${a.what}${a.why ? ` (${a.why})` : ''}`;
    parts.push(
      `<g class="action" data-action="${escapeHtml(a.action)}" data-status="${a.status}"><title>${escapeHtml(tip)}</title>` +
        `<path d="M${f(px)} ${f(by - 12)}L${f(px - 6)} ${f(by)}L${f(px + 6)} ${f(by)}Z" fill="${a.status === 'skipped' ? 'none' : colour}" stroke="${colour}" stroke-width="1.5"/></g>`,
    );
  }

  const legend = zone.sensors
    .map((id) => `<span class="key"><i style="background:${colourOf(id)}"></i>${escapeHtml(id)}</span>`)
    .concat(
      (['warning', 'alarm', 'critical', 'normal'] as const).map((l) => `<span class="key"><i class="vbar" style="background:${LEVEL_COLOURS[l]}"></i>→ ${l}</span>`),
      [`<span class="key"><i class="vbar" style="background:${BLIND_COLOUR}"></i>blind / quorum back</span>`],
      onsetS !== null ? [`<span class="key"><i class="vbar" style="background:${ONSET_COLOUR}"></i>failure onset</span>`] : [],
      [`<span class="key"><i class="dash"></i>thresholds (dashed)</span>`],
      actions.length > 0 ? [`<span class="key">▲ action that would fire (△ refused by the safety gate)</span>`] : [],
    )
    .join('');

  return `<section class="zone">
<h2>Zone ${escapeHtml(zone.id)}</h2>
<p class="sub">${zone.sensors.length} sensor${zone.sensors.length === 1 ? '' : 's'} · warn ${num(zone.warnTempC)} °C · alarm ${num(zone.alarmTempC)} °C · critical ${num(zone.criticalTempC)} °C · ${events.length} event${events.length === 1 ? '' : 's'}</p>
<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="Inlet temperatures of zone ${escapeHtml(zone.id)}">
${parts.join('\n')}
</svg>
<div class="legend">${legend}</div>
</section>`;
}

function actionsTable(actions: readonly PlannedAction[]): string {
  if (actions.length === 0) return '<p class="empty">No action would fire (no policy configured, or no zone reached a policy\'s level).</p>';
  const rows = actions
    .map(
      (a) =>
        `<tr class="action-row" data-status="${a.status}"><td class="num">${num(a.atS)} s</td><td class="num">${clock(a.atS)}</td><td class="num">${a.latestAtS > a.atS ? `${num(a.latestAtS)} s` : ''}</td><td>${escapeHtml(a.zone)}</td><td>${escapeHtml(a.incident)}</td><td>${escapeHtml(a.level)}</td><td>${escapeHtml(a.action)}</td><td>${a.status === 'skipped' ? `<b>skipped</b>: ${escapeHtml(a.why ?? '')}` : 'would run'}</td><td>${escapeHtml(a.what)}</td></tr>`,
    )
    .join('\n');
  return `<table class="actions"><thead><tr><th>time</th><th>t</th><th>latest start</th><th>zone</th><th>incident</th><th>level</th><th>action</th><th>status</th><th>what</th></tr></thead>
<tbody>
${rows}
</tbody></table>`;
}

function eventRow(e: TimedEvent): string {
  const ev = e.event;
  const { colour } = eventTarget(e);
  const change =
    ev.kind === 'zone_level'
      ? `${escapeHtml(ev.from)} → <b style="color:${colour}">${escapeHtml(ev.level)}</b>`
      : `<b style="color:${colour}">${ev.blind ? 'BLIND (quorum lost)' : 'quorum restored'}</b>`;
  return `<tr><td class="num">${num(e.timeS)} s</td><td class="num">${clock(e.timeS)}</td><td>${escapeHtml(ev.zone)}</td><td>${change}</td><td>${escapeHtml(ev.reason)}</td><td class="num">${formatDuration(ev.evidence.etaCriticalS)}</td></tr>`;
}

const CSS = `
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d1d1f;background:#fafafa;margin:0}
main{max-width:1160px;margin:0 auto;padding:24px 20px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:19px;margin:28px 0 2px}
.sub,.desc{color:#555;margin:2px 0 10px}
.headline{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin:18px 0 6px}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:12px 14px}
.card .v{font-size:34px;font-weight:700;line-height:1.15;font-variant-numeric:tabular-nums}
.card .k{color:#555;font-size:13px}
.card.na .v{color:#999}
.meta{color:#555;font-size:13px}
svg.chart{width:100%;height:auto;background:#fff;border:1px solid #ddd;border-radius:8px}
svg .plot{fill:#fff}
svg .grid{stroke:#eee;stroke-width:1}
svg .tick{font-size:12px;fill:#555}
svg .axis{font-size:13px;fill:#333}
svg .thlabel{font-size:12px;font-weight:600}
svg .mlabel{font-size:11px;font-weight:600}
svg .series{fill:none;stroke-width:1.6;stroke-linejoin:round}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin:8px 2px;font-size:13px}
.key{display:inline-flex;align-items:center;gap:6px}
.key i{display:inline-block;width:18px;height:3px}
.key i.vbar{width:3px;height:14px}
.key i.dash{width:18px;height:0;border-top:2px dashed #888}
.empty{color:#666;font-style:italic}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #ddd;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
`;

/** Renders a drill result as a self-contained HTML page. */
export function renderReport(result: DrillResult): string {
  const { scenario, headline } = result;
  const series = new Map(result.series.map((s) => [s.pointId, s]));
  const allSensors = [...new Set(result.zones.flatMap((z) => z.sensors))];
  const colourOf = (id: string): string => SENSOR_COLOURS[Math.max(0, allSensors.indexOf(id)) % SENSOR_COLOURS.length]!;

  const card = (label: string, value: number | null, note: string): string =>
    `<div class="card${value === null ? ' na' : ''}"><div class="v">${formatDuration(value)}</div><div class="k">${escapeHtml(label)}</div><div class="meta">${escapeHtml(note)}</div></div>`;
  const cards = [
    card('failure → alarm', headline.alarmAfterS, 'first alarm in any zone'),
    card('failure → critical', headline.criticalAfterS, 'first critical in any zone'),
    card('lead before 32 °C', headline.lead32S, 'first alarm → zone median 32 °C'),
    card('lead before 35 °C', headline.lead35S, 'first critical → zone median 35 °C'),
  ].join('');

  const zoneRows = headline.zones
    .map(
      (z) =>
        `<tr><td>${escapeHtml(z.zone)}</td><td class="num">${z.alarmAtS === null ? 'n/a' : `${num(z.alarmAtS)} s`}</td><td class="num">${z.criticalAtS === null ? 'n/a' : `${num(z.criticalAtS)} s`}</td><td class="num">${z.median32AtS === null ? 'n/a' : `${num(z.median32AtS)} s`}</td><td class="num">${z.median35AtS === null ? 'n/a' : `${num(z.median35AtS)} s`}</td></tr>`,
    )
    .join('');

  const charts = result.zones
    .map((z) => zoneChart(z, series, result.events.filter((e) => e.event.zone === z.id), headline.onsetS, scenario.durationS, colourOf, (result.actions ?? []).filter((a) => a.zone === z.id)))
    .join('\n');

  const rows = result.events.map(eventRow).join('\n');
  const table =
    result.events.length === 0
      ? '<p class="empty">No events: every zone stayed normal.</p>'
      : `<table class="events"><thead><tr><th>time</th><th>t</th><th>zone</th><th>from → to</th><th>reason</th><th>ETA critical</th></tr></thead>
<tbody>
${rows}
</tbody></table>`;

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rackguard drill: ${escapeHtml(scenario.name)}</title>
<style>${CSS}</style>
</head>
<body>
<main>
<h1>rackguard drill: ${escapeHtml(scenario.name)}</h1>
<p class="desc">${escapeHtml(scenario.description)}</p>
<p class="meta">Simulated ${formatDuration(scenario.durationS)} · ${result.rows} samples · failure onset ${headline.onsetS === null ? 'none (no chiller failure in this scenario)' : `at ${num(headline.onsetS)} s (${clock(headline.onsetS)})`} · ${result.events.length} detector event${result.events.length === 1 ? '' : 's'}</p>
<div class="headline">${cards}</div>
<table class="zones"><thead><tr><th>zone</th><th>first alarm</th><th>first critical</th><th>median ≥ 32 °C</th><th>median ≥ 35 °C</th></tr></thead><tbody>${zoneRows}</tbody></table>
${charts}
<h2>Actions that would fire</h2>
${result.actions === undefined ? '<p class="empty">no action policy configured (dry run)</p>' : actionsTable(result.actions)}
<h2>Timeline</h2>
${table}
</main>
</body>
</html>
`;
}
