/**
 * Sensors that stream ASCII lines instead of answering Modbus (for example the XY-MD02 in its
 * "common protocol" auto-upload mode, which prints temperature and humidity every second).
 * Each line is matched against the configured pattern; named groups become samples through the
 * same PointTracker as Modbus values, so quality rules are identical. A line that does not match is
 * counted and logged, never turned into a value. No matching line within `timeoutMs` yields
 * comm_error samples, repeated every `timeoutMs`, so silence is visible downstream.
 */
import type { Component } from '../component.js';
import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../clock.js';
import type { StreamBusDef } from '../config/model.js';
import { NUMBER_TEXT, PointTracker } from './samples.js';
import { SerialLink, type PortOpener } from './serial-link.js';
import type { Sample } from './types.js';

/** Longest line we buffer; a sensor that never sends a newline must not grow memory. */
const MAX_LINE_BYTES = 1024;

export class StreamSource implements Component {
  readonly name: string;
  private readonly link: SerialLink;
  private readonly regex: RegExp;
  private readonly trackers: PointTracker[];
  private partial = '';
  private silenceTimer: TimerHandle | undefined;
  private stopped = true;
  linesMatched = 0;
  linesRejected = 0;

  constructor(
    private readonly bus: StreamBusDef,
    private readonly deps: { clock: Clock; logger: Logger; opener?: PortOpener; onSamples: (samples: Sample[]) => void },
  ) {
    this.name = `stream:${bus.id}`;
    this.regex = new RegExp(bus.pattern);
    this.trackers = bus.points.map((p) => new PointTracker(p));
    this.link = new SerialLink(bus, { ...deps, reopenInitialMs: bus.reopenInitialMs, reopenMaxMs: bus.reopenMaxMs });
    this.link.on('data', (chunk) => this.onData(chunk));
    this.link.on('open', () => {
      this.partial = '';
    });
  }

  /** Opens the port in the background (see SerialLink) and starts the silence watch. Idempotent. */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    this.partial = '';
    await this.link.start();
    this.armSilenceTimer();
  }

  /** Safe at any stage and twice; start() afterwards begins afresh. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.deps.clock.clearTimeout(this.silenceTimer);
    this.silenceTimer = undefined;
    this.partial = '';
    await this.link.stop();
  }

  private armSilenceTimer(): void {
    this.deps.clock.clearTimeout(this.silenceTimer);
    if (this.stopped) return;
    this.silenceTimer = this.deps.clock.setTimeout(() => {
      const at = { ts: this.deps.clock.wallMs(), mono: this.deps.clock.monoMs() };
      const why = this.link.isOpen ? `E_MODBUS_TIMEOUT: no valid line for ${this.bus.timeoutMs} ms` : `E_PORT_CLOSED: ${this.bus.path}: ${this.link.lastError ?? 'not open'}`;
      this.deps.onSamples(this.trackers.map((t) => t.failed(why, at)));
      this.armSilenceTimer();
    }, this.bus.timeoutMs);
  }

  private onData(chunk: Buffer): void {
    if (this.stopped) return;
    const text = this.partial + chunk.toString('latin1');
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    if (this.partial.length > MAX_LINE_BYTES) {
      this.linesRejected++;
      this.deps.logger.warn({ bus: this.bus.id, bytes: this.partial.length }, 'stream line too long without newline; discarded');
      this.partial = '';
    }
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '').trim();
      if (line !== '') this.onLine(line);
    }
  }

  private onLine(line: string): void {
    const m = this.regex.exec(line);
    const at = { ts: this.deps.clock.wallMs(), mono: this.deps.clock.monoMs() };
    if (!m?.groups) {
      this.linesRejected++;
      this.deps.logger.warn({ bus: this.bus.id, line: line.slice(0, 120) }, 'stream line does not match pattern');
      return;
    }
    const samples = this.bus.points.map((p, i) => {
      const tracker = this.trackers[i]!;
      const text = m.groups![p.group];
      if (text === undefined || !NUMBER_TEXT.test(text.trim())) {
        const s = tracker.failed(`E_MODBUS_BAD_FRAME: group "${p.group}" is ${text === undefined ? 'missing' : `not a number ("${text}")`}`, at);
        return { ...s, quality: 'sensor_fault' as const };
      }
      // The text carries its own precision: scale it, trimming binary noise, but never round it to
      // the scale's decimals as a register count is (50.5 with scale 1 stays 50.5).
      const v = Number(text);
      return tracker.engineering(p.scale === 1 && p.offset === 0 ? v : Number((v * p.scale + p.offset).toPrecision(12)), at);
    });
    this.linesMatched++;
    this.armSilenceTimer();
    this.deps.onSamples(samples);
  }
}
