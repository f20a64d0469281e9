/**
 * The live status page served at `/` (issue 10, item 1): one self-contained HTML document with inline
 * CSS, JavaScript and SVG. It must work on a site network where the gateway is the only host reachable,
 * so it references nothing outside itself: no CDN, no web fonts, no images.
 *
 * The page connects to `api/events/stream` (Server-Sent Events, see the contract in the observability
 * brief): every `state` message re-renders the whole view, every `event` message is prepended to the
 * events list. EventSource reconnects by itself after a network error, but gives up for good on an HTTP
 * error status (401, 503) or a wrong content type, so the page also reconnects itself, with backoff.
 *
 * A `?token=` in the page's own URL is passed on to the stream and to fetch calls in the query string:
 * EventSource cannot set an Authorization header.
 *
 * Every string from the agent is inserted with `textContent`/`setAttribute` (never innerHTML): point ids
 * come from the config, but event messages can carry text a device sent.
 *
 * URLs are relative ("api/state", not "/api/state") so the page also works behind a reverse proxy that
 * mounts the gateway under a sub-path.
 */

const STYLE = `
:root { color-scheme: light dark; --bg:#f4f5f7; --fg:#1b1f24; --card:#fff; --muted:#5f6b7a; --line:#d9dde3;
  --normal:#1f9d55; --warning:#d98c00; --alarm:#d62828; --critical:#7a0010; --blind:#8a8f98; }
@media (prefers-color-scheme: dark) { :root { --bg:#15181c; --fg:#e6e9ee; --card:#1f2329; --muted:#9aa5b4; --line:#343a43; } }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--fg); }
header { display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:center; padding:.6rem 1rem; background:var(--card); border-bottom:1px solid var(--line); position:sticky; top:0; z-index:1; }
header h1 { font-size:1.1rem; margin:0; }
header .meta { color:var(--muted); font-size:.85rem; }
#conn { margin-left:auto; padding:.15rem .6rem; border-radius:1rem; font-weight:600; font-size:.85rem; background:var(--blind); color:#fff; }
#conn[data-state="live"] { background:var(--normal); }
#conn[data-state="retrying"] { background:var(--alarm); }
main { padding:1rem; display:grid; gap:1rem; grid-template-columns:minmax(0, 1fr); }
/* Grid items default to min-width:auto and grow to their widest table: let them shrink and scroll inside. */
main > section, .grid > * { min-width:0; }
section > h2 { font-size:1rem; margin:0 0 .5rem; }
.grid { display:grid; gap:.75rem; grid-template-columns:repeat(auto-fill, minmax(min(100%, 480px), 1fr)); }
.card { background:var(--card); border:1px solid var(--line); border-radius:.5rem; overflow:hidden; }
.zone { border-left:.5rem solid var(--lvl); }
.zone .head { display:flex; flex-wrap:wrap; gap:.25rem .75rem; align-items:baseline; padding:.5rem .75rem; }
.zone .name { font-weight:700; font-size:1.05rem; }
.zone .zone-level { padding:.05rem .5rem; border-radius:.25rem; background:var(--lvl); color:#fff; font-weight:700; text-transform:uppercase; font-size:.8rem; }
.zone .eta { margin-left:auto; color:var(--muted); }
.level-normal { --lvl:var(--normal); } .level-warning { --lvl:var(--warning); }
.level-alarm { --lvl:var(--alarm); } .level-critical { --lvl:var(--critical); } .level-blind { --lvl:var(--blind); }
.zone.level-critical { animation: flash 1s steps(2, start) infinite; }
@keyframes flash { to { background:color-mix(in srgb, var(--critical) 25%, var(--card)); } }
@media (prefers-reduced-motion: reduce) { .zone.level-critical { animation:none; background:color-mix(in srgb, var(--critical) 20%, var(--card)); } }
.scroll { overflow-x:auto; }
table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { padding:.3rem .5rem; text-align:left; border-top:1px solid var(--line); white-space:nowrap; }
th { color:var(--muted); font-weight:600; font-size:.8rem; }
td.num, th.num { text-align:right; }
.small { font-size:.75rem; }
.zone td, .zone th { padding:.25rem .4rem; }
@media (max-width: 480px) { body { font-size:13px; } svg.spark { width:64px; } }
.bad { color:var(--alarm); font-weight:600; } .ok { color:var(--normal); } .muted { color:var(--muted); }
svg.spark { display:block; width:100px; height:24px; }
svg.spark polyline { fill:none; stroke:currentColor; stroke-width:1.5; vector-effect:non-scaling-stroke; }
.trend { font-size:1.1rem; }
#events { list-style:none; margin:0; padding:0; max-height:28rem; overflow-y:auto; }
#events li { padding:.35rem .75rem; border-top:1px solid var(--line); display:flex; gap:.75rem; flex-wrap:wrap; }
#events li:first-child { border-top:0; }
#events time { color:var(--muted); font-variant-numeric:tabular-nums; }
#events .kind { font-size:.75rem; color:var(--muted); }
#events li[class*="level-"] { border-left:.35rem solid var(--lvl); }
.empty { padding:.5rem .75rem; color:var(--muted); }
`;

/*
 * Plain ES2020 for any current browser. Kept free of backticks and "${" so it can live in this template
 * literal unescaped, and of the sequence "</" + "script" (the unit test checks both).
 */
const SCRIPT = `
'use strict';
(function () {
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var MAX_EVENTS = 200;
  // No message for this long (states come at least every few seconds while samples flow): reconnect.
  var STALE_MS = 60000;
  var token = new URLSearchParams(location.search).get('token');

  function apiUrl(path) {
    return token === null ? path : path + '?token=' + encodeURIComponent(token);
  }

  // Builds an element; strings among the children become text nodes, never markup.
  function el(tag, attrs) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }
  function setAttrs(node, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
    });
  }
  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
  function replaceChildren(node, children) {
    while (node.firstChild) node.removeChild(node.firstChild);
    append(node, children);
  }

  function isNum(v) { return typeof v === 'number' && isFinite(v); }
  function fixed(v, digits) { return isNum(v) ? v.toFixed(digits) : '\\u2014'; }
  function signed(v, digits) { return isNum(v) ? (v > 0 ? '+' : '') + v.toFixed(digits) : '\\u2014'; }
  function duration(s) {
    if (!isNum(s)) return '\\u2014';
    if (s <= 0) return 'now';
    s = Math.round(s);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  }
  function clock(tsMs) {
    var d = new Date(tsMs);
    return isNaN(d.getTime()) ? '' : d.toLocaleTimeString();
  }
  var LEVELS = ['normal', 'warning', 'alarm', 'critical'];
  function knownLevel(l) { return LEVELS.indexOf(l) >= 0 ? l : 'blind'; }
  // A blind zone shows grey, unless it still holds an alarm: going blind must not hide one.
  function zoneShade(z) {
    var l = knownLevel(z.level);
    return z.blind && (l === 'normal' || l === 'warning') ? 'blind' : l;
  }

  function sparkline(history) {
    var pts = Array.isArray(history) ? history.filter(function (p) { return Array.isArray(p) && isNum(p[0]) && isNum(p[1]); }) : [];
    if (pts.length < 2) return null;
    var t0 = pts[0][0], t1 = pts[pts.length - 1][0];
    var lo = Infinity, hi = -Infinity;
    pts.forEach(function (p) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); });
    // At least half a degree of span, so sensor noise does not fill the box.
    if (hi - lo < 0.5) { var mid = (hi + lo) / 2; lo = mid - 0.25; hi = mid + 0.25; }
    var W = 100, H = 24, span = Math.max(1, t1 - t0);
    var coords = pts.map(function (p) {
      return ((p[0] - t0) / span * W).toFixed(1) + ',' + (H - 1 - (p[1] - lo) / (hi - lo) * (H - 2)).toFixed(1);
    }).join(' ');
    var svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', 'last ' + pts.length + ' readings, ' + lo.toFixed(1) + ' to ' + hi.toFixed(1) + ' \\u00b0C');
    var line = document.createElementNS(SVG_NS, 'polyline');
    line.setAttribute('points', coords);
    svg.appendChild(line);
    return svg;
  }
  function trend(rate) {
    if (!isNum(rate)) return el('span', { 'class': 'trend muted' }, '\\u2014');
    var arrow = rate > 1 ? '\\u2191' : rate > 0.2 ? '\\u2197' : rate < -1 ? '\\u2193' : rate < -0.2 ? '\\u2198' : '\\u2192';
    return el('span', { 'class': 'trend', title: signed(rate, 2) + ' \\u00b0C/min' }, arrow);
  }

  // Most telling first (temperature, rates, ETA), the sparkline last: on a phone the card scrolls sideways.
  function sensorRow(s) {
    var good = s.status === 'good';
    return el('tr', { 'data-point': s.point, 'data-status': s.status },
      el('td', null, s.point, good ? null : el('div', { 'class': 'bad small' }, String(s.status))),
      el('td', { 'class': 'num' }, fixed(s.tempC, 1)),
      el('td', { 'class': 'num' }, signed(s.rateShortCPerMin, 2)),
      el('td', { 'class': 'num' }, signed(s.rateLongCPerMin, 2)),
      el('td', { 'class': 'num' }, duration(s.etaCriticalS)),
      el('td', null, sparkline(s.history) || trend(s.rateShortCPerMin)));
  }

  function zoneCard(z) {
    var shade = zoneShade(z);
    var sensors = Array.isArray(z.sensors) ? z.sensors : [];
    return el('article', { 'class': 'card zone level-' + shade, 'data-zone': z.zone, 'data-level': knownLevel(z.level), 'data-blind': z.blind ? 'true' : 'false' },
      el('div', { 'class': 'head' },
        el('span', { 'class': 'name' }, z.zone),
        el('span', { 'class': 'zone-level' }, z.blind ? String(z.level) + ' \\u00b7 blind' : String(z.level)),
        el('span', { 'class': 'muted', title: 'sensors agreeing on the alarm condition; k are needed' }, 'for ', duration(z.sinceS), ' \\u00b7 ', String(z.agreeingAlarm), ' of ', String(sensors.length), ' agree (k=', String(z.k), ')'),
        el('span', { 'class': 'eta', title: 'predicted time to the critical temperature' }, 'ETA critical: ', el('b', { 'class': 'zone-eta' }, duration(z.etaCriticalS)))),
      el('div', { 'class': 'scroll' }, el('table', null,
        el('thead', null, el('tr', null,
          el('th', null, 'sensor'), el('th', { 'class': 'num' }, '\\u00b0C'),
          el('th', { 'class': 'num', title: 'rate over the short window, \\u00b0C/min' }, 'short/min'),
          el('th', { 'class': 'num', title: 'rate over the long window, \\u00b0C/min' }, 'long/min'),
          el('th', { 'class': 'num', title: 'predicted time to the critical temperature' }, 'ETA'), el('th', null, 'trend'))),
        el('tbody', null, sensors.map(sensorRow)))));
  }

  function table(headers, rows, empty) {
    if (rows.length === 0) return el('div', { 'class': 'empty' }, empty);
    return el('div', { 'class': 'scroll' }, el('table', null,
      el('thead', null, el('tr', null, headers.map(function (h) { return el('th', h[1] ? { 'class': 'num' } : null, h[0]); }))),
      el('tbody', null, rows)));
  }

  function chillerRows(chillers) {
    return chillers.map(function (c) {
      var alarm = isNum(c.alarmCode) && c.alarmCode !== 0;
      return el('tr', { 'data-chiller': c.id },
        el('td', null, c.id),
        el('td', { 'class': c.running === false ? 'bad' : c.running === true ? 'ok' : 'muted' }, c.running === true ? 'running' : c.running === false ? 'stopped' : 'unknown'),
        el('td', { 'class': alarm ? 'bad num' : 'num' }, isNum(c.alarmCode) ? String(c.alarmCode) : '\\u2014'),
        el('td', { 'class': 'num' }, fixed(c.supplyTempC, 1)),
        el('td', { 'class': 'num' }, signed(c.supplyRateCPerMin, 2)),
        el('td', { 'class': c.corroborates ? 'bad' : '' }, c.corroborates ? 'yes' : 'no'),
        el('td', { 'class': 'muted' }, c.reason == null ? '' : String(c.reason)));
    });
  }

  function deviceRows(devices) {
    return devices.map(function (d) {
      var c = d.counters || {};
      return el('tr', { 'data-device': d.id },
        el('td', null, d.id), el('td', { 'class': 'muted' }, d.bus == null ? '' : String(d.bus)),
        el('td', { 'class': d.state === 'online' ? 'ok' : 'bad' }, String(d.state)),
        el('td', { 'class': 'num' }, fixed(c.requests, 0)),
        el('td', { 'class': c.timeouts > 0 ? 'num bad' : 'num' }, fixed(c.timeouts, 0)),
        el('td', { 'class': c.crcErrors > 0 ? 'num bad' : 'num' }, fixed(c.crcErrors, 0)),
        el('td', { 'class': c.exceptions > 0 ? 'num bad' : 'num' }, fixed(c.exceptions, 0)),
        el('td', { 'class': 'num' }, fixed(c.latencyAvgMs, 1)),
        el('td', { 'class': 'muted' }, d.lastError == null ? '' : String(d.lastError)));
    });
  }

  function outputs(o) {
    var out = (o && o.outbox) || null;
    var sinks = (o && o.sinks) || (out && out.sinks) || {};
    var names = Object.keys(sinks);
    var rows = names.map(function (n) {
      var s = sinks[n] || {};
      return el('tr', { 'data-sink': n },
        el('td', null, n),
        el('td', { 'class': s.depth > 0 ? 'num bad' : 'num' }, fixed(s.depth, 0)),
        el('td', { 'class': 'num' }, isNum(s.lagMs) ? (s.lagMs / 1000).toFixed(1) + ' s' : '\\u2014'));
    });
    return [
      out ? el('div', { 'class': 'empty' }, 'outbox ', el('b', { 'class': out.state === 'open' ? 'ok' : 'bad' }, String(out.state)),
        ' \\u00b7 ', fixed(out.rows, 0), ' rows \\u00b7 dropped: ', fixed(out.droppedTelemetry, 0), ' samples, ', fixed(out.droppedEvents, 0), ' events')
        : el('div', { 'class': 'empty' }, 'no outbox'),
      table([['sink'], ['depth', 1], ['lag', 1]], rows, 'no sinks configured'),
    ];
  }

  var worst = 'normal';
  function render(st) {
    var zones = Array.isArray(st.zones) ? st.zones : [];
    replaceChildren(document.getElementById('site'), [String(st.site || ''), ' / ', String(st.gateway || '')]);
    replaceChildren(document.getElementById('stamp'), ['v', String(st.version || '?'), ' \\u00b7 ', clock(st.tsMs), st.ready === false ? ' \\u00b7 NOT READY' : '']);
    replaceChildren(document.getElementById('zones'), zones.length ? zones.map(zoneCard) : el('div', { 'class': 'empty' }, 'no zones configured'));
    replaceChildren(document.getElementById('chillers'), table(
      [['chiller'], ['state'], ['alarm', 1], ['supply \\u00b0C', 1], ['\\u00b0C/min', 1], ['corroborates'], ['why']],
      chillerRows(Array.isArray(st.chillers) ? st.chillers : []), 'no chillers configured'));
    replaceChildren(document.getElementById('devices'), table(
      [['device'], ['bus'], ['state'], ['requests', 1], ['timeouts', 1], ['CRC', 1], ['exceptions', 1], ['latency ms', 1], ['last error']],
      deviceRows(Array.isArray(st.devices) ? st.devices : []), 'no devices'));
    replaceChildren(document.getElementById('outputs'), outputs(st.outputs));
    worst = 'normal';
    zones.forEach(function (z) { if (LEVELS.indexOf(z.level) > LEVELS.indexOf(worst)) worst = z.level; });
    document.title = (worst === 'normal' ? '' : worst.toUpperCase() + ' \\u00b7 ') + 'rackguard ' + String(st.gateway || '');
  }

  // Events, newest first, keyed by seq so a reconnect's refetch does not duplicate them.
  var events = [];
  function eventItem(e) {
    var lvl = e.kind === 'zone_level' && LEVELS.indexOf(e.level) >= 0 ? 'level-' + e.level : null;
    return el('li', { 'class': lvl, 'data-seq': e.seq, 'data-kind': e.kind },
      el('time', null, clock(e.tsMs)),
      el('span', { 'class': 'kind' }, String(e.kind)),
      el('span', null, e.message == null ? '' : String(e.message)));
  }
  function renderEvents() {
    replaceChildren(document.getElementById('events'), events.length ? events.map(eventItem) : el('li', { 'class': 'empty' }, 'no events yet'));
  }
  function addEvents(list) {
    var seen = {};
    events.forEach(function (e) { seen[e.seq] = true; });
    list.forEach(function (e) { if (e && isNum(e.seq) && !seen[e.seq]) { seen[e.seq] = true; events.push(e); } });
    events.sort(function (a, b) { return b.seq - a.seq; });
    if (events.length > MAX_EVENTS) events.length = MAX_EVENTS;
    renderEvents();
  }

  var conn = document.getElementById('conn');
  function setConn(state, text) {
    conn.setAttribute('data-state', state);
    conn.textContent = text;
  }

  var source = null, retryTimer = null, retryMs = 1000, lastMessageAt = 0;
  function connect() {
    retryTimer = null;
    if (source) source.close();
    setConn('connecting', 'connecting\\u2026');
    var es = new EventSource(apiUrl('api/events/stream'));
    source = es;
    lastMessageAt = Date.now();
    es.onopen = function () {
      retryMs = 1000;
      setConn('live', 'live');
      // The stream carries only new events: fetch the recent ones (the agent may have restarted, too).
      fetch(apiUrl('api/events'), { cache: 'no-store' })
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (list) { if (es === source && Array.isArray(list)) { events = []; addEvents(list); } })
        .catch(function () { /* the stream's own error handling reports the outage */ });
    };
    es.addEventListener('state', function (m) {
      lastMessageAt = Date.now();
      var st;
      try { st = JSON.parse(m.data); } catch (err) { return; }
      setConn('live', 'live');
      render(st);
    });
    es.addEventListener('event', function (m) {
      lastMessageAt = Date.now();
      try { addEvents([JSON.parse(m.data)]); } catch (err) { /* a malformed event is skipped, the next state still renders */ }
    });
    es.onerror = function () {
      if (es !== source) return;
      setConn('retrying', 'disconnected \\u2014 retrying');
      // CLOSED: the browser gave up (an HTTP error status, a wrong content type); retry ourselves, with backoff.
      if (es.readyState === EventSource.CLOSED) scheduleRetry();
    };
  }
  function scheduleRetry() {
    if (retryTimer !== null) return;
    retryTimer = setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  }
  setInterval(function () {
    if (source && source.readyState === EventSource.OPEN && Date.now() - lastMessageAt > STALE_MS) {
      setConn('retrying', 'no data \\u2014 retrying');
      source.close();
      scheduleRetry();
    }
  }, 5000);

  renderEvents();
  connect();
})();
`;

const BODY = `
<header>
  <h1>rackguard <span id="site" class="meta"></span></h1>
  <span id="stamp" class="meta"></span>
  <span id="conn" data-state="connecting" role="status" aria-live="polite">connecting\u2026</span>
</header>
<main>
  <section><h2>Zones</h2><div id="zones" class="grid"><div class="empty">waiting for the agent\u2026</div></div></section>
  <section><h2>Chillers</h2><div id="chillers" class="card"></div></section>
  <section><h2>Devices</h2><div id="devices" class="card"></div></section>
  <section><h2>Outputs</h2><div id="outputs" class="card"></div></section>
  <section><h2>Recent events</h2><div class="card"><ul id="events"></ul></div></section>
</main>
<noscript>This page needs JavaScript to show live values; the data is at api/state.</noscript>
`;

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>rackguard</title>
<style>${STYLE}</style>
</head>
<body>${BODY}
<script>${SCRIPT}</script>
</body>
</html>
`;

/** The status page: a complete, self-contained HTML document (UTF-8). The same string on every call. */
export function statusPageHtml(): string {
  return HTML;
}
