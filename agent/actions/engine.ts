/**
 * The action engine (issue 8): turns the detector's zone events into the configured actions.
 *
 * - Incidents: one per zone episode, from the first level above normal back to normal. Its id is
 *   carried by every record. Persisted (incidents.ts) so an agent restart never re-runs an incident's
 *   actions.
 * - Once per incident per level, in order: when a zone reaches a level, the policies of that level,
 *   and of every lower level not yet handled in this incident, run in ascending level order (a zone
 *   that jumps to critical still sends the alarm's page before the critical's shutdown). Actions of
 *   a zone run one after the other; a failed action is recorded and the next one still runs. A zone
 *   that drops a level and rises again runs nothing twice. Back to normal runs the onClear hooks of
 *   the policies that fired, once.
 * - Safety gate (gate.ts): a critical level's actions need a zone_level event to critical with
 *   quorum from at least two good sensors, a zone that is not blind; zone_blind events trigger
 *   nothing. A refused critical level is not marked handled: a later critical event with quorum
 *   still fires it, and so does the detector's status reaching quorum while the zone stays critical
 *   (no new event comes then: gateRecheck).
 * - Dry run and maintenance inhibit hold actions back (recorded as `dry-run` / `inhibited`); they
 *   never touch detection or publishing. A held-back action is not replayed when the inhibit lifts:
 *   maintenance means people are on site and decide.
 * - Records: every attempt and result is an ActionEvent handed to `record` (app.ts appends it to the
 *   outbox, so MQTT and InfluxDB publish it) and logged.
 *
 * Why a listener of the agent's `detection` events and not an outbox consumer: the events arrive
 * live (never a replay of old ones, which is what could power a room down twice), the engine does not
 * wait for a group commit or depend on the outbox being writable (a failing sink never blocks the
 * others), and durability across restarts is the incident file's job, where "already handled" is
 * decided. Events older than MAX_EVENT_AGE_MS are refused all the same.
 */
import type { Logger } from 'pino';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { readFileSync } from 'node:fs';
import type { Clock, TimerHandle } from '../clock.js';
import type { ActionDef, ActionsConfig, HookDef } from '../config/actions-schema.js';
import type { ZoneDef } from '../config/model.js';
import type { MqttConfig } from '../config/outputs-schema.js';
import { levelRank, type DetectorEvent, type Level, type ZoneLevelEvent } from '../detection/types.js';
import { asError } from '../errors.js';
import type { ActionEvent } from '../outputs/events.js';
import { readCredential } from '../outputs/context.js';
import { LEAN_MQTT_OPTIONS } from '../outputs/mqtt-connection.js';
import type { Component } from '../component.js';
import { runExec } from './exec.js';
import { dueLevels } from './policy.js';
import { IncidentStore, newIncidentId, type IncidentState } from './incidents.js';
import { Inhibit, type InhibitState } from './inhibit.js';
import { runShutdown as defaultRunShutdown, type ShutdownDeps, type ShutdownReport } from './shutdown.js';
import { NAME_PATTERN } from './host-protocol.js';
import { TransportRegistry } from './transports.js';
import type { ActionContext, ActionResult } from './types.js';
import { runWebhook, safeUrl } from './webhook.js';
import { elapsedSince, readBootMark, type BootMark } from '../service/boot.js';

/** An event older than this (monotonic time since its evaluation) is never acted on. */
export const MAX_EVENT_AGE_MS = 2 * 60_000;
/**
 * An incident persisted by a previous run is resumed only if that run knew it open less than this
 * long ago; after a restart, one the detector keeps seeing normal for this long is closed (onClear).
 */
export const RESUME_WINDOW_MS = 10 * 60_000;
/** While incidents are open, their aliveTs is refreshed this often. */
const ALIVE_REFRESH_MS = 60_000;
/**
 * While a gated level is refused, the detector's current status is looked at this often (the detector
 * evaluates zones every second): a zone stays `critical` without a new event when quorum arrives later.
 */
export const GATE_RECHECK_MS = 1000;

export interface ActionEngineDeps {
  clock: Clock;
  logger: Logger;
  site: string;
  gateway: string;
  zones: readonly ZoneDef[];
  /** Hands an action record on (to the outbox). Must not throw; the engine logs every record itself. */
  record: (e: ActionEvent) => void;
  /** `rackguard run --dry-run`: dry run whatever the config says. */
  dryRun?: boolean;
  /** outputs.mqtt: the broker of the inhibit topic and of the host agents. */
  mqtt?: MqttConfig;
  /**
   * The detector's current view of a zone: to close, after a restart, an incident that ended meanwhile,
   * and to see a refused critical level reach quorum without a new event (evidence needed for that).
   */
  zoneStatus?: (zone: string) => { level: Level; blind: boolean; evidence?: ZoneLevelEvent['evidence'] } | undefined;
  /** False while the wall clock is not known to be right (a Pi without an RTC before NTP). Default: true. */
  clockSynced?: () => boolean;
  /** This boot's id and uptime (service/boot.ts); a seam for tests. */
  boot?: () => BootMark | undefined;
  /** Seams for tests. */
  runShutdown?: (ctx: ActionContext, deps: ShutdownDeps, signal: AbortSignal) => Promise<ShutdownReport>;
  connectMqtt?: (url: string, opts: IClientOptions) => MqttClient;
  env?: NodeJS.ProcessEnv;
}

type Record_ = Omit<ActionEvent, 'kind' | 'ts'>;

export class ActionEngine implements Component {
  readonly name = 'actions';
  private readonly store: IncidentStore;
  private readonly incidents = new Map<string, IncidentState>();
  private readonly blind = new Map<string, boolean>();
  /** Zones with an event since start (a resumed incident they belong to is live, not to be closed by the resume check). */
  private readonly seen = new Set<string>();
  private readonly chains = new Map<string, Promise<void>>();
  private readonly zoneK = new Map<string, number>();
  private readonly inhibit: Inhibit;
  private abort = new AbortController();
  private running = false;
  private aliveTimer: TimerHandle | undefined;
  private resumeTimer: TimerHandle | undefined;
  /** Zones with a level the gate refused (still due): re-judged on the detector's status until it passes or the incident ends. */
  private readonly gatePending = new Set<string>();
  private gateTimer: TimerHandle | undefined;
  private client: MqttClient | undefined;
  private transports: TransportRegistry | undefined;

  constructor(
    private readonly config: ActionsConfig,
    private readonly deps: ActionEngineDeps,
  ) {
    this.store = new IncidentStore(config.stateDir);
    for (const z of deps.zones) this.zoneK.set(z.id, z.detection.k);
    this.inhibit = new Inhibit({ ...(config.inhibit.file !== undefined ? { file: config.inhibit.file } : {}), ...(config.inhibit.mqttTopic !== undefined ? { topic: config.inhibit.mqttTopic } : {}) }, deps.clock, (s) => this.onInhibitChange(s));
  }

  get dryRun(): boolean {
    return this.deps.dryRun === true || this.config.dryRun;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.abort = new AbortController();
    this.loadIncidents();
    this.inhibit.start();
    this.connectMqtt();
    this.scheduleAlive();
    if (this.incidents.size > 0) this.resumeTimer = this.deps.clock.setTimeout(() => this.resumeCheck(), RESUME_WINDOW_MS);
    this.deps.logger.info({ policies: this.config.policies.length, dryRun: this.dryRun, open: [...this.incidents.keys()] }, this.dryRun ? 'actions ready (DRY RUN: nothing will be run)' : 'actions ready');
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    // Hooks in flight are killed (their process group), webhooks and the shutdown sequence stop waiting.
    this.abort.abort();
    this.inhibit.stop();
    this.deps.clock.clearTimeout(this.aliveTimer);
    this.deps.clock.clearTimeout(this.resumeTimer);
    this.deps.clock.clearTimeout(this.gateTimer);
    this.gateTimer = undefined;
    this.gatePending.clear();
    await Promise.allSettled([...this.chains.values()]);
    this.chains.clear();
    try {
      this.transports?.close();
    } catch (err) {
      this.deps.logger.warn({ err: asError(err).message }, 'closing host transports failed');
    }
    this.transports = undefined;
    const client = this.client;
    this.client = undefined;
    if (client) await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
  }

  /** A detector event (zone_level or zone_blind). Returns at once; actions run in the background. */
  onDetection(e: DetectorEvent): void {
    if (!this.running) return;
    try {
      this.judge(e);
    } catch (err) {
      // Called inside the agent's detection listeners: a bug here must not break detection,
      // publishing or the other listeners. Logged loudly; the next event is judged afresh.
      this.deps.logger.error({ zone: e.zone, event: e.kind, err: asError(err).message }, 'actions: judging a detector event failed');
    }
  }

  private judge(e: DetectorEvent): void {
    // Monotonic: a wall-clock step (NTP on a Pi without an RTC, weeks at a time) between the evaluation
    // and this moment must neither make a fresh event look weeks old nor an old one fresh.
    const ageMs = this.deps.clock.monoMs() - e.mono;
    if (ageMs > MAX_EVENT_AGE_MS) {
      this.deps.logger.warn({ zone: e.zone, event: e.kind, ageMs }, 'detector event too old to act on; ignored');
      return;
    }
    if (e.kind === 'zone_blind') {
      // Never a trigger: only remembered, so that the gate refuses critical actions while blind.
      this.blind.set(e.zone, e.blind);
      return;
    }
    this.seen.add(e.zone);
    if (e.level === 'normal') this.clear(e);
    else this.escalate(e);
  }

  /**
   * A configuration reload (Agent.reload) rebuilt the detector state of `rebuilt` zones
   * (Detector.adopt): their new zone machines start normal and not blind, and emit nothing until
   * they change. Without this, an open incident of such a zone would never see its `normal` event and
   * stay open for ever, and the next real failure there would find every level already handled (no
   * action at all); a `blind` remembered from before would refuse critical actions for ever. So: the
   * blind flag is forgotten (the new machine reports blindness itself), and the zone's incident is
   * handled as after a restart: it goes on if the zone escalates again (nothing is repeated), and it
   * is closed if the zone stays normal for RESUME_WINDOW_MS. A zone the reload removed is closed
   * the same way (the detector no longer knows it).
   */
  adoptZones(zones: readonly ZoneDef[], rebuilt: readonly string[]): void {
    this.zoneK.clear();
    for (const z of zones) this.zoneK.set(z.id, z.detection.k);
    const known = new Set(zones.map((z) => z.id));
    let pending = false;
    for (const zone of new Set([...rebuilt, ...[...this.incidents.keys()].filter((z) => !known.has(z))])) {
      this.blind.delete(zone);
      this.seen.delete(zone);
      if (this.incidents.has(zone)) pending = true;
    }
    if (!pending || !this.running) return;
    this.deps.clock.clearTimeout(this.resumeTimer);
    this.resumeTimer = this.deps.clock.setTimeout(() => this.resumeCheck(), RESUME_WINDOW_MS);
  }

  /** The open incident of each zone (for the status of tests and the drill). */
  openIncidents(): IncidentState[] {
    return [...this.incidents.values()].map((i) => ({ ...i, handled: [...i.handled], ...(i.completed ? { completed: [...i.completed] } : {}), fired: [...i.fired] }));
  }

  // --- incidents ---------------------------------------------------------------------------------

  private loadIncidents(): void {
    this.incidents.clear();
    let loaded: IncidentState[] = [];
    try {
      loaded = this.store.load();
    } catch (err) {
      // Starting empty may run an incident's actions again; not acting at all could cook a room.
      this.deps.logger.error({ err: asError(err).message }, 'actions: incident state unreadable; starting without it');
      this.emit({ action: 'incident', status: 'failed', message: asError(err).message });
    }
    const now = this.deps.clock.wallMs();
    const boot = this.bootMark();
    const clockSynced = this.deps.clockSynced?.() ?? true;
    let dropped = this.store.dropped.length > 0;
    for (const id of this.store.dropped) {
      this.emit({ action: 'incident', status: 'failed', message: `incident state ${this.store.path}: malformed entry ${id} dropped (a new escalation of its zone is a new incident)` });
    }
    for (const inc of loaded) {
      // How long the agent was down: exact within one boot (uptime); after a reboot only a synchronised
      // wall clock tells, since a Pi without an RTC restores a saved time (a power cut of hours would
      // look like seconds, and the old incident would hold back the actions of a new failure).
      const downMs = elapsedSince({ wallMs: inc.aliveTs, ...(inc.aliveBoot ? { boot: inc.aliveBoot } : {}) }, { wallMs: now, ...(boot ? { boot } : {}), clockSynced });
      if (downMs === undefined || downMs > RESUME_WINDOW_MS) {
        dropped = true;
        const why =
          downMs === undefined
            ? 'the agent restarted after a reboot (or a clock step) with a wall clock not known to be synchronised, so how long it was down is unknown'
            : `the agent was down for longer than ${RESUME_WINDOW_MS / 60_000} min`;
        this.emit({ action: 'incident', status: 'closed', zone: inc.zone, incident: inc.id, message: `incident ${inc.id} closed: ${why}; a new escalation is a new incident`, detail: { downMs: downMs ?? null } });
        continue;
      }
      // Levels cut short by the stop or crash are due again (IncidentState.completed).
      // A file from before `completed` existed: every handled level counts as completed (set it now,
      // or the first level completed later would make the older ones look interrupted).
      inc.completed ??= [...inc.handled];
      const interrupted = inc.handled.filter((l) => !inc.completed!.includes(l));
      if (interrupted.length > 0) {
        inc.handled = inc.handled.filter((l) => !interrupted.includes(l));
        dropped = true;
      }
      this.incidents.set(inc.zone, inc);
      const note = interrupted.length > 0 ? `; interrupted before their end, due again if the zone reaches them again: ${interrupted.join(', ')}` : '';
      this.emit({ action: 'incident', status: 'resumed', zone: inc.zone, incident: inc.id, message: `incident ${inc.id} resumed after a restart (levels already handled: ${inc.handled.join(', ') || 'none'}${note})`, detail: { handled: inc.handled, highest: inc.highest, interrupted } });
    }
    if (dropped) this.save();
  }

  private save(): void {
    try {
      this.store.save([...this.incidents.values()]);
    } catch (err) {
      this.deps.logger.error({ err: asError(err).message }, 'actions: cannot persist incident state (a restart could repeat actions)');
    }
  }

  private bootMark(): BootMark | undefined {
    return (this.deps.boot ?? readBootMark)();
  }

  private markAlive(inc: IncidentState, wallMs: number, boot: BootMark | undefined): void {
    inc.aliveTs = wallMs;
    if (boot) inc.aliveBoot = boot;
    else delete inc.aliveBoot;
  }

  private scheduleAlive(): void {
    this.aliveTimer = this.deps.clock.setTimeout(() => {
      if (!this.running) return;
      if (this.incidents.size > 0) {
        const now = this.deps.clock.wallMs();
        const boot = this.bootMark();
        for (const i of this.incidents.values()) this.markAlive(i, now, boot);
        this.save();
      }
      this.scheduleAlive();
    }, ALIVE_REFRESH_MS);
  }

  /** After a restart or a reload that rebuilt a zone: an incident whose zone the detector has seen normal all along since is over. */
  private resumeCheck(): void {
    if (!this.running) return;
    for (const inc of [...this.incidents.values()]) {
      if (this.seen.has(inc.zone)) continue;
      const st = this.deps.zoneStatus?.(inc.zone);
      if (st && (st.level !== 'normal' || st.blind)) continue;
      this.closeIncident(inc, `zone ${inc.zone} normal for ${RESUME_WINDOW_MS / 60_000} min since the restart or reload`, this.deps.clock.wallMs());
    }
  }

  /** `recheck`: a re-judgement of a refused level on the detector's status (no record when refused again). */
  private escalate(e: ZoneLevelEvent, recheck = false): void {
    let inc = this.incidents.get(e.zone);
    if (!inc) {
      inc = { id: newIncidentId(e.zone, e.ts), zone: e.zone, startedTs: e.ts, highest: e.level, handled: [], completed: [], fired: [], aliveTs: this.deps.clock.wallMs() };
      this.markAlive(inc, inc.aliveTs, this.bootMark());
      this.incidents.set(e.zone, inc);
      this.emit({ action: 'incident', status: 'opened', zone: e.zone, incident: inc.id, message: `incident ${inc.id} opened: zone ${e.zone} ${e.level}: ${e.reason}` });
    } else if (levelRank(e.level) > levelRank(inc.highest)) {
      this.emit({ action: 'incident', status: 'escalated', zone: e.zone, incident: inc.id, message: `incident ${inc.id}: zone ${e.zone} ${inc.highest} → ${e.level}: ${e.reason}` });
    }
    if (levelRank(e.level) > levelRank(inc.highest)) inc.highest = e.level;
    this.markAlive(inc, this.deps.clock.wallMs(), this.bootMark());

    const runs: Array<{ level: Level; policies: number[] }> = [];
    let refused = false;
    for (const due of dueLevels(this.config, inc.handled, e, this.zoneK.get(e.zone) ?? e.evidence.k, this.blind.get(e.zone) === true)) {
      if (due.refused !== undefined) {
        // Not marked handled: a later critical event that meets the gate still fires these actions,
        // and so does the detector's status reaching quorum without a new event (gateRecheck).
        refused = true;
        if (recheck) continue;
        for (const pi of due.policies) {
          for (const a of this.config.policies[pi]!.actions) {
            this.emit({ action: a.name, status: 'skipped', zone: e.zone, incident: inc.id, message: `${a.name} not run: safety gate: ${due.refused}`, detail: { level: due.level, kind: a.kind, gate: due.refused } });
          }
        }
        continue;
      }
      inc.handled.push(due.level);
      for (const pi of due.policies) if (!inc.fired.includes(pi)) inc.fired.push(pi);
      runs.push({ level: due.level, policies: due.policies });
    }
    if (refused) this.gatePending.add(e.zone);
    else this.gatePending.delete(e.zone);
    this.scheduleGateRecheck();
    if (recheck && runs.length === 0) return;
    // Persisted before anything starts: a crash from here on never repeats these levels.
    this.save();
    const incident = inc;
    for (const r of runs) {
      const ctx = this.context(incident, r.level, e);
      this.enqueue(e.zone, async () => {
        await this.runPolicies(r.policies, ctx, incident);
        // Cut short by a stop: not completed, so a restart finds this level due again.
        if (this.abort.signal.aborted) return;
        (incident.completed ??= []).push(r.level);
        if (this.incidents.get(incident.zone) === incident) this.save();
      });
    }
  }

  private scheduleGateRecheck(): void {
    if (this.gatePending.size === 0 || this.gateTimer !== undefined || !this.running || !this.deps.zoneStatus) return;
    this.gateTimer = this.deps.clock.setTimeout(() => {
      this.gateTimer = undefined;
      this.gateRecheck();
    }, GATE_RECHECK_MS);
  }

  /**
   * A refused level, judged again on the detector's current status: the same gate (quorum of good
   * sensors in the status's own evidence, not blind), only while the zone is still at that level.
   * The detector emits zone_level events on level changes only, so without this a zone that went
   * critical on one sensor and is then confirmed by a second would never run its critical actions.
   */
  private gateRecheck(): void {
    if (!this.running) return;
    for (const zone of [...this.gatePending]) {
      const inc = this.incidents.get(zone);
      const st = this.deps.zoneStatus?.(zone);
      if (!inc || !st?.evidence) {
        this.gatePending.delete(zone);
        continue;
      }
      if (st.level === 'normal') continue;
      const e: ZoneLevelEvent = { kind: 'zone_level', zone, from: st.level, level: st.level, reason: `zone ${zone} ${st.level}, quorum re-checked on the detector's current status`, mono: this.deps.clock.monoMs(), ts: this.deps.clock.wallMs(), evidence: st.evidence };
      // blind from the status too: the engine's own flag may lag a zone_blind event.
      const wasBlind = this.blind.get(zone);
      if (st.blind) this.blind.set(zone, true);
      try {
        this.escalate(e, true);
      } finally {
        if (st.blind && wasBlind !== true) this.blind.set(zone, wasBlind ?? false);
      }
    }
    this.scheduleGateRecheck();
  }

  private clear(e: ZoneLevelEvent): void {
    const inc = this.incidents.get(e.zone);
    if (!inc) return;
    this.closeIncident(inc, e.reason, e.ts);
  }

  private closeIncident(inc: IncidentState, reason: string, ts: number): void {
    this.incidents.delete(inc.zone);
    this.gatePending.delete(inc.zone);
    this.save();
    this.emit({ action: 'incident', status: 'cleared', zone: inc.zone, incident: inc.id, message: `incident ${inc.id} cleared: ${reason}`, detail: { highest: inc.highest, handled: inc.handled } });
    const hooks: HookDef[] = inc.fired.flatMap((pi) => this.config.policies[pi]?.onClear ?? []);
    if (hooks.length === 0) return;
    const ctx: ActionContext = { incident: inc.id, zone: inc.zone, level: 'normal', etaS: null, reason, ts, dryRun: this.dryRun };
    this.enqueue(inc.zone, async () => {
      for (const h of hooks) await this.runOne(h, ctx, inc, { status: 'resolved', firingLevel: inc.highest });
    });
  }

  private context(inc: IncidentState, level: Level, e: ZoneLevelEvent): ActionContext {
    return { incident: inc.id, zone: e.zone, level, etaS: e.evidence.etaCriticalS, reason: e.reason, ts: e.ts, dryRun: this.dryRun };
  }

  private enqueue(zone: string, work: () => Promise<void>): void {
    const prev = this.chains.get(zone) ?? Promise.resolve();
    const next = prev.then(work).catch((err: unknown) => {
      this.deps.logger.error({ zone, err: asError(err).message }, 'actions: unexpected error');
    });
    this.chains.set(zone, next);
    void next.then(() => {
      if (this.chains.get(zone) === next) this.chains.delete(zone);
    });
  }

  // --- running ---------------------------------------------------------------------------------

  private async runPolicies(policies: number[], ctx: ActionContext, inc: IncidentState): Promise<void> {
    for (const pi of policies) {
      for (const a of this.config.policies[pi]!.actions) {
        if (this.abort.signal.aborted) return;
        await this.runOne(a, ctx, inc, { status: 'firing' });
      }
    }
  }

  /** One action: held back (inhibit, dry run) or run, with its records. Never throws. */
  private async runOne(a: ActionDef, ctx: ActionContext, inc: IncidentState, opts: { status: 'firing' | 'resolved'; firingLevel?: Level }): Promise<void> {
    const base = { action: a.name, zone: ctx.zone, incident: ctx.incident };
    const inh = this.inhibit.now();
    if (inh.inhibited) {
      this.emit({ ...base, status: 'inhibited', message: `${a.name} held back by maintenance inhibit (${inh.sources.join(', ')})`, detail: { kind: a.kind, level: ctx.level, sources: inh.sources } });
      return;
    }
    // The inhibit topic could not be read (broker unreachable since the start): the action runs, and says so.
    const unknown = inh.unknown.length > 0 ? { inhibitUnknown: inh.unknown } : {};
    const unknownNote = inh.unknown.length > 0 ? ` (maintenance inhibit unknown: ${inh.unknown.join(', ')} not readable, broker unreachable; acting)` : '';
    if (ctx.dryRun) {
      this.emit({ ...base, status: 'dry-run', message: `${a.name} would run now (dry run): ${describe(a)}${unknownNote}`, detail: { kind: a.kind, level: ctx.level, ...unknown } });
      // The shutdown coordinator in dry run asks hosts to confirm only: the trail shows what would happen.
      if (a.kind === 'shutdown') await this.shutdown(ctx);
      return;
    }
    this.emit({ ...base, status: 'started', message: `${a.name} started: ${describe(a)}${unknownNote}`, detail: { kind: a.kind, level: ctx.level, ...unknown } });
    if (a.kind === 'shutdown') {
      const report = await this.shutdown(ctx);
      const status = report.aborted ? 'failed' : report.inhibited ? 'inhibited' : 'succeeded';
      const message = report.aborted ? `${a.name}: sequence aborted (the agent is stopping)` : report.inhibited ? `${a.name}: sequence stopped before ${report.inhibited.step} by maintenance inhibit (${report.inhibited.sources})` : `${a.name}: sequence complete`;
      this.emit({ ...base, status, message, detail: { kind: 'shutdown', groups: report.groups.map((g) => ({ name: g.name, hosts: g.hosts.map((h) => ({ host: h.host, status: h.status })) })) } });
      return;
    }
    const r = await this.runHook(a, ctx, { ...opts, startsAtMs: inc.startedTs });
    this.emit({ ...base, status: r.status, message: r.message, detail: { kind: a.kind, level: ctx.level, durationMs: r.durationMs, ...r.detail } });
  }

  /** An exec or http hook (also the shutdown coordinator's failover and final hooks). Honours ctx.dryRun; does not record. */
  private runHook(h: HookDef, ctx: ActionContext, opts: { status?: 'firing' | 'resolved'; firingLevel?: Level; startsAtMs?: number } = {}): Promise<ActionResult> {
    if (ctx.dryRun) return Promise.resolve({ status: 'dry-run', message: `${h.name} would run now (dry run): ${describe(h)}`, durationMs: 0, detail: {} });
    const extra = { site: this.deps.site, gateway: this.deps.gateway };
    if (h.kind === 'exec') return runExec(h, ctx, { clock: this.deps.clock, signal: this.abort.signal, extra });
    return runWebhook(h, opts.firingLevel ? { ...ctx, level: opts.firingLevel } : ctx, {
      clock: this.deps.clock,
      signal: this.abort.signal,
      site: this.deps.site,
      gateway: this.deps.gateway,
      extra,
      ...(opts.status ? { status: opts.status } : {}),
      ...(opts.startsAtMs !== undefined ? { startsAtMs: opts.startsAtMs } : {}),
    });
  }

  private async shutdown(ctx: ActionContext): Promise<ShutdownReport> {
    const config = this.config.shutdown;
    if (!config) throw new Error('shutdown action without actions.shutdown (refused at load)');
    this.transports ??= new TransportRegistry(
      { logger: this.deps.logger.child({ part: 'hosts' }), clock: this.deps.clock, gateway: commandGatewayName(this.deps.site, this.deps.gateway), stateDir: this.config.stateDir, hostsBaseTopic: this.config.hostsBaseTopic, ...(this.client ? { mqtt: this.client } : {}) },
      { commandTtlS: config.commandTtlS },
    );
    const run = this.deps.runShutdown ?? defaultRunShutdown;
    try {
      return await run(
        ctx,
        {
          config,
          transports: this.transports,
          runHook: (h, c) => this.runHook(h, c),
          record: (r) => this.emit(r),
          held: () => {
            const inh = this.inhibit.now();
            return inh.inhibited ? inh.sources.join(', ') : undefined;
          },
          clock: this.deps.clock,
          logger: this.deps.logger.child({ part: 'shutdown' }),
        },
        this.abort.signal,
      );
    } catch (err) {
      this.emit({ action: 'shutdown', status: 'failed', zone: ctx.zone, incident: ctx.incident, message: `shutdown coordinator failed: ${asError(err).message}` });
      return { groups: [], failover: [], final: [], aborted: true };
    }
  }

  // --- inhibit and records -----------------------------------------------------------------------

  private onInhibitChange(s: InhibitState): void {
    this.emit({ action: 'inhibit', status: s.inhibited ? 'on' : 'off', message: s.inhibited ? `maintenance inhibit on (${s.sources.join(', ')}): actions are held back` : 'maintenance inhibit off: actions run again', detail: { sources: s.sources } });
  }

  /** The broker connection for the inhibit topic and the host agents (only when one of them is configured). */
  private connectMqtt(): void {
    const m = this.deps.mqtt;
    const needsHosts = this.config.shutdown?.groups.some((g) => g.hosts.some((h) => h.via === 'agent')) ?? false;
    const topic = this.config.inhibit.mqttTopic;
    if (!m || (!topic && !needsHosts)) return;
    const env = this.deps.env ?? process.env;
    let opts: IClientOptions;
    try {
      const username = readCredential(m.usernameFile, 'RACKGUARD_MQTT_USERNAME', env);
      const password = readCredential(m.passwordFile, 'RACKGUARD_MQTT_PASSWORD', env);
      opts = {
        ...LEAN_MQTT_OPTIONS,
        // Its own client id: the sink's persistent session must not be taken over.
        clientId: `${m.clientId ?? `rackguard-${this.deps.site}-${this.deps.gateway}`}-actions`.slice(0, 128),
        protocolVersion: m.protocolVersion,
        clean: true,
        keepalive: m.keepaliveS,
        reconnectPeriod: 2000,
        connectTimeout: m.publishTimeoutMs,
        queueQoSZero: false,
        ...(username !== undefined ? { username } : {}),
        ...(password !== undefined ? { password } : {}),
        ...(m.ca ? { ca: readFileSync(m.ca) } : {}),
        ...(m.cert ? { cert: readFileSync(m.cert) } : {}),
        ...(m.key ? { key: readFileSync(m.key) } : {}),
      };
    } catch (err) {
      this.deps.logger.error({ err: asError(err).message }, 'actions: cannot prepare the MQTT connection (inhibit topic and host agents unavailable)');
      return;
    }
    const client = (this.deps.connectMqtt ?? mqtt.connect)(m.url, opts);
    this.client = client;
    client.on('error', (err) => this.deps.logger.warn({ err: err.message }, 'actions: MQTT error'));
    client.on('connect', () => {
      // An unknown inhibit state (broker down) does not block actions (Inhibit.topicSubscribed says
      // why); the retained message arrives with the subscription.
      if (topic) {
        client.subscribe(topic, { qos: 1 }, (err, granted) => {
          if (err || granted?.some((g) => g.qos >= 128)) this.deps.logger.error({ err: err?.message ?? 'subscription refused by the broker', topic }, 'actions: cannot subscribe to the inhibit topic');
          else this.inhibit.topicSubscribed();
        });
      }
    });
    if (topic) client.on('message', (t, payload) => t === topic && this.inhibit.topicMessage(payload));
  }

  private emit(r: Record_): void {
    const ev: ActionEvent = { kind: 'action', ts: this.deps.clock.wallMs(), ...r };
    const level = r.status === 'failed' || r.status === 'timeout' ? 'error' : r.status === 'skipped' || r.status === 'inhibited' || r.status === 'on' ? 'warn' : 'info';
    this.deps.logger[level]({ action: r.action, status: r.status, zone: r.zone, incident: r.incident, ...(r.detail ? { detail: r.detail } : {}) }, `action ${r.action} ${r.status}: ${r.message}`);
    try {
      this.deps.record(ev);
    } catch (err) {
      this.deps.logger.error({ err: asError(err).message }, 'actions: recording an action event failed');
    }
  }
}

/** One line saying what an action does, for records and the drill (no secrets: no headers, no env values). */
export function describe(a: ActionDef): string {
  if (a.kind === 'exec') return `exec ${a.argv.map((s) => JSON.stringify(s)).join(' ')} (timeout ${a.timeoutS} s)`;
  if (a.kind === 'http') return `POST ${safeUrl(a.url)} (${a.format}, timeout ${a.timeoutS} s, ${a.retries} retries${a.hmacSecretFile ? ', signed' : ''})`;
  return 'coordinated shutdown (failover, host groups, final hooks)';
}

/**
 * The sender named in host commands. It is a topic level for the host agent (NAME_PATTERN: no `/`),
 * so site and gateway are joined with a dot; a pair too long for a name falls back to the gateway.
 */
export function commandGatewayName(site: string, gateway: string): string {
  const joined = `${site}.${gateway}`;
  return NAME_PATTERN.test(joined) ? joined : gateway;
}
