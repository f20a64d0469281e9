/**
 * The host-command protocol between the gateway (agent/actions/host-client.ts) and `rackguard host`
 * (agent/actions/host-agent.ts). Pure: no I/O, no clock of its own; every check takes `now` as data.
 * The contract is written out in docs/host-agent.md; change both together and bump PROTOCOL_VERSION.
 *
 * Why our own format: MQTT has no standard for signed commands (Sparkplug B's NCMD/DCMD carry no
 * sequence number, signature or acknowledgement), and a replayed or forged "shutdown" is exactly the
 * outage this feature exists to prevent (issue 8).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const PROTOCOL_VERSION = 1;

/** Commands larger than this are refused before JSON.parse (a real one is about 350 bytes). */
export const MAX_COMMAND_BYTES = 4096;

/** The longest incident id carried; it reaches the local command's environment. */
export const MAX_INCIDENT_CHARS = 200;

/** The output tail a final report carries, characters (the end of stdout and stderr, interleaved). */
export const MAX_OUTPUT_TAIL_CHARS = 1000;

export const HOST_ACTIONS = ['shutdown', 'test'] as const;
export type HostAction = (typeof HOST_ACTIONS)[number];

/** Host and gateway names: they become MQTT topic levels, so no `/`, `+`, `#` or spaces. */
export const NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$/;

/** A command, as signed by the gateway. Integer times are wall-clock ms since the Unix epoch. */
export interface HostCommand {
  v: typeof PROTOCOL_VERSION;
  host: string;
  action: HostAction;
  incident: string;
  /** Strictly increasing per host; the host accepts only a seq above the last one it accepted. */
  seq: number;
  issuedAtMs: number;
  expiresAtMs: number;
  /** Ask the host to confirm it would act, without acting. */
  dryRun: boolean;
  gateway: string;
  /** Lowercase hex HMAC-SHA256 of canonicalCommand(), keyed with the host's secret. */
  sig: string;
}

export type UnsignedHostCommand = Omit<HostCommand, 'sig'>;

/** The signed fields, in the order they are serialised for the signature. */
export const COMMAND_FIELDS = ['v', 'host', 'action', 'incident', 'seq', 'issuedAtMs', 'expiresAtMs', 'dryRun', 'gateway'] as const;

export const REPLY_STATUSES = ['accepted', 'rejected', 'would-act', 'done', 'failed'] as const;
export type ReplyStatus = (typeof REPLY_STATUSES)[number];

export const REJECT_REASONS = [
  'oversized',
  'malformed',
  'unsigned',
  'bad-signature',
  'wrong-host',
  'not-yet-valid',
  'expired',
  'replayed',
  /** The new seq could not be persisted: the host refuses to act on what it could not record. */
  'state-write-failed',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** Why a started command failed (status `failed`). */
export type FailReason = 'exit-code' | 'signal' | 'timeout' | 'spawn-failed';

/** A reply from the host. `seq` and `incident` are null when the command was too broken to name them. */
export interface HostReply {
  v: typeof PROTOCOL_VERSION;
  host: string;
  seq: number | null;
  incident: string | null;
  status: ReplyStatus;
  /** No further reply follows for this seq. */
  final: boolean;
  reason?: RejectReason | FailReason;
  /** One line for humans: what exactly was wrong. Never contains a secret. */
  detail?: string;
  exitCode?: number | null;
  signal?: string | null;
  outputTail?: string;
  /** Host wall clock when sent. */
  tsMs: number;
  /** Lowercase hex HMAC-SHA256 of canonicalReply(), keyed with the host's secret. */
  sig: string;
}

export type UnsignedHostReply = Omit<HostReply, 'sig'>;

export const REPLY_FIELDS = ['v', 'host', 'seq', 'incident', 'status', 'final', 'reason', 'detail', 'exitCode', 'signal', 'outputTail', 'tsMs'] as const;

/** The retained availability message on `<base>/hosts/<host>/status`. */
export interface HostStatus {
  v: typeof PROTOCOL_VERSION;
  host: string;
  state: 'online' | 'offline';
  /** The host agent runs in dry-run mode: it confirms, never acts. */
  dryRun?: boolean;
  /** When `online` was sent (absent on the last will, which the broker sends later on our behalf). */
  tsMs?: number;
}

// ---- topics -------------------------------------------------------------------------------------

export const commandTopic = (base: string, host: string): string => `${base}/hosts/${host}/cmd`;
/** Where replies go when the command carried no MQTT 5 response topic (MQTT 3.1.1 clients). */
export const replyTopic = (base: string, host: string): string => `${base}/hosts/${host}/reply`;
export const statusTopic = (base: string, host: string): string => `${base}/hosts/${host}/status`;

/**
 * The MQTT 5 response topic a command asked for, if the host may use it: a plain topic (no wildcards)
 * under `base`. Anything else gets the default reply topic, so a forged command cannot make the host
 * publish elsewhere.
 */
export function chooseReplyTopic(base: string, host: string, responseTopic: string | undefined): string {
  if (responseTopic !== undefined && responseTopic.startsWith(`${base}/`) && !/[+#\u0000]/.test(responseTopic)) return responseTopic;
  return replyTopic(base, host);
}

// ---- canonical form and signatures --------------------------------------------------------------

/**
 * The signed bytes: a JSON object with exactly `fields`, in that order, no whitespace, keys whose
 * value is undefined left out, UTF-8. Every value is a string, a safe integer, a boolean or null, for
 * which JSON.stringify's output is fixed by ECMA-262, so both sides produce the same bytes.
 */
export function canonicalJson(obj: Record<string, unknown>, fields: readonly string[]): string {
  const parts: string[] = [];
  for (const k of fields) {
    const v = obj[k];
    if (v === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
  }
  return `{${parts.join(',')}}`;
}

export const canonicalCommand = (cmd: UnsignedHostCommand): string => canonicalJson(cmd as unknown as Record<string, unknown>, COMMAND_FIELDS);
export const canonicalReply = (reply: UnsignedHostReply): string => canonicalJson(reply as unknown as Record<string, unknown>, REPLY_FIELDS);

/** Hex HMAC-SHA256 of `text` with `secret`. */
export function hmacHex(secret: Buffer | string, text: string): string {
  return createHmac('sha256', secret).update(text, 'utf8').digest('hex');
}

/** Constant-time check of a hex signature (a wrong length or non-hex text is simply false). */
export function signatureMatches(secret: Buffer | string, text: string, sig: unknown): boolean {
  if (typeof sig !== 'string' || !/^[0-9a-f]{64}$/.test(sig)) return false;
  const expected = createHmac('sha256', secret).update(text, 'utf8').digest();
  return timingSafeEqual(expected, Buffer.from(sig, 'hex'));
}

export function signCommand(cmd: UnsignedHostCommand, secret: Buffer | string): HostCommand {
  const unsigned = pick(cmd, COMMAND_FIELDS) as unknown as UnsignedHostCommand;
  return { ...unsigned, sig: hmacHex(secret, canonicalCommand(unsigned)) };
}

export function signReply(reply: UnsignedHostReply, secret: Buffer | string): HostReply {
  const unsigned = pick(reply, REPLY_FIELDS) as unknown as UnsignedHostReply;
  return { ...unsigned, sig: hmacHex(secret, canonicalReply(unsigned)) };
}

function pick(obj: object, fields: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of fields) {
    const v = (obj as Record<string, unknown>)[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

// ---- parsing ------------------------------------------------------------------------------------

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const isName = (v: unknown): v is string => typeof v === 'string' && NAME_PATTERN.test(v);
// Control characters would corrupt the environment (NUL ends a variable) or the logs (newlines).
const isIncident = (v: unknown): v is string => typeof v === 'string' && v.length >= 1 && v.length <= MAX_INCIDENT_CHARS && !/[\u0000-\u001f\u007f]/.test(v);

/** What a broken command still tells us, for the reply (only when it is a JSON object). */
export interface CommandHints {
  seq: number | null;
  incident: string | null;
}

export type ParsedCommand =
  | { ok: true; cmd: HostCommand }
  | { ok: false; reason: 'oversized' | 'malformed' | 'unsigned'; detail: string; hints: CommandHints };

/**
 * Bytes to a well-formed command, or why not. The size cap is checked before anything is decoded.
 * Unknown fields are malformed: a field the signature does not cover must not be able to change
 * what the host does.
 */
export function parseCommand(payload: Uint8Array): ParsedCommand {
  const noHints: CommandHints = { seq: null, incident: null };
  if (payload.byteLength > MAX_COMMAND_BYTES) {
    return { ok: false, reason: 'oversized', detail: `${payload.byteLength} bytes, more than the ${MAX_COMMAND_BYTES}-byte limit`, hints: noHints };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch (err) {
    return { ok: false, reason: 'malformed', detail: `not UTF-8 JSON: ${(err as Error).message}`, hints: noHints };
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return { ok: false, reason: 'malformed', detail: 'not a JSON object', hints: noHints };
  const o = raw as Record<string, unknown>;
  const hints: CommandHints = { seq: isInt(o.seq) ? o.seq : null, incident: isIncident(o.incident) ? o.incident : null };
  const bad = (detail: string): ParsedCommand => ({ ok: false, reason: 'malformed', detail, hints });
  for (const k of Object.keys(o)) if (k !== 'sig' && !(COMMAND_FIELDS as readonly string[]).includes(k)) return bad(`unknown field "${k}"`);
  if (o.v !== PROTOCOL_VERSION) return bad(`v: expected ${PROTOCOL_VERSION}, got ${JSON.stringify(o.v)}`);
  if (!isName(o.host)) return bad('host: expected a host name');
  if (typeof o.action !== 'string' || !(HOST_ACTIONS as readonly string[]).includes(o.action)) return bad(`action: expected one of ${HOST_ACTIONS.join(', ')}`);
  if (!isIncident(o.incident)) return bad(`incident: expected 1–${MAX_INCIDENT_CHARS} characters without control characters`);
  if (!isInt(o.seq) || o.seq < 1) return bad('seq: expected a positive integer');
  if (!isInt(o.issuedAtMs) || o.issuedAtMs < 0) return bad('issuedAtMs: expected a non-negative integer');
  if (!isInt(o.expiresAtMs) || o.expiresAtMs <= o.issuedAtMs) return bad('expiresAtMs: expected an integer after issuedAtMs');
  if (typeof o.dryRun !== 'boolean') return bad('dryRun: expected true or false');
  if (!isName(o.gateway)) return bad('gateway: expected a gateway name');
  if (o.sig === undefined || o.sig === '') return { ok: false, reason: 'unsigned', detail: 'no sig field', hints };
  if (typeof o.sig !== 'string') return bad('sig: expected a hex string');
  return { ok: true, cmd: o as unknown as HostCommand };
}

/** What the host knows when it judges a command. */
export interface AcceptContext {
  /** This host's name. */
  host: string;
  secret: Buffer | string;
  /** Host wall clock, ms. */
  nowMs: number;
  /** Tolerated difference between the gateway's and this host's clocks, ms (both NTP-synced). */
  maxClockSkewMs: number;
  /** The last seq accepted (0 when none yet), from the host's state file. */
  lastSeq: number;
}

export type Verdict =
  | { accept: true; cmd: HostCommand }
  | { accept: false; reason: RejectReason; detail: string; hints: CommandHints; cmd?: HostCommand };

/**
 * The acceptance rule, in order: size, shape, signature present, signature valid (nothing the
 * message says is believed before this), addressed to this host, within its validity window, and a
 * seq above the last accepted one. The caller persists the seq before acting on an accepted command.
 */
export function judgeCommand(payload: Uint8Array, ctx: AcceptContext): Verdict {
  const parsed = parseCommand(payload);
  if (!parsed.ok) return { accept: false, reason: parsed.reason, detail: parsed.detail, hints: parsed.hints };
  const cmd = parsed.cmd;
  const hints: CommandHints = { seq: cmd.seq, incident: cmd.incident };
  const reject = (reason: RejectReason, detail: string): Verdict => ({ accept: false, reason, detail, hints, cmd });
  if (!signatureMatches(ctx.secret, canonicalCommand(cmd), cmd.sig)) return reject('bad-signature', 'the signature does not verify with this host\'s secret');
  if (cmd.host !== ctx.host) return reject('wrong-host', `addressed to "${cmd.host}", this is "${ctx.host}"`);
  if (cmd.issuedAtMs > ctx.nowMs + ctx.maxClockSkewMs) {
    return reject('not-yet-valid', `issued ${cmd.issuedAtMs - ctx.nowMs} ms in this host's future (skew allowed: ${ctx.maxClockSkewMs} ms; are both clocks NTP-synced?)`);
  }
  if (cmd.expiresAtMs + ctx.maxClockSkewMs < ctx.nowMs) {
    return reject('expired', `expired ${ctx.nowMs - cmd.expiresAtMs} ms ago (skew allowed: ${ctx.maxClockSkewMs} ms)`);
  }
  if (cmd.seq <= ctx.lastSeq) return reject('replayed', replayedDetail(cmd.seq, ctx.lastSeq));
  return { accept: true, cmd };
}

/** The detail of a `replayed` refusal; lastSeqOfReplayed() reads it back (the detail is signed with the reply). */
function replayedDetail(seq: number, lastSeq: number): string {
  return `seq ${seq} is not above the last accepted seq ${lastSeq}`;
}

/** The host's last accepted seq, from the detail of its signed `replayed` refusal; undefined if absent. */
export function lastSeqOfReplayed(detail: string | undefined): number | undefined {
  const m = /^seq \d+ is not above the last accepted seq (\d+)$/.exec(detail ?? '');
  const n = m ? Number(m[1]) : Number.NaN;
  return Number.isSafeInteger(n) ? n : undefined;
}

// ---- replies ------------------------------------------------------------------------------------

/** Parses and verifies a reply with the host's secret; undefined for anything that does not verify. */
export function parseReply(payload: Uint8Array, secret: Buffer | string): HostReply | undefined {
  if (payload.byteLength > MAX_COMMAND_BYTES * 2) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch {
    return undefined;
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return undefined;
  const r = raw as Record<string, unknown>;
  if (r.v !== PROTOCOL_VERSION || !isName(r.host) || typeof r.status !== 'string' || !(REPLY_STATUSES as readonly string[]).includes(r.status)) return undefined;
  if (typeof r.final !== 'boolean' || !isInt(r.tsMs) || !(r.seq === null || isInt(r.seq))) return undefined;
  if (!signatureMatches(secret, canonicalReply(r as unknown as UnsignedHostReply), r.sig)) return undefined;
  return r as unknown as HostReply;
}

/** The last `max` characters of `text`, marked when cut. */
export function tail(text: string, max = MAX_OUTPUT_TAIL_CHARS): string {
  return text.length <= max ? text : `…${text.slice(text.length - max + 1)}`;
}

/**
 * The gateway's next seq: above the last one it used, and at least its wall clock in ms. The floor
 * means a gateway whose counter file was lost (a replaced SD card) still issues seqs above what its
 * hosts have seen, as long as its clock is right; the counter alone keeps seqs increasing when the
 * clock is wrong or steps back.
 */
export function nextSeq(lastSeq: number, nowWallMs: number): number {
  return Math.max(lastSeq + 1, Math.floor(nowWallMs));
}
