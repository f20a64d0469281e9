/**
 * The `actions:` section: what the agent does when a zone escalates (issue 8). Mounted by ./schema.ts.
 *
 * - `policies`: for zones (or all, `zones: ['*']`) and a level, an ordered list of actions that run once
 *   per incident at that level; `onClear` runs when the incident's zone is back to normal.
 * - action kinds: `exec` (an argv array, never a shell string), `http` (a webhook, Alertmanager's body by
 *   default), `shutdown` (the coordinated shutdown of `shutdown:` below; critical only).
 * - `shutdown`: an optional failover step first, then ordered host groups, each host reached through its
 *   host agent (signed MQTT command) or its BMC (IPMI or Redfish), then the final hook.
 * - `dryRun` and `inhibit` (maintenance) hold actions back, never detection or publishing.
 * Secrets (HMAC keys, BMC passwords, webhook keys) come from files, never from this file or argv.
 */
import { z } from 'zod';
import { HOUR_S, MINUTE_MS } from './durations.js';

const name = z.string().regex(/^[A-Za-z0-9_.-]{1,63}$/, { message: 'expected letters, digits, "_", "-" or "." (at most 63)' });

/** An argv array run without a shell; argv[0] an absolute path (no PATH lookup), checked at load. */
const argv = z.array(z.string().min(1)).min(1);

export const execActionSchema = z
  .object({
    kind: z.literal('exec'),
    name,
    argv,
    /** After this the whole process group is killed (SIGTERM, then SIGKILL after killGraceS). */
    timeoutS: z.number().positive().max(HOUR_S).default(60),
    killGraceS: z.number().min(0).max(60).default(5),
    /** Extra environment (not secrets: they would show in /proc/PID/environ). */
    env: z.record(z.string().regex(/^[A-Z_][A-Z0-9_]*$/), z.string()).default({}),
  })
  .strict();

/**
 * `https://user:pass@host/…`: refused. Node's fetch cannot send such a URL and its error quotes it whole,
 * so the password would land in every failure record, the outbox and the logs (and the hook never works).
 */
const CREDS_IN_URL = 'credentials in the URL are not allowed (they would be echoed in errors and records)';
function noUserinfo(url: string): boolean {
  return !/^https?:\/\/[^/?#\s]*@/i.test(url);
}

export const httpActionSchema = z
  .object({
    kind: z.literal('http'),
    name,
    url: z.string().regex(/^https?:\/\/[^/\s]+/, { message: 'expected http://host[:port]/path or https://…' }).refine(noUserinfo, { message: `${CREDS_IN_URL}: use headers (Authorization) instead` }),
    /** Deadline of one attempt. */
    timeoutS: z.number().positive().max(10 * 60).default(10),
    /** Attempts after the first, on network errors, 5xx and 429, with backoff from retryInitialMs. */
    retries: z.int().min(0).max(20).default(3),
    retryInitialMs: z.int().min(10).max(10 * MINUTE_MS).default(1000),
    /** File holding the HMAC-SHA256 key; the body's signature goes in `X-Rackguard-Signature: sha256=<hex>`. */
    hmacSecretFile: z.string().min(1).optional(),
    /** Default 'alertmanager' (webhook body version 4); 'event' posts rackguard's own event JSON. */
    format: z.enum(['alertmanager', 'event']).default('alertmanager'),
    headers: z.record(z.string().min(1), z.string()).default({}),
  })
  .strict();

export const shutdownActionSchema = z
  .object({
    kind: z.literal('shutdown'),
    name: name.default('shutdown'),
  })
  .strict();

export const actionSchema = z.discriminatedUnion('kind', [execActionSchema, httpActionSchema, shutdownActionSchema]);

/** An action outside shutdown (failover, final hook, onClear): no nested shutdown. */
export const hookSchema = z.discriminatedUnion('kind', [execActionSchema, httpActionSchema]);

export const policySchema = z
  .object({
    /** Zone ids, or ['*'] for every zone. */
    zones: z.array(z.string().min(1)).min(1).default(['*']),
    /** The level that fires these actions (warning and blind never shut anything down). */
    level: z.enum(['warning', 'alarm', 'critical']),
    actions: z.array(actionSchema).min(1),
    /** Run once when the incident's zone is back to normal. */
    onClear: z.array(hookSchema).default([]),
  })
  .strict();

const hostCommon = {
  name,
  /** After an acknowledged/requested soft power-off, wait this long for power off, then ForceOff if allowed. */
  forceOffAfterS: z.number().positive().max(HOUR_S).default(300),
  /** Send ForceOff / `chassis power off` after forceOffAfterS. Off by default: a hard off loses data. */
  allowForceOff: z.boolean().default(false),
};

/** A server running `rackguard host`: a signed command on `<baseTopic>/hosts/<name>/cmd`. */
export const agentHostSchema = z
  .object({
    via: z.literal('agent'),
    ...hostCommon,
    /** File holding the HMAC secret shared with that host (first line, ≥ 32 characters). */
    secretFile: z.string().min(1),
  })
  .strict();

/** A server's BMC over IPMI (Debian's ipmitool, lanplus); the password from a file, never argv. */
export const ipmiHostSchema = z
  .object({
    via: z.literal('ipmi'),
    ...hostCommon,
    address: z.string().min(1),
    port: z.int().min(1).max(65_535).default(623),
    usernameFile: z.string().min(1),
    passwordFile: z.string().min(1),
    /** ipmitool cipher suite (-C). */
    cipherSuite: z.int().min(0).max(17).default(3),
    /** Deadline of one ipmitool call. */
    timeoutS: z.number().positive().max(10 * 60).default(15),
  })
  .strict();

/** A server's BMC over Redfish: ComputerSystem.Reset GracefulShutdown, then ForceOff if allowed. */
export const redfishHostSchema = z
  .object({
    via: z.literal('redfish'),
    ...hostCommon,
    /** BMC base URL, https://bmc.example (the service root is <url>/redfish/v1). */
    url: z.string().regex(/^https?:\/\/[^/\s]+/, { message: 'expected https://host[:port]' }).refine(noUserinfo, { message: `${CREDS_IN_URL}: use usernameFile and passwordFile instead` }),
    /** Which ComputerSystem; default the first member of /redfish/v1/Systems. */
    systemId: z.string().min(1).optional(),
    usernameFile: z.string().min(1),
    passwordFile: z.string().min(1),
    /** 'session' (default: POST SessionService/Sessions, always DELETEd afterwards) or 'basic'. */
    auth: z.enum(['session', 'basic']).default('session'),
    /** PEM CA for the BMC's certificate (BMCs often have a self-signed one). */
    ca: z.string().min(1).optional(),
    timeoutS: z.number().positive().max(10 * 60).default(15),
  })
  .strict();

export const hostSchema = z.discriminatedUnion('via', [agentHostSchema, ipmiHostSchema, redfishHostSchema]);

export const shutdownSchema = z
  .object({
    /** Runs first (e.g. drain traffic to the other site) and must finish or time out before any host is asked. */
    failover: z.array(hookSchema).default([]),
    /** Ordered groups, e.g. batch compute first, storage last. */
    groups: z
      .array(
        z
          .object({
            name,
            hosts: z.array(hostSchema).min(1),
          })
          .strict(),
      )
      .min(1),
    /** A group's hosts are asked together; the next group starts when all acknowledged, or after this. */
    hostSyncS: z.number().positive().max(HOUR_S).default(60),
    /** Commands to host agents expire after this (a late delivery must not act). */
    commandTtlS: z.number().positive().max(HOUR_S).default(120),
    /** Runs last (e.g. the gateway's own notification). */
    final: z.array(hookSchema).default([]),
  })
  .strict();

export const actionsSchema = z
  .object({
    /** Log and record what would run, run nothing that changes the world (`--dry-run` sets it too). */
    dryRun: z.boolean().default(false),
    /** Maintenance inhibit: suppresses actions (recorded as events), never detection or publishing. */
    inhibit: z
      .object({
        /** While this file exists, actions are held back. */
        file: z.string().min(1).optional(),
        /** A retained MQTT topic (on outputs.mqtt's broker): payload `on`/`true`/`1` or JSON {"inhibit": true}. */
        mqttTopic: z.string().min(1).optional(),
      })
      .strict()
      .default({}),
    /** Topic root for host agents: `<baseTopic>/hosts/<host>/cmd`. */
    hostsBaseTopic: z.string().min(1).default('rackguard'),
    /** Where the gateway keeps its command sequence state (must survive reboots). */
    stateDir: z.string().min(1).default('/var/lib/rackguard'),
    policies: z.array(policySchema).default([]),
    shutdown: shutdownSchema.optional(),
  })
  .strict();

export type ActionsConfig = z.output<typeof actionsSchema>;
export type ActionDef = z.output<typeof actionSchema>;
export type HookDef = z.output<typeof hookSchema>;
export type ExecActionDef = z.output<typeof execActionSchema>;
export type HttpActionDef = z.output<typeof httpActionSchema>;
export type PolicyDef = z.output<typeof policySchema>;
export type HostDef = z.output<typeof hostSchema>;
export type AgentHostDef = z.output<typeof agentHostSchema>;
export type IpmiHostDef = z.output<typeof ipmiHostSchema>;
export type RedfishHostDef = z.output<typeof redfishHostSchema>;
export type ShutdownDef = z.output<typeof shutdownSchema>;
