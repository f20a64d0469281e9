/**
 * The `actions:` section's checks at load (agent/config/actions-check.ts through parseConfig): every
 * problem at once with its path; files resolved relative to the config file and checked now; argv[0]
 * an absolute executable; shutdown only at critical and only with actions.shutdown; the broker needed
 * by host agents and the inhibit topic. Real files in a temp dir; nothing runs.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../agent/config/load.js';
import { rackText } from '../helpers/config-text.js';

const dir = mkdtempSync(join(tmpdir(), 'rackguard-actions-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const hook = join(dir, 'hook.sh');
writeFileSync(hook, '#!/bin/sh\nexit 0\n');
chmodSync(hook, 0o755);
const notExec = join(dir, 'plain.sh');
writeFileSync(notExec, '#!/bin/sh\n');
chmodSync(notExec, 0o644);
writeFileSync(join(dir, 'hmac.key'), 'k'.repeat(40));
writeFileSync(join(dir, 'host.key'), 's'.repeat(40));
writeFileSync(join(dir, 'bmc-user'), 'admin\n');
writeFileSync(join(dir, 'bmc-pass'), 'secret\n');
mkdirSync(join(dir, 'a-directory'));

function configText(actions: string, opts: { mqtt?: boolean } = {}): string {
  return `${rackText(2, { id: 'row-a' })}${opts.mqtt ? 'outputs:\n  outbox: { path: ob.sqlite }\n  mqtt: { url: "mqtt://127.0.0.1:1883" }\n' : ''}actions:
${actions}
`;
}

function problemsOf(text: string): string[] {
  try {
    parseConfig(text, 'test.yaml', { baseDir: dir });
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

const fullShutdown = `  shutdown:
    failover:
      - { kind: http, name: drain, url: "http://127.0.0.1:9/drain", hmacSecretFile: hmac.key }
    groups:
      - name: batch
        hosts:
          - { via: agent, name: c1, secretFile: host.key }
          - { via: ipmi, name: c2, address: 127.0.0.1, usernameFile: bmc-user, passwordFile: bmc-pass }
      - name: storage
        hosts:
          - { via: redfish, name: s1, url: "https://127.0.0.1:8443", usernameFile: bmc-user, passwordFile: bmc-pass }
    final:
      - { kind: exec, name: last-word, argv: ["${hook}"] }`;

describe('actions config', () => {
  it('a full valid section loads; relative files become absolute paths next to the config', () => {
    const cfg = parseConfig(
      configText(
        `  inhibit: { file: maintenance.flag, mqttTopic: site/maintenance }
  stateDir: state
  policies:
    - zones: [row-a]
      level: alarm
      actions:
        - { kind: exec, name: page, argv: ["${hook}", "--zone", "x; rm -rf /"] }
        - { kind: http, name: am, url: "http://127.0.0.1:9/hook", hmacSecretFile: hmac.key }
      onClear:
        - { kind: exec, name: unpage, argv: ["${hook}"] }
    - zones: ["*"]
      level: critical
      actions: [{ kind: shutdown }]
${fullShutdown}`,
        { mqtt: true },
      ),
      'test.yaml',
      { baseDir: dir },
    );
    const a = cfg.actions!;
    expect(a.inhibit.file).toBe(join(dir, 'maintenance.flag'));
    expect(a.stateDir).toBe(join(dir, 'state'));
    const http = a.policies[0]!.actions[1]!;
    expect(http.kind === 'http' && http.hmacSecretFile).toBe(join(dir, 'hmac.key'));
    const hosts = a.shutdown!.groups.flatMap((g) => g.hosts);
    expect(hosts.map((h) => h.via === 'agent' ? h.secretFile : h.passwordFile)).toEqual([join(dir, 'host.key'), join(dir, 'bmc-pass'), join(dir, 'bmc-pass')]);
    const failover = a.shutdown!.failover[0]!;
    expect(failover.kind === 'http' && failover.hmacSecretFile).toBe(join(dir, 'hmac.key'));
    expect(a.policies[1]!.actions[0]).toEqual({ kind: 'shutdown', name: 'shutdown' });
    expect(Object.isFrozen(a.policies[0]!.actions[0])).toBe(true);
  });

  it('every problem at once, each with its path', () => {
    const problems = problemsOf(
      configText(`  inhibit: { mqttTopic: "site/+/maintenance" }
  policies:
    - zones: [row-a, row-z]
      level: alarm
      actions:
        - { kind: exec, name: relative, argv: ["hook.sh"] }
        - { kind: exec, name: not-exec, argv: ["${notExec}"] }
        - { kind: exec, name: missing, argv: ["${join(dir, 'nope.sh')}"] }
        - { kind: exec, name: a-dir, argv: ["${join(dir, 'a-directory')}"] }
        - { kind: http, name: am, url: "http://127.0.0.1:9/", hmacSecretFile: no-such.key }
        - { kind: shutdown }
      onClear:
        - { kind: exec, name: relative, argv: ["${hook}"] }
    - zones: ["*", row-a]
      level: critical
      actions: [{ kind: shutdown }]
  shutdown:
    groups:
      - name: g
        hosts:
          - { via: agent, name: h1, secretFile: missing.key }
          - { via: ipmi, name: h1, address: 127.0.0.1, usernameFile: a-directory, passwordFile: bmc-pass }
      - name: g
        hosts:
          - { via: redfish, name: h2, url: "https://127.0.0.1", usernameFile: bmc-user, passwordFile: bmc-pass, ca: no-ca.pem }`),
    );
    expect(problems).toEqual([
      'actions.policies[0].zones[1]: unknown zone "row-z" (zones: row-a)',
      'actions.policies[0].actions[0].argv[0]: "hook.sh" is not an absolute path (actions never search PATH)',
      `actions.policies[0].actions[1].argv[0]: ${notExec} is not executable: EACCES`,
      `actions.policies[0].actions[2].argv[0]: ${join(dir, 'nope.sh')} is not executable: ENOENT`,
      `actions.policies[0].actions[3].argv[0]: ${join(dir, 'a-directory')} is not a regular file`,
      `actions.policies[0].actions[4].hmacSecretFile: cannot read ${join(dir, 'no-such.key')}: ENOENT`,
      'actions.policies[0].actions[5].kind: a shutdown action is only allowed at level critical, got level alarm',
      'actions.policies[0].onClear[0].name: duplicate action name "relative" (also at actions.policies[0].actions[0])',
      'actions.policies[1].zones[0]: "*" (every zone) cannot be combined with other zone ids',
      'actions.shutdown.groups[0].hosts[0].via: a host agent is reached through outputs.mqtt\'s broker, and outputs.mqtt is not configured',
      `actions.shutdown.groups[0].hosts[0].secretFile: cannot read ${join(dir, 'missing.key')}: ENOENT`,
      `actions.shutdown.groups[0].hosts[1].usernameFile: cannot read ${join(dir, 'a-directory')}: a directory, not a regular file`,
      `actions.shutdown.groups[1].hosts[0].ca: cannot read ${join(dir, 'no-ca.pem')}: ENOENT`,
      'actions.shutdown.groups[0].hosts[1].name: duplicate host name "h1" (also at actions.shutdown.groups[0].hosts[0])',
      'actions.shutdown.groups[1].name: duplicate group name "g" (also at actions.shutdown.groups[0])',
      'actions.inhibit.mqttTopic: the inhibit topic is read from outputs.mqtt\'s broker, and outputs.mqtt is not configured',
      'actions.inhibit.mqttTopic: "site/+/maintenance" must be one topic, without the wildcards + and #',
    ]);
  });

  it('a shutdown action at critical with actions.shutdown and the broker is fine', () => {
    expect(problemsOf(configText(`  policies:\n    - { level: critical, actions: [{ kind: shutdown }] }\n${fullShutdown}`, { mqtt: true }))).toEqual([]);
  });

  it('a shutdown action without actions.shutdown is refused', () => {
    expect(problemsOf(configText(`  policies:\n    - { level: critical, actions: [{ kind: shutdown }] }`))).toEqual([
      'actions.policies[0].actions[0].kind: a shutdown action needs actions.shutdown (the failover step and host groups)',
    ]);
  });

  it('a critical policy naming a zone of one sensor is refused (the safety gate needs two agreeing)', () => {
    const text = configText(`  policies:\n    - { zones: [row-b], level: critical, actions: [{ kind: exec, name: x, argv: ["${hook}"] }] }\n    - { zones: [row-b], level: alarm, actions: [{ kind: exec, name: y, argv: ["${hook}"] }] }`).replace(
      '  - { id: row-a, sensors: [r1.temperature, r2.temperature] }',
      '  - { id: row-a, sensors: [r1.temperature, r2.temperature] }\n  - { id: row-b, sensors: [r1.temperature], detection: { k: 1 } }',
    );
    expect(problemsOf(text)).toEqual([
      'actions.policies[0].zones[0]: zone "row-b" has 1 sensor(s); critical actions need at least 2 good sensors agreeing (the safety gate), so they could never run',
    ]);
  });

  it('schema problems name the action field (argv as a shell string is refused)', () => {
    const problems = problemsOf(configText(`  policies:\n    - { level: alarm, actions: [{ kind: exec, name: x, argv: "/bin/echo hi" }] }`));
    expect(problems).toEqual(['actions.policies[0].actions[0].argv: expected a list, got "/bin/echo hi"']);
  });
  it('a webhook or BMC URL with credentials in it is refused, without echoing them (fetch would fail every time, and its error names the whole URL)', () => {
    const problems = problemsOf(
      configText(`  policies:
    - { level: alarm, actions: [{ kind: http, name: am, url: "https://ops:hunter2@hooks.example/x" }] }
    - { level: critical, actions: [{ kind: shutdown }] }
  shutdown:
    groups:
      - name: g
        hosts:
          - { via: redfish, name: h2, url: "https://root:calvin@127.0.0.1", usernameFile: bmc-user, passwordFile: bmc-pass }`),
    );
    expect(problems).toEqual([
      'actions.policies[0].actions[0].url: credentials in the URL are not allowed (they would be echoed in errors and records): use headers (Authorization) instead',
      'actions.shutdown.groups[0].hosts[0].url: credentials in the URL are not allowed (they would be echoed in errors and records): use usernameFile and passwordFile instead',
    ]);
    expect(problems.join('\n')).not.toMatch(/hunter2|calvin/);
  });
});
