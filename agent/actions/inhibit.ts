/**
 * Maintenance inhibit: while a file exists, or a retained MQTT topic says so, actions are held back
 * (detection and publishing go on). The file is polled on the injected clock (inotify would miss a
 * file on a directory created later); the topic's payload is parsed here. Each change is reported
 * once through onChange, so the engine records inhibition on/off as events.
 */
import { existsSync } from 'node:fs';
import type { Clock, TimerHandle } from '../clock.js';

/** How often the inhibit file is looked at, ms. An action also looks at it right before it runs. */
export const INHIBIT_POLL_MS = 1000;

/** `on`, `true`, `1`, `yes` or JSON `{"inhibit": true}` inhibit; anything else (also empty: a cleared retained message) does not. */
export function parseInhibitPayload(payload: Buffer | string): boolean {
  const text = payload.toString().trim();
  if (text === '') return false;
  if (/^(on|true|1|yes)$/i.test(text)) return true;
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null && (v as { inhibit?: unknown }).inhibit === true;
  } catch {
    return false;
  }
}

export interface InhibitState {
  inhibited: boolean;
  /** Which sources say so: `file <path>`, `topic <topic>`. */
  sources: string[];
  /**
   * Sources whose state cannot be read now: `topic <topic>` until the engine's subscription to it
   * is in place (the broker was not reached since the start). Such a source does not inhibit; see
   * topicSubscribed().
   */
  unknown: string[];
}

export class Inhibit {
  private fileOn = false;
  private topicOn = false;
  /** The subscription to the topic was granted at least once since start (its retained state came with it). */
  private topicKnown = false;
  private timer: TimerHandle | undefined;
  private running = false;

  constructor(
    private readonly opts: { file?: string; topic?: string },
    private readonly clock: Clock,
    private readonly onChange: (s: InhibitState) => void,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.poll(true);
  }

  stop(): void {
    this.running = false;
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The current state, with the file looked at now (an action about to run must not miss a fresh file). */
  now(): InhibitState {
    this.checkFile();
    return this.state();
  }

  /**
   * The subscription to the inhibit topic was granted: from now on its state is known (the retained
   * message, if any, is delivered with the subscription; none means no inhibit).
   *
   * The choice while it is unknown (the broker unreachable since the start): actions are NOT held
   * back, and each action record says the inhibit state was unknown. A heating room wins over a
   * maintenance flag nobody can read; an operator who must be sure uses the inhibit file, which is
   * always readable. Once known, a state survives a lost connection: an `on` read before the broker
   * went away still holds actions back until the broker says otherwise.
   */
  topicSubscribed(): void {
    this.topicKnown = true;
  }

  /** A message on the inhibit topic (retained on subscribe, then every change). */
  topicMessage(payload: Buffer | string): void {
    const on = parseInhibitPayload(payload);
    if (on === this.topicOn) return;
    this.topicOn = on;
    this.onChange(this.state());
  }

  private state(): InhibitState {
    const sources: string[] = [];
    if (this.fileOn) sources.push(`file ${this.opts.file}`);
    if (this.topicOn) sources.push(`topic ${this.opts.topic}`);
    const unknown = this.opts.topic !== undefined && !this.topicKnown && !this.topicOn ? [`topic ${this.opts.topic}`] : [];
    return { inhibited: sources.length > 0, sources, unknown };
  }

  private checkFile(): void {
    if (this.opts.file === undefined) return;
    const on = existsSync(this.opts.file);
    if (on === this.fileOn) return;
    this.fileOn = on;
    this.onChange(this.state());
  }

  private poll(first = false): void {
    if (!this.running) return;
    if (!first || this.opts.file !== undefined) this.checkFile();
    if (this.opts.file === undefined) return;
    this.timer = this.clock.setTimeout(() => this.poll(), INHIBIT_POLL_MS);
  }
}
