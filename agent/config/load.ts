/**
 * Loads, validates and resolves the configuration. Every problem is collected and reported at once,
 * each with its path (`buses[0].devices[2].points[1].type: expected one of …`); nothing starts on a
 * bad config. Schema errors come first; cross-reference checks (ids, units, zones) run once the
 * shapes are right, because they cannot be trusted on a malformed tree.
 */
import { statSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';
import { RackguardError } from '../errors.js';
import { bundledProfilesDir } from '../paths.js';
import { resolveActions } from './actions-check.js';
import { humanDuration } from './durations.js';
import { configFileChecker, fileProblem, FileReadError, MAX_CONFIG_FILE_BYTES, MAX_CREDENTIAL_FILE_BYTES, readRegularFile } from './read-file.js';
import { DETECTION_DEFAULTS, configSchema, profileSchema, type DetectionParams, type ParsedConfig, type Profile, type ModbusPointConfig } from './schema.js';
import {
  defaultInterFrameGapMs,
  type BusDef,
  type Config,
  type DeviceDef,
  type ModbusPointDef,
  type PointDef,
  type StreamPointDef,
  type ZoneDef,
} from './model.js';

export class ConfigError extends RackguardError {
  readonly problems: string[];
  constructor(source: string, problems: string[]) {
    super('E_CONFIG_INVALID', `${source}: invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ${problems.join('\n  ')}`);
    this.problems = problems;
  }
}

export interface LoadOptions {
  /** Directories searched for `<profile>.yaml`, before the bundled config/profiles. */
  profileDirs?: string[];
}

/**
 * Reads and parses a configuration file. Only a regular file of at most 1 MiB is read (a FIFO, a
 * device such as /dev/zero or a directory is refused without blocking): `E_CONFIG_READ`, naming the file.
 */
export function loadConfigFile(file: string, opts: LoadOptions = {}): Config {
  let text: string;
  try {
    text = readRegularFile(file, MAX_CONFIG_FILE_BYTES);
  } catch (err) {
    throw new RackguardError('E_CONFIG_READ', `${file}: cannot read configuration: ${(err as Error).message}`, { cause: err });
  }
  return parseConfig(text, file, { ...opts, baseDir: dirname(resolve(file)) });
}

/**
 * Parses, validates and resolves a configuration text. Throws `ConfigError` (`E_CONFIG_INVALID`)
 * listing every problem found; returns a deep-frozen `Config` otherwise.
 * `source` names the text in messages; `baseDir` resolves a relative `profilesDir` (default: cwd).
 */
export function parseConfig(text: string, source: string, opts: LoadOptions & { baseDir?: string } = {}): Config {
  const raw = parseYaml(text, source);
  if (raw === null || raw === undefined) throw new ConfigError(source, ['(root): the file is empty; expected a mapping with at least version and buses']);
  // reportInput: the messages quote what was found ("got \"int12\""), not only what was expected.
  const parsed = configSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) throw new ConfigError(source, formatIssues(parsed.error.issues));
  const problems: string[] = [];
  const dirs = [...(opts.profileDirs ?? [])];
  if (parsed.data.profilesDir) {
    const dir = isAbsolute(parsed.data.profilesDir) ? parsed.data.profilesDir : join(opts.baseDir ?? process.cwd(), parsed.data.profilesDir);
    const problem = directoryProblem(dir);
    // A file or a missing directory there is a typo: profiles would silently come from elsewhere.
    if (problem) problems.push(`profilesDir: ${dir} ${problem}`);
    else dirs.push(dir);
  }
  dirs.push(bundledProfilesDir());
  const config = resolveConfig(parsed.data, source, new ProfileStore(dirs), problems);
  if (config.outputs) config.outputs = resolveOutputs(config.outputs, opts.baseDir ?? process.cwd(), problems);
  if (config.http) config.http = resolveHttp(config.http, opts.baseDir ?? process.cwd(), problems);
  if (config.actions) {
    config.actions = resolveActions(config.actions, { zoneIds: new Set(config.zones.map((z) => z.id)), zoneSensors: new Map(config.zones.map((z) => [z.id, z.sensors.length])), hasMqtt: config.outputs?.mqtt !== undefined, baseDir: opts.baseDir ?? process.cwd() }, problems);
  }
  if (problems.length > 0) throw new ConfigError(source, problems);
  return deepFreeze(config);
}

/** Why `dir` cannot be searched for profiles, or undefined when it can. */
function directoryProblem(dir: string): string | undefined {
  try {
    const st = statSync(dir);
    return st.isDirectory() ? undefined : 'is not a directory';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be read: ${fileProblem(err)}`;
  }
}

/** At most this many YAML syntax errors are listed: a megabyte of garbage must not print 100,000 lines. */
const MAX_LISTED_YAML_ERRORS = 20;

/**
 * YAML text to plain data, or the problems (one line each, with line and column). Never throws for a
 * bad document: an alias bomb (yaml's maxAliasCount guard throws a ReferenceError from toJS) and a
 * nesting too deep for the parser's stack become problems, so that the caller names the file.
 */
export function yamlToData(text: string): { ok: true; data: unknown } | { ok: false; problems: string[] } {
  // prettyErrors would append the position and a source excerpt to each message; we want one line
  // per problem, so positions come from a LineCounter instead (yaml sets no linePos without prettyErrors).
  // (prettyErrors is also what turned a deeply nested document into an out-of-memory abort.)
  const lineCounter = new LineCounter();
  try {
    const doc = parseDocument(text, { prettyErrors: false, lineCounter });
    if (doc.errors.length > 0) {
      const problems = doc.errors.slice(0, MAX_LISTED_YAML_ERRORS).map((e) => {
        const pos = lineCounter.linePos(e.pos[0]);
        return `line ${Math.max(pos.line, 1)}, column ${pos.col}: ${e.message.split('\n')[0]}`;
      });
      if (doc.errors.length > MAX_LISTED_YAML_ERRORS) problems.push(`… and ${doc.errors.length - MAX_LISTED_YAML_ERRORS} more YAML errors`);
      return { ok: false, problems };
    }
    return { ok: true, data: doc.toJS() };
  } catch (err) {
    // "Excessive alias count indicates a resource exhaustion attack", "Maximum call stack size exceeded".
    return { ok: false, problems: [`(root): the YAML cannot be loaded: ${(err as Error).message.split('\n')[0]}`] };
  }
}

function parseYaml(text: string, source: string): unknown {
  const r = yamlToData(text);
  if (!r.ok) throw new ConfigError(source, r.problems);
  return r.data;
}

/** `['buses', 0, 'devices', 2]` → `buses[0].devices[2]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out || '(root)';
}

/** What was found, in YAML terms: `"300"` (a string), `300`, `a list`, `a mapping`, `null`. */
function describeReceived(input: unknown): string {
  if (input === undefined) return 'nothing';
  if (input === null) return 'null (an empty value)';
  if (Array.isArray(input)) return 'a list';
  if (typeof input === 'object') return 'a mapping';
  if (typeof input === 'string') return JSON.stringify(input);
  return String(input);
}

/** zod's type names in YAML terms. */
const TYPE_NAMES: Record<string, string> = {
  number: 'a number',
  int: 'an integer',
  string: 'a string',
  boolean: 'true or false',
  array: 'a list',
  object: 'a mapping',
};

function expectedType(expected: string): string {
  return TYPE_NAMES[expected] ?? expected;
}

/** What zod saw, when the issue carries it: `{ reportInput: true }` adds an `input` key, even if undefined. */
type Seen = { known: false } | { known: true; input: unknown };

function seen(issue: object, pick: (input: unknown) => unknown = (i) => i): Seen {
  return 'input' in issue ? { known: true, input: pick((issue as { input: unknown }).input) } : { known: false };
}

function got(s: Seen): string {
  return s.known ? `, got ${describeReceived(s.input)}` : '';
}

/** `expected X, got Y`, or `required, expected X` when the field is absent. */
function expectedGot(where: string, expected: string, s: Seen): string {
  if (!s.known) return `${where}: expected ${expected}`;
  return s.input === undefined ? `${where}: required, expected ${expected}` : `${where}: expected ${expected}${got(s)}`;
}

function oneOf(values: readonly unknown[]): string {
  return values.length === 1 ? JSON.stringify(values[0]) : `one of ${values.map(String).join(', ')}`;
}

/** Issues nested in a union branch carry paths relative to the union; make them absolute. */
function prefixed(prefix: readonly PropertyKey[], issues: readonly z.core.$ZodIssue[]): z.core.$ZodIssue[] {
  return issues.map((i) => ({ ...i, path: [...prefix, ...i.path] }) as z.core.$ZodIssue);
}

/** Milliseconds per unit of a duration field, known by its name (`…Ms`, `…S`); undefined for other fields. */
export function durationUnitMs(path: readonly PropertyKey[]): number | undefined {
  const key = path[path.length - 1];
  if (typeof key !== 'string') return undefined;
  if (/[a-z0-9]Ms$/.test(key)) return 1;
  if (/[a-z0-9]S$/.test(key)) return 1000;
  return undefined;
}

/**
 * One line per zod issue, `<path>: <problem>`, in YAML terms. Parse with `{ reportInput: true }` so
 * that the messages can say what was found.
 */
export function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  const out: string[] = [];
  for (const issue of issues) {
    const where = formatPath(issue.path);
    const input = seen(issue);
    switch (issue.code) {
      case 'invalid_value':
        out.push(expectedGot(where, oneOf(issue.values), input));
        break;
      case 'invalid_type': {
        const v = input.known ? input.input : undefined;
        const quotedNumber = (issue.expected === 'number' || issue.expected === 'int') && typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v));
        out.push(expectedGot(where, expectedType(issue.expected), input) + (quotedNumber ? ' (a string: remove the quotes)' : ''));
        break;
      }
      case 'invalid_format':
        // Our only string formats are regexes with a message of their own (ids).
        out.push(`${where}: ${issue.message}${got(input)}`);
        break;
      case 'unrecognized_keys':
        for (const k of issue.keys) out.push(`${formatPath([...issue.path, k])}: unknown field`);
        break;
      case 'too_small':
        out.push(
          issue.origin === 'array'
            ? `${where}: needs at least ${String(issue.minimum)} item${issue.minimum === 1 ? '' : 's'}`
            : issue.origin === 'string'
              ? `${where}: must not be empty`
              : `${where}: must be ${issue.inclusive ? '≥' : '>'} ${String(issue.minimum)}${got(input)}`,
        );
        break;
      case 'too_big': {
        // A duration's limit also in words: "must be at most 86400000 (1 day)".
        const unit = durationUnitMs(issue.path);
        out.push(
          unit !== undefined && issue.inclusive
            ? `${where}: must be at most ${String(issue.maximum)} (${humanDuration(Number(issue.maximum) * unit)})${got(input)}`
            : `${where}: must be ${issue.inclusive ? '≤' : '<'} ${String(issue.maximum)}${got(input)}`,
        );
        break;
      }
      case 'invalid_union': {
        const disc = issue as { note?: string; discriminator?: string; options?: unknown[] };
        if (disc.note === 'No matching discriminator' && disc.discriminator !== undefined) {
          // The issue's path already ends with the discriminator; its input is the whole mapping.
          const key = disc.discriminator;
          out.push(expectedGot(where, oneOf(disc.options ?? []), seen(issue, (i) => (i as Record<string, unknown> | undefined)?.[key])));
          break;
        }
        const branches = issue.errors.map((branch) => prefixed(issue.path, branch));
        const all = branches.flat();
        if (all.length > 0 && all.every((i) => i.code === 'invalid_value' && i.path.length === issue.path.length)) {
          // A union of literals (dataBits: 7 | 8): one message listing every allowed value.
          out.push(expectedGot(where, oneOf(all.flatMap((i) => (i.code === 'invalid_value' ? i.values : []))), input));
        } else {
          out.push(...new Set(formatIssues(all)));
        }
        break;
      }
      default:
        out.push(`${where}: ${issue.message}`);
    }
  }
  return out;
}

class ProfileStore {
  private cache = new Map<string, Profile | string>();
  constructor(private readonly dirs: string[]) {}

  /** The profile, or a message saying why it cannot be had. */
  get(name: string): Profile | string {
    let hit = this.cache.get(name);
    if (hit === undefined) {
      hit = this.load(name);
      this.cache.set(name, hit);
    }
    return hit;
  }

  private load(name: string): Profile | string {
    if (!/^[A-Za-z0-9_.-]+$/.test(name) || name.includes('..')) return `invalid profile name "${name}"`;
    for (const dir of this.dirs) {
      const file = join(dir, `${name}.yaml`);
      let text: string;
      try {
        // The same rules as the configuration itself: a regular file of at most 1 MiB, no blocking.
        text = readRegularFile(file, MAX_CONFIG_FILE_BYTES);
      } catch (err) {
        if (err instanceof FileReadError && err.code === 'ENOENT') continue;
        return `profile "${name}" (${file}) cannot be read: ${err instanceof FileReadError ? err.message : String(err)}`;
      }
      const yaml = yamlToData(text);
      if (!yaml.ok) return `profile "${name}" (${file}) is not valid YAML: ${yaml.problems.join('; ')}`;
      const raw = yaml.data;
      const parsed = profileSchema.safeParse(raw, { reportInput: true });
      if (!parsed.success) return `profile "${name}" (${file}) is invalid: ${formatIssues(parsed.error.issues).join('; ')}`;
      return parsed.data;
    }
    return `unknown profile "${name}" (looked in ${this.dirs.join(', ')})`;
  }
}

const REGISTER_WIDTH: Record<ModbusPointConfig['type'], number> = { int16: 1, uint16: 1, int32: 2, uint32: 2, float32: 2, bool: 1, bit: 1 };

function checkPoint(p: ModbusPointConfig, where: string, problems: string[]): void {
  const bitTable = p.table === 'coil' || p.table === 'discrete';
  if (bitTable && p.type !== 'bool') problems.push(`${where}.type: a ${p.table} point must be bool, got ${p.type}`);
  if (p.type === 'bit' && p.bit === undefined) problems.push(`${where}.bit: required for type bit`);
  if (p.type !== 'bit' && p.bit !== undefined) problems.push(`${where}.bit: only allowed with type bit`);
  const width = bitTable ? 1 : REGISTER_WIDTH[p.type];
  if (p.address + width > 65536) problems.push(`${where}.address: ${p.type} at ${p.address} runs past register 65535`);
}

function resolveConfig(cfg: ParsedConfig, source: string, profiles: ProfileStore, problems: string[]): Config {
  const points = new Map<string, PointDef>();
  const deviceWhere = new Map<string, string>();
  const pathWhere = new Map<string, string>();
  const buses: BusDef[] = [];
  // Devices whose points are unknown (profile missing or invalid): references to them are not
  // reported again as "unknown point", the profile problem already says it all.
  const unresolvedDevices = new Set<string>();

  /** False when the id is taken: the device is still checked, but its points are not registered. */
  const claimDevice = (devId: string, where: string): boolean => {
    const prev = deviceWhere.get(devId);
    if (prev) problems.push(`${where}.id: duplicate device id "${devId}" (also at ${prev})`);
    else deviceWhere.set(devId, where);
    return prev === undefined;
  };
  const registerPoint = (def: PointDef, where: string): void => {
    if (points.has(def.id)) problems.push(`${where}.name: duplicate point id "${def.id}"`);
    else points.set(def.id, def);
  };

  cfg.buses.forEach((bus, bi) => {
    const busWhere = `buses[${bi}]`;
    if (bus.reopenMaxMs < bus.reopenInitialMs) problems.push(`${busWhere}.reopenMaxMs: must be ≥ reopenInitialMs (${bus.reopenInitialMs})`);
    if (bus.type !== 'tcp') {
      const prev = pathWhere.get(bus.path);
      if (prev) problems.push(`${busWhere}.path: "${bus.path}" is already used by ${prev}`);
      else pathWhere.set(bus.path, `${busWhere} ("${bus.id}")`);
    }
    if (cfg.buses.findIndex((b) => b.id === bus.id) !== bi) problems.push(`${busWhere}.id: duplicate bus id "${bus.id}"`);

    if (bus.type === 'serial-stream') {
      const owned = claimDevice(bus.id, busWhere);
      let groups: Set<string> | undefined;
      try {
        new RegExp(bus.pattern);
        groups = new Set([...bus.pattern.matchAll(/\(\?<([A-Za-z_][A-Za-z0-9_]*)>/g)].map((m) => m[1]!));
      } catch (err) {
        // V8's message already reads "Invalid regular expression: /…/: <reason>".
        const msg = (err as Error).message;
        problems.push(`${busWhere}.pattern: ${msg.charAt(0).toLowerCase()}${msg.slice(1)}`);
      }
      const pts: StreamPointDef[] = [];
      bus.points.forEach((p, pi) => {
        const pid = `${bus.id}.${p.name}`;
        const where = `${busWhere}.points[${pi}]`;
        if (groups && !groups.has(p.group)) {
          problems.push(`${where}.group: pattern has no named group "${p.group}" (it has: ${[...groups].join(', ') || 'none'})`);
        }
        const def: StreamPointDef = { ...p, id: pid, deviceId: bus.id };
        if (owned) registerPoint(def, where);
        pts.push(def);
      });
      buses.push({ ...bus, points: pts });
      return;
    }

    const unitWhere = new Map<number, string>();
    const devices: DeviceDef[] = [];
    bus.devices.forEach((dev, di) => {
      const where = `${busWhere}.devices[${di}]`;
      const owned = claimDevice(dev.id, where);
      let profile: Profile | undefined;
      if (dev.profile !== undefined) {
        const got = profiles.get(dev.profile);
        if (typeof got === 'string') {
          problems.push(`${where}.profile: ${got}`);
          unresolvedDevices.add(dev.id);
        } else profile = got;
      }
      if (!dev.profile && dev.points.length === 0) problems.push(`${where}: needs a profile or at least one point`);
      const unitId = dev.unitId ?? profile?.defaults.unitId;
      if (unitId === undefined) {
        if (!unresolvedDevices.has(dev.id)) problems.push(`${where}.unitId: required (no profile default)`);
      }
      else if (bus.type === 'serial' && (unitId < 1 || unitId > 247)) problems.push(`${where}.unitId: must be 1–247 on a serial line, got ${unitId}`);
      else {
        const prev = unitWhere.get(unitId);
        if (prev) problems.push(`${where}.unitId: unit ${unitId} is already used on this bus by ${prev}`);
        else unitWhere.set(unitId, `${where} ("${dev.id}")`);
      }
      if (dev.backoffMaxMs < (dev.backoffInitialMs ?? dev.pollIntervalMs) && dev.backoffInitialMs !== undefined) {
        problems.push(`${where}.backoffMaxMs: must be ≥ backoffInitialMs (${dev.backoffInitialMs})`);
      }

      // Profile points first; an inline point with the same name replaces the profile's (calibration).
      const merged = new Map<string, { p: ModbusPointConfig; where: string }>();
      profile?.points.forEach((p, pi) => merged.set(p.name, { p, where: `profile "${dev.profile}" points[${pi}]` }));
      const inlineNames = new Set<string>();
      dev.points.forEach((p, pi) => {
        const pw = `${where}.points[${pi}]`;
        if (inlineNames.has(p.name)) {
          // Keep the first: the second must not silently replace it (and confuse later checks).
          problems.push(`${pw}.name: duplicate point id "${dev.id}.${p.name}"`);
          return;
        }
        inlineNames.add(p.name);
        merged.set(p.name, { p, where: pw });
      });
      const pts: ModbusPointDef[] = [];
      for (const { p, where: pw } of merged.values()) {
        checkPoint(p, pw, problems);
        const def: ModbusPointDef = { ...p, id: `${dev.id}.${p.name}`, deviceId: dev.id };
        if (owned) registerPoint(def, pw);
        pts.push(def);
      }
      devices.push({
        id: dev.id,
        busId: bus.id,
        unitId: unitId ?? 0,
        ...(dev.profile !== undefined ? { profile: dev.profile } : {}),
        pollIntervalMs: dev.pollIntervalMs,
        timeoutMs: dev.timeoutMs,
        maxReadRegisters: dev.maxReadRegisters,
        maxGapRegisters: dev.maxGapRegisters,
        backoffInitialMs: dev.backoffInitialMs ?? dev.pollIntervalMs,
        backoffMaxMs: Math.max(dev.backoffMaxMs, dev.backoffInitialMs ?? dev.pollIntervalMs),
        points: pts,
      });
    });
    if (bus.type === 'serial') {
      buses.push({
        ...bus,
        interFrameGapMs: bus.interFrameGapMs ?? defaultInterFrameGapMs(bus.baudRate, bus.dataBits, bus.parity, bus.stopBits),
        devices,
      });
    } else {
      buses.push({ ...bus, devices });
    }
  });

  /** Whether a missing point is already explained by its device's profile problem. */
  const explained = (pid: string): boolean => unresolvedDevices.has(pid.split('.')[0] ?? '');

  const zoneIds = new Set<string>();
  const zones: ZoneDef[] = [];
  cfg.zones.forEach((zone, zi) => {
    if (zoneIds.has(zone.id)) problems.push(`zones[${zi}].id: duplicate zone id "${zone.id}"`);
    zoneIds.add(zone.id);
    const seen = new Set<string>();
    zone.sensors.forEach((s, si) => {
      const p = points.get(s);
      if (!p) {
        if (!explained(s)) problems.push(`zones[${zi}].sensors[${si}]: unknown point "${s}"`);
      }
      else if (p.kind !== 'temperature') problems.push(`zones[${zi}].sensors[${si}]: point "${s}" is not a temperature point (kind: ${p.kind})`);
      if (seen.has(s)) problems.push(`zones[${zi}].sensors[${si}]: "${s}" is listed twice`);
      seen.add(s);
    });
    const d: DetectionParams = { ...DETECTION_DEFAULTS, ...cfg.detection, ...zone.detection };
    const where = `zones[${zi}].detection`;
    if (d.k > zone.sensors.length) problems.push(`${where}.k: ${d.k} sensors must agree but the zone has ${zone.sensors.length}`);
    if (d.shortWindowS >= d.longWindowS) problems.push(`${where}.shortWindowS: must be below longWindowS (${d.shortWindowS} ≥ ${d.longWindowS})`);
    if (!(d.warnTempC < d.alarmTempC && d.alarmTempC < d.criticalTempC)) {
      problems.push(`${where}: thresholds must rise warnTempC < alarmTempC < criticalTempC (got ${d.warnTempC}, ${d.alarmTempC}, ${d.criticalTempC})`);
    }
    zones.push({ id: zone.id, sensors: zone.sensors, detection: d });
  });

  const chillerIds = new Set<string>();
  cfg.chillers.forEach((ch, ci) => {
    if (chillerIds.has(ch.id)) problems.push(`chillers[${ci}].id: duplicate chiller id "${ch.id}"`);
    chillerIds.add(ch.id);
    for (const field of ['running', 'alarm', 'supplyTemp', 'returnTemp'] as const) {
      const pid = ch[field];
      if (pid !== undefined && !points.has(pid) && !explained(pid)) problems.push(`chillers[${ci}].${field}: unknown point "${pid}"`);
    }
    ch.zones.forEach((z, zi) => {
      if (!zoneIds.has(z)) problems.push(`chillers[${ci}].zones[${zi}]: unknown zone "${z}"`);
    });
  });

  return {
    version: cfg.version,
    site: cfg.site,
    gateway: cfg.gateway,
    logging: cfg.logging,
    buses,
    zones,
    chillers: cfg.chillers,
    outputs: cfg.outputs,
    http: cfg.http,
    actions: cfg.actions,
    clock: cfg.clock,
    stopTimeoutS: cfg.stopTimeoutS,
    points,
    source,
  };
}

/**
 * Makes the outbox path absolute (relative to the config file) and checks that every credential
 * and TLS file named in `outputs` can be read now, so a typo is a config error at start, not a
 * sink that fails later. The contents are read by the sinks themselves and never logged.
 */
function resolveOutputs(outputs: NonNullable<ParsedConfig['outputs']>, baseDir: string, problems: string[]): NonNullable<ParsedConfig['outputs']> {
  const abs = (f: string): string => (isAbsolute(f) ? f : resolve(baseDir, f));
  // The size cap: the sinks read these files whole, and a huge one is a wrong path, not a password.
  const checkFile = configFileChecker(baseDir, problems);
  const check = (where: string, file: string | undefined, maxBytes: number): string | undefined => (file === undefined ? undefined : checkFile(where, file, maxBytes));
  const out = { ...outputs, outbox: { ...outputs.outbox, path: abs(outputs.outbox.path) } };
  if (outputs.mqtt) {
    const m = { ...outputs.mqtt };
    for (const f of ['usernameFile', 'passwordFile', 'ca', 'cert', 'key'] as const) {
      // A CA bundle may hold a whole system trust store (about 200 kB): the config cap, not the credential one.
      const v = check(`outputs.mqtt.${f}`, m[f], f.endsWith('File') ? MAX_CREDENTIAL_FILE_BYTES : MAX_CONFIG_FILE_BYTES);
      if (v !== undefined) m[f] = v;
    }
    out.mqtt = m;
  }
  if (outputs.influx) {
    const i = { ...outputs.influx };
    for (const f of ['usernameFile', 'passwordFile'] as const) {
      const v = check(`outputs.influx.${f}`, i[f], MAX_CREDENTIAL_FILE_BYTES);
      if (v !== undefined) i[f] = v;
    }
    out.influx = i;
  }
  return out;
}

/** 127.0.0.0/8, ::1 (also as an IPv4-mapped address) and `localhost`: only this host can connect. */
export function isLoopbackAddress(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  if (isIP(v4) === 4) return v4.startsWith('127.');
  if (isIP(h) !== 6) return false;
  // The URL parser writes an IPv6 address in its one canonical form (`0:0::1` → `[::1]`).
  return new URL(`http://[${h}]/`).hostname === '[::1]';
}

/**
 * The HTTP endpoint: a token file is resolved relative to the config file and must be a readable
 * regular file now; a bind any other host can reach needs one (the issue: "binding elsewhere needs a
 * configured token"), so a gateway never exposes its state and metrics by a typo.
 */
function resolveHttp(http: NonNullable<ParsedConfig['http']>, baseDir: string, problems: string[]): NonNullable<ParsedConfig['http']> {
  const out = { ...http };
  if (http.tokenFile !== undefined) {
    out.tokenFile = configFileChecker(baseDir, problems)('http.tokenFile', http.tokenFile);
  } else if (!isLoopbackAddress(http.bind)) {
    problems.push(`http.bind: "${http.bind}" is not a loopback address; binding it needs http.tokenFile (a file holding the token every request must carry)`);
  }
  return out;
}

/** Object.freeze does not stop Map#set; a frozen Map's mutators therefore throw, as a frozen object's writes do. */
function refuseMutation(): never {
  throw new TypeError('the configuration is frozen');
}

function deepFreeze<T>(obj: T): T {
  if (obj && typeof obj === 'object' && !Object.isFrozen(obj)) {
    if (obj instanceof Map) Object.assign(obj, { set: refuseMutation, delete: refuseMutation, clear: refuseMutation });
    Object.freeze(obj);
    if (obj instanceof Map) for (const v of obj.values()) deepFreeze(v);
    else for (const v of Object.values(obj)) deepFreeze(v);
  }
  return obj;
}
