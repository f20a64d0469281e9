/**
 * The `actions:` section's cross-field checks and path resolution (issue 8), run by load.ts once the
 * shapes are right. Every problem is pushed with its path; nothing is thrown, so the operator sees all
 * of them at once. What is checked here cannot be said by the schema alone:
 * - zone ids exist ('*' is every zone);
 * - a `shutdown` action only at level critical, and only when `actions.shutdown` describes the hosts;
 * - exec argv[0] is an absolute path to an executable regular file (no PATH lookup at 3 a.m.);
 * - secret and CA files are resolved relative to the config file and are readable regular files now
 *   (a typo is a config error at start, not a shutdown that fails while the room heats);
 * - a host agent, and an inhibit topic, need outputs.mqtt (the broker they live on);
 * - host and group names are unique (commands and records name them).
 * Files are opened without blocking and never read here: their contents are the actions' business.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { MIN_CRITICAL_SENSORS } from '../actions/gate.js';
import type { ActionsConfig, HookDef, HostDef, ShutdownDef } from './actions-schema.js';
import { configFileChecker, fileProblem, MAX_CONFIG_FILE_BYTES, MAX_CREDENTIAL_FILE_BYTES } from './read-file.js';

export interface ActionsCheckContext {
  /** Zone ids of the resolved config. */
  zoneIds: ReadonlySet<string>;
  /** Number of sensors of each zone (the safety gate needs two agreeing for critical actions). */
  zoneSensors?: ReadonlyMap<string, number>;
  /** Whether outputs.mqtt is configured (host agents and the inhibit topic live on that broker). */
  hasMqtt: boolean;
  /** Directory of the config file: relative paths are relative to it. */
  baseDir: string;
}

/**
 * Returns `actions` with every file path made absolute, pushing one `<path>: <problem>` line per
 * problem found.
 */
export function resolveActions(actions: ActionsConfig, ctx: ActionsCheckContext, problems: string[]): ActionsConfig {
  const abs = (f: string): string => (isAbsolute(f) ? f : resolve(ctx.baseDir, f));
  const readable = configFileChecker(ctx.baseDir, problems);

  const hook = <T extends HookDef>(a: T, where: string): T => {
    if (a.kind === 'exec') {
      const exe = a.argv[0]!;
      if (!isAbsolute(exe)) {
        problems.push(`${where}.argv[0]: "${exe}" is not an absolute path (actions never search PATH)`);
      } else {
        try {
          const st = statSync(exe);
          if (!st.isFile()) problems.push(`${where}.argv[0]: ${exe} is not a regular file`);
          else accessSync(exe, constants.X_OK);
        } catch (err) {
          problems.push(`${where}.argv[0]: ${exe} is not executable: ${fileProblem(err)}`);
        }
      }
      return a;
    }
    if (a.hmacSecretFile !== undefined) return { ...a, hmacSecretFile: readable(`${where}.hmacSecretFile`, a.hmacSecretFile, MAX_CREDENTIAL_FILE_BYTES) };
    return a;
  };

  const uniqueNames = (names: Array<{ name: string; where: string }>, what: string): void => {
    const seen = new Map<string, string>();
    for (const n of names) {
      const prev = seen.get(n.name);
      if (prev) problems.push(`${n.where}.name: duplicate ${what} name "${n.name}" (also at ${prev})`);
      else seen.set(n.name, n.where);
    }
  };

  const policies = actions.policies.map((p, pi) => {
    const where = `actions.policies[${pi}]`;
    p.zones.forEach((z, zi) => {
      if (z === '*') {
        if (p.zones.length > 1) problems.push(`${where}.zones[${zi}]: "*" (every zone) cannot be combined with other zone ids`);
      } else if (!ctx.zoneIds.has(z)) {
        problems.push(`${where}.zones[${zi}]: unknown zone "${z}" (zones: ${[...ctx.zoneIds].join(', ') || 'none'})`);
      } else if ((p.level === 'critical' || p.actions.some((a) => a.kind === 'shutdown')) && (ctx.zoneSensors?.get(z) ?? MIN_CRITICAL_SENSORS) < MIN_CRITICAL_SENSORS) {
        // The gate would refuse these actions for ever: say so now, not during the incident.
        problems.push(`${where}.zones[${zi}]: zone "${z}" has ${ctx.zoneSensors?.get(z)} sensor(s); critical actions need at least ${MIN_CRITICAL_SENSORS} good sensors agreeing (the safety gate), so they could never run`);
      }
    });
    const acts = p.actions.map((a, ai) => {
      const w = `${where}.actions[${ai}]`;
      if (a.kind === 'shutdown') {
        if (p.level !== 'critical') problems.push(`${w}.kind: a shutdown action is only allowed at level critical, got level ${p.level}`);
        if (!actions.shutdown) problems.push(`${w}.kind: a shutdown action needs actions.shutdown (the failover step and host groups)`);
        return a;
      }
      return hook(a, w);
    });
    const onClear = p.onClear.map((a, ai) => hook(a, `${where}.onClear[${ai}]`));
    uniqueNames(
      [...p.actions.map((a, ai) => ({ name: a.name, where: `${where}.actions[${ai}]` })), ...p.onClear.map((a, ai) => ({ name: a.name, where: `${where}.onClear[${ai}]` }))],
      'action',
    );
    return { ...p, actions: acts, onClear };
  });

  let shutdown: ShutdownDef | undefined;
  if (actions.shutdown) {
    const s = actions.shutdown;
    const where = 'actions.shutdown';
    const hostNames: Array<{ name: string; where: string }> = [];
    const groups = s.groups.map((g, gi) => {
      const gw = `${where}.groups[${gi}]`;
      const hosts = g.hosts.map((h, hi): HostDef => {
        const hw = `${gw}.hosts[${hi}]`;
        hostNames.push({ name: h.name, where: hw });
        if (h.via === 'agent') {
          if (!ctx.hasMqtt) problems.push(`${hw}.via: a host agent is reached through outputs.mqtt's broker, and outputs.mqtt is not configured`);
          return { ...h, secretFile: readable(`${hw}.secretFile`, h.secretFile, MAX_CREDENTIAL_FILE_BYTES) };
        }
        const creds = {
          usernameFile: readable(`${hw}.usernameFile`, h.usernameFile, MAX_CREDENTIAL_FILE_BYTES),
          passwordFile: readable(`${hw}.passwordFile`, h.passwordFile, MAX_CREDENTIAL_FILE_BYTES),
        };
        if (h.via === 'redfish') return { ...h, ...creds, ...(h.ca !== undefined ? { ca: readable(`${hw}.ca`, h.ca, MAX_CONFIG_FILE_BYTES) } : {}) };
        return { ...h, ...creds };
      });
      return { ...g, hosts };
    });
    uniqueNames(hostNames, 'host');
    uniqueNames(
      s.groups.map((g, gi) => ({ name: g.name, where: `${where}.groups[${gi}]` })),
      'group',
    );
    uniqueNames(
      [...s.failover.map((a, ai) => ({ name: a.name, where: `${where}.failover[${ai}]` })), ...s.final.map((a, ai) => ({ name: a.name, where: `${where}.final[${ai}]` }))],
      'hook',
    );
    shutdown = {
      ...s,
      failover: s.failover.map((a, ai) => hook(a, `${where}.failover[${ai}]`)),
      groups,
      final: s.final.map((a, ai) => hook(a, `${where}.final[${ai}]`)),
    };
  }

  const inhibit = { ...actions.inhibit };
  if (inhibit.file !== undefined) inhibit.file = abs(inhibit.file);
  if (inhibit.mqttTopic !== undefined) {
    if (!ctx.hasMqtt) problems.push('actions.inhibit.mqttTopic: the inhibit topic is read from outputs.mqtt\'s broker, and outputs.mqtt is not configured');
    if (/[+#]/.test(inhibit.mqttTopic)) problems.push(`actions.inhibit.mqttTopic: "${inhibit.mqttTopic}" must be one topic, without the wildcards + and #`);
  }

  return {
    ...actions,
    stateDir: abs(actions.stateDir),
    inhibit,
    policies,
    ...(shutdown ? { shutdown } : {}),
  };
}
