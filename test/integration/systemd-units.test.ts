/**
 * The systemd units, checked with systemd's own tools (no systemd needs to run): `systemd-analyze verify`
 * and `systemd-analyze security --offline=true`.
 *
 * `verify` loads the unit the way PID 1 would and fails when an Exec line's program is not executable, so
 * it runs here on generated copies whose `/usr/bin/node` is replaced with the node running this test:
 * the machine running the tests need not have node at /usr/bin, and the agent's script path is not
 * checked by verify at all (the package test installs the .deb and runs what ExecStart names). Every
 * other byte of the copy is the shipped file, under the same file name (the unit name matters to verify).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const UNITS = ['rackguard.service', 'rackguard-host.service'] as const;
// The exposure scores reached by the shipped units (0 = locked down, 10 = exposed). A change that loosens
// the sandbox must raise these on purpose.
const MAX_EXPOSURE: Record<(typeof UNITS)[number], number> = { 'rackguard.service': 1.8, 'rackguard-host.service': 6.2 };

let tmp: TempDir;
beforeAll(async () => {
  tmp = await tempDir('rackguard-units-');
});
afterAll(async () => {
  await tmp?.cleanup();
});

function unitText(name: string): string {
  return readFileSync(join(ROOT, 'systemd', name), 'utf8');
}

/** A copy of the shipped unit in its own directory, with /usr/bin/node pointing at this test's node. */
function testableCopy(name: string, dir: string, edit: (text: string) => string = (t) => t): string {
  const path = join(tmp.path, dir, name);
  spawnSync('mkdir', ['-p', join(tmp.path, dir)]);
  writeFileSync(path, edit(unitText(name).replaceAll('/usr/bin/node ', `${process.execPath} `)));
  return path;
}

function analyze(...args: string[]) {
  // systemd-analyze pages and colours its output on a terminal; neither here.
  return spawnSync('systemd-analyze', args, { encoding: 'utf8', env: { ...process.env, SYSTEMD_PAGER: 'cat', SYSTEMD_COLORS: '0' } });
}

/** The directives of one section as [key, value] pairs, in order (comments and blank lines dropped). */
function directives(text: string, section: string): [string, string][] {
  const out: [string, string][] = [];
  let current = '';
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (t === '' || t.startsWith('#') || t.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(t);
    if (header) {
      current = header[1]!;
      continue;
    }
    const eq = t.indexOf('=');
    if (current === section && eq > 0) out.push([t.slice(0, eq), t.slice(eq + 1)]);
  }
  return out;
}
const get = (text: string, section: string, key: string) => directives(text, section).filter(([k]) => k === key).map(([, v]) => v);

describe.each(UNITS)('%s', (name) => {
  it('passes systemd-analyze verify without a warning', () => {
    const r = analyze('verify', '--man=false', testableCopy(name, 'verify'));
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('');
    expect(r.status).toBe(0);
  });

  it('fails systemd-analyze verify when the program ExecStart names is missing (the check is real)', () => {
    const r = analyze('verify', '--man=false', testableCopy(name, 'verify-missing', (t) => t.replace(`${process.execPath} `, '/nonexistent/node ')));
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/Command \/nonexistent\/node is not executable/);
  });

  it(`has an exposure level of at most its recorded score`, () => {
    const r = analyze('security', '--offline=true', testableCopy(name, 'security'));
    expect(r.stderr).toBe('');
    const m = /Overall exposure level for \S+: (\d+\.\d) (\S+)/.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(MAX_EXPOSURE[name]);
  });

  it('runs node directly on the packaged dist/, never npm, and restarts for ever', () => {
    const text = unitText(name);
    const [execStart, ...more] = get(text, 'Service', 'ExecStart');
    expect(more).toEqual([]);
    expect(execStart).toMatch(/^\/usr\/bin\/node --max-semi-space-size=2 --v8-pool-size=1 \/usr\/lib\/rackguard\/dist\/agent\/main\.js /);
    const execs = directives(text, 'Service').filter(([k]) => k.startsWith('Exec')).map(([, v]) => v);
    for (const v of execs) expect(v).not.toMatch(/\bnpm\b|\bnpx\b|\btsx\b/);
    expect(get(text, 'Service', 'Restart')).toEqual(['on-failure']);
    expect(get(text, 'Unit', 'StartLimitIntervalSec')).toEqual(['0']);
  });
});

describe('rackguard.service', () => {
  const text = unitText('rackguard.service');
  const service = (key: string) => get(text, 'Service', key);

  it('is a notify service with a watchdog, SIGHUP reload and the agent command', () => {
    expect(service('Type')).toEqual(['notify']);
    expect(service('WatchdogSec')).toEqual(['30']);
    expect(service('ExecStart')[0]).toMatch(/main\.js run --config \/etc\/rackguard\/rackguard\.yaml$/);
    expect(service('ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
    // The config in the package must parse; a bad config exits 2 and must not be retried in a loop.
    expect(service('RestartPreventExitStatus')).toEqual(['2']);
  });

  it('reaches serial adapters and nothing else among devices', () => {
    expect(service('User')).toEqual(['rackguard']);
    expect(service('SupplementaryGroups')).toEqual(['dialout']);
    expect(service('DevicePolicy')).toEqual(['closed']);
    expect(service('DeviceAllow')).toEqual(['char-ttyUSB rw', 'char-ttyACM rw', 'char-ttyAMA rw']);
    expect(service('PrivateDevices')).toEqual([]);
  });

  it('sees security findings only where the agent needs them (systemd-analyze security)', () => {
    const r = analyze('security', '--offline=true', '--json=short', testableCopy('rackguard.service', 'security-json'));
    const findings = JSON.parse(r.stdout) as { set: boolean; name: string; exposure: string | null }[];
    const open = findings.filter((f) => !f.set && f.exposure !== null && Number(f.exposure) > 0).map((f) => f.name).sort();
    // Each one is needed: network sinks and Modbus TCP (PrivateNetwork, IPAddressDeny, AF_INET), the notify
    // socket (AF_UNIX, NotifyAccess for systemd-notify), serial ports (PrivateDevices, DeviceAllow,
    // SupplementaryGroups), V8's JIT (MemoryDenyWriteExecute), node's setrlimit at start (@resources).
    expect(open).toEqual(
      [
        'DeviceAllow=',
        'IPAddressDeny=',
        'MemoryDenyWriteExecute=',
        'NotifyAccess=',
        'PrivateDevices=',
        'PrivateNetwork=',
        'PrivateUsers=',
        'ProcSubset=',
        'RestrictAddressFamilies=~AF_(INET|INET6)',
        'RestrictAddressFamilies=~AF_UNIX',
        'RootDirectory=/RootImage=',
        'SupplementaryGroups=',
        'SystemCallFilter=~@resources',
      ].sort(),
    );
  });
});

describe('rackguard-host.service', () => {
  const text = unitText('rackguard-host.service');

  it('runs the host agent and does not kill a running shutdown command when it stops', () => {
    expect(get(text, 'Service', 'ExecStart')[0]).toMatch(/main\.js host --config \/etc\/rackguard\/host\.yaml$/);
    expect(get(text, 'Service', 'KillMode')).toEqual(['process']);
    expect(get(text, 'Service', 'StateDirectory')).toEqual(['rackguard-host']);
  });
});
