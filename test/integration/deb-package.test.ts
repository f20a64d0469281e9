/**
 * The Debian package, end to end: scripts/build-deb.sh builds it (twice, for an upgrade), lintian checks
 * it, and dpkg installs, upgrades, removes and purges it in a throwaway root.
 *
 * The throwaway root is a copy-on-write view of this machine: an overlay mount whose lower layer is `/`
 * (read-only to the overlay) and whose upper layer is a tmpfs of the test, entered with chroot. dpkg,
 * adduser, node and the maintainer scripts run there exactly as on a real system (its own dpkg database,
 * passwd and group files), and every write lands in the tmpfs, which goes away in afterAll. So the
 * machine is never changed: no package, user or service is left behind even if the test dies, and no
 * Debian mirror is needed (debootstrap would need one). systemd is not running in the chroot, so the
 * maintainer scripts enable the unit but start nothing; a policy-rc.d that forbids every action makes
 * sure of it. Needs root (as CI runs) and overlayfs.
 *
 * npm ci runs with npm_config_offline=true: production dependencies come from npm's cache, never the
 * network. The second build reuses the first one's node_modules (RACKGUARD_DEB_MODULES_CACHE).
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, writeFileSync, appendFileSync, copyFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const BUILD_TIMEOUT_MS = 20 * 60_000;
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const V1 = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const V2 = `${V1}+upgrade1`;

let tmp: TempDir;
let debV1 = '';
let debV2 = '';
let chroot = ''; // the overlay root
const mounts: string[] = []; // mounted by this test, in mount order

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, {
    encoding: 'utf8',
    env: opts.env ?? { PATH, LANG: 'C.UTF-8' },
    timeout: opts.timeoutMs ?? 120_000,
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  });
}
function ok(r: SpawnSyncReturns<string>, what: string): string {
  if (r.status !== 0) throw new Error(`${what} failed (status ${r.status}, signal ${r.signal}, ${r.error?.message ?? ''}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}
/** Runs a command inside the throwaway root. */
function inRoot(args: string[]): SpawnSyncReturns<string> {
  return run('chroot', [chroot, ...args], { env: { PATH, LANG: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive', HOME: '/root' } });
}
const at = (p: string) => join(chroot, p);

function build(version: string): string {
  const out = ok(
    run(join(ROOT, 'scripts/build-deb.sh'), [], {
      env: {
        ...process.env,
        PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`,
        npm_config_offline: 'true',
        RACKGUARD_DEB_VERSION: version,
        RACKGUARD_DEB_OUT: join(tmp.path, 'out'),
        RACKGUARD_DEB_MODULES_CACHE: join(tmp.path, 'modules-cache'),
      },
      timeoutMs: BUILD_TIMEOUT_MS,
    }),
    `build-deb.sh (${version})`,
  );
  return out.trim().split('\n').at(-1)!;
}

function mount(args: string[], target: string): void {
  ok(run('mount', [...args, target]), `mount ${args.join(' ')} ${target}`);
  mounts.push(target);
}

beforeAll(async () => {
  tmp = await tempDir('rackguard-deb-');
  debV1 = build(V1);
  debV2 = build(V2);

  // The throwaway root: tmpfs for the upper layer (an upper layer cannot be on overlayfs itself).
  const layer = join(tmp.path, 'layer');
  chroot = join(tmp.path, 'root');
  mkdirSync(layer);
  mkdirSync(chroot);
  mount(['-t', 'tmpfs', '-o', 'mode=0755,size=1g', 'rackguard-deb-test'], layer);
  mkdirSync(join(layer, 'upper'));
  mkdirSync(join(layer, 'work'));
  mount(['-t', 'overlay', '-o', `lowerdir=/,upperdir=${layer}/upper,workdir=${layer}/work`, 'rackguard-deb-test'], chroot);
  mount(['-t', 'proc', 'proc'], at('proc'));
  // A fresh /dev with the few nodes scripts use, instead of a bind mount of the real one.
  for (const [name, major, minor] of [['null', 1, 3], ['zero', 1, 5], ['random', 1, 8], ['urandom', 1, 9]] as const) {
    run('rm', ['-f', at(`dev/${name}`)]);
    ok(run('mknod', ['-m', '0666', at(`dev/${name}`), 'c', String(major), String(minor)]), `mknod /dev/${name}`);
  }
  // No service may start from a maintainer script here (deb-systemd-invoke honours policy-rc.d).
  writeFileSync(at('usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  mkdirSync(at('debs'));
  copyFileSync(debV1, at(`debs/${basename(debV1)}`));
  copyFileSync(debV2, at(`debs/${basename(debV2)}`));
  // This machine's own state of the package must not leak in: the lower layer is a real system.
  expect(inRoot(['dpkg-query', '-W', 'rackguard']).status, 'rackguard is installed on this machine itself').not.toBe(0);
  expect(inRoot(['getent', 'passwd', 'rackguard']).status, 'a rackguard user exists on this machine itself').not.toBe(0);
}, BUILD_TIMEOUT_MS * 2);

afterAll(async () => {
  // Unmount in reverse order, then make sure nothing of ours is still mounted before deleting anything:
  // a recursive delete must never walk into a mount.
  for (const target of mounts.reverse()) {
    if (run('umount', [target]).status !== 0) run('umount', ['-l', target]);
  }
  const still = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => tmp && l.includes(tmp.path));
  if (still.length > 0) throw new Error(`still mounted, not deleting ${tmp.path}:\n${still.join('\n')}`);
  await tmp?.cleanup();
}, 120_000);

describe('the built package', () => {
  it('is named rackguard_<version>_<arch>.deb and declares its dependencies', () => {
    const arch = ok(run('dpkg', ['--print-architecture']), 'dpkg --print-architecture').trim();
    expect(basename(debV1)).toBe(`rackguard_${V1}-1_${arch}.deb`);
    const field = (f: string) => ok(run('dpkg-deb', ['--field', debV1, f]), `dpkg-deb --field ${f}`).trim();
    expect(field('Version')).toBe(`${V1}-1`);
    expect(field('Architecture')).toBe(arch);
    expect(field('Depends')).toMatch(/^nodejs \(>= 20\), adduser, libc6 \(>= [\d.]+\)/);
  });

  it('contains the agent, its production dependencies, the units, the configuration and the docs', () => {
    const listing = ok(run('dpkg-deb', ['--contents', debV1]), 'dpkg-deb --contents');
    const entries = new Map(
      listing
        .trim()
        .split('\n')
        .map((l) => {
          const cols = l.split(/\s+/);
          return [cols.slice(5).join(' ').replace(/^\./, '').split(' -> ')[0]!, { mode: cols[0]!, owner: cols[1]! }] as const;
        }),
    );
    const expected: [string, string][] = [
      ['/usr/bin/rackguard', '-rwxr-xr-x'],
      ['/usr/bin/rackguard-sim', '-rwxr-xr-x'],
      ['/usr/lib/rackguard/package.json', '-rw-r--r--'],
      ['/usr/lib/rackguard/dist/agent/main.js', '-rwxr-xr-x'],
      ['/usr/lib/rackguard/dist/agent/app.js', '-rw-r--r--'],
      ['/usr/lib/rackguard/dist/firmware-sim/main.js', '-rwxr-xr-x'],
      ['/usr/lib/rackguard/dist/drill/command.js', '-rw-r--r--'],
      ['/usr/lib/rackguard/config/profiles/xy-md02.yaml', '-rw-r--r--'],
      ['/usr/lib/rackguard/node_modules/better-sqlite3/build/Release/better_sqlite3.node', '-rw-r--r--'],
      ['/usr/lib/rackguard/node_modules/mqtt/package.json', '-rw-r--r--'],
      ['/lib/systemd/system/rackguard.service', '-rw-r--r--'],
      ['/lib/systemd/system/rackguard-host.service', '-rw-r--r--'],
      ['/etc/rackguard/rackguard.yaml', '-rw-r--r--'],
      ['/etc/rackguard/host.example.yaml', '-rw-r--r--'],
      ['/usr/share/doc/rackguard/copyright', '-rw-r--r--'],
      ['/usr/share/doc/rackguard/changelog.Debian.gz', '-rw-r--r--'],
    ];
    for (const [path, mode] of expected) {
      expect(entries.get(path), path).toEqual({ mode, owner: 'root/root' });
    }
    // Production dependencies only, no TypeScript sources, no dev tools.
    for (const unwanted of ['/usr/lib/rackguard/node_modules/typescript/', '/usr/lib/rackguard/node_modules/vitest/', '/usr/lib/rackguard/node_modules/tsx/']) {
      expect(entries.has(unwanted), unwanted).toBe(false);
    }
    expect([...entries.keys()].filter((p) => p.startsWith('/usr/lib/rackguard/dist/') && p.endsWith('.ts'))).toEqual([]);
    // Every owner is root.
    expect([...entries.values()].filter((e) => e.owner !== 'root/root')).toEqual([]);
  });

  it('marks every file under /etc as a conffile', () => {
    const dir = join(tmp.path, 'control');
    ok(run('dpkg-deb', ['--control', debV1, dir]), 'dpkg-deb --control');
    expect(readFileSync(join(dir, 'conffiles'), 'utf8').trim().split('\n').sort()).toEqual(['/etc/rackguard/host.example.yaml', '/etc/rackguard/rackguard.yaml']);
  });

  it('has no lintian errors', () => {
    const r = run('lintian', ['--tag-display-limit', '0', debV1], { timeoutMs: 300_000 });
    const errors = r.stdout.split('\n').filter((l) => l.startsWith('E: '));
    expect(errors).toEqual([]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
  }, 300_000);
});

describe('install, upgrade, remove and purge in a throwaway root', () => {
  const uid = (name: string) => Number(ok(inRoot(['id', '-u', name]), `id -u ${name}`).trim());
  const gid = (name: string) => Number(ok(inRoot(['getent', 'group', name]), `getent group ${name}`).split(':')[2]);

  it('installs: files, the rackguard user in dialout, the state directory, the enabled unit', () => {
    ok(inRoot(['dpkg', '-i', `/debs/${basename(debV1)}`]), 'dpkg -i v1');
    for (const p of ['usr/bin/rackguard', 'usr/lib/rackguard/dist/agent/main.js', 'lib/systemd/system/rackguard.service', 'etc/rackguard/rackguard.yaml']) {
      expect(existsSync(at(p)), p).toBe(true);
    }
    const passwd = ok(inRoot(['getent', 'passwd', 'rackguard']), 'getent passwd').trim().split(':');
    expect(passwd[5]).toBe('/var/lib/rackguard');
    expect(passwd[6]).toBe('/usr/sbin/nologin');
    expect(uid('rackguard')).toBeLessThan(1000); // a system user
    expect(ok(inRoot(['id', '-nG', 'rackguard']), 'id -nG').trim().split(' ').sort()).toEqual(['dialout', 'rackguard']);

    const state = statSync(at('var/lib/rackguard'));
    expect(state.uid).toBe(uid('rackguard'));
    expect(state.gid).toBe(gid('rackguard'));
    expect(state.mode & 0o7777).toBe(0o750);
    const conf = statSync(at('etc/rackguard/rackguard.yaml'));
    expect([conf.uid, conf.mode & 0o7777]).toEqual([0, 0o644]);

    // Enabled (deb-systemd-helper made the wants link) although systemd is not running here; the host
    // agent's unit is not enabled.
    const wants = at('etc/systemd/system/multi-user.target.wants/rackguard.service');
    expect(lstatSync(wants).isSymbolicLink()).toBe(true);
    expect(readlinkSync(wants)).toBe('/lib/systemd/system/rackguard.service');
    expect(existsSync(at('etc/systemd/system/multi-user.target.wants/rackguard-host.service'))).toBe(false);
  });

  it('runs from /usr/bin: --version, the native SQLite module, the shipped configuration', () => {
    expect(ok(inRoot(['/usr/bin/rackguard', '--version']), 'rackguard --version').trim()).toBe(V1);
    // better-sqlite3 as compiled into the package, opening a database the way the outbox does.
    const sqlite = inRoot(['/usr/bin/node', '-e', "const D=require('/usr/lib/rackguard/node_modules/better-sqlite3');const d=new D(':memory:');d.pragma('journal_mode=WAL');console.log(d.prepare('select sqlite_version() v').get().v)"]);
    expect(ok(sqlite, 'better-sqlite3').trim()).toMatch(/^3\.\d+\.\d+$/);
    // The default configuration is valid with the packaged profiles (the serial adapter it names is
    // not plugged in here, which is at most a warning).
    const check = inRoot(['/usr/bin/rackguard', 'check-config', '/etc/rackguard/rackguard.yaml']);
    expect(check.stdout + check.stderr).toMatch(/rackguard\.yaml: OK/);
    expect(check.status).toBe(0);
    expect(ok(inRoot(['/usr/bin/rackguard-sim', '--help']), 'rackguard-sim --help')).toMatch(/usage: rackguard-sim/);
  });

  it('upgrades to a newer version, keeping a changed configuration and the outbox', () => {
    appendFileSync(at('etc/rackguard/rackguard.yaml'), '# changed by the administrator\n');
    const local = readFileSync(at('etc/rackguard/rackguard.yaml'), 'utf8');
    writeFileSync(at('var/lib/rackguard/outbox.db'), 'buffered readings');
    const userBefore = uid('rackguard');

    ok(inRoot(['dpkg', '-i', `/debs/${basename(debV2)}`]), 'dpkg -i v2');
    expect(ok(inRoot(['dpkg-query', '-W', '-f', '${Version}', 'rackguard']), 'dpkg-query')).toBe(`${V2}-1`);
    expect(ok(inRoot(['/usr/bin/rackguard', '--version']), 'rackguard --version').trim()).toBe(V2);
    expect(readFileSync(at('etc/rackguard/rackguard.yaml'), 'utf8')).toBe(local);
    expect(readFileSync(at('var/lib/rackguard/outbox.db'), 'utf8')).toBe('buffered readings');
    expect(uid('rackguard')).toBe(userBefore);
    expect(lstatSync(at('etc/systemd/system/multi-user.target.wants/rackguard.service')).isSymbolicLink()).toBe(true);
  });

  it('remove keeps the configuration, the outbox and the user', () => {
    const local = readFileSync(at('etc/rackguard/rackguard.yaml'), 'utf8');
    ok(inRoot(['dpkg', '-r', 'rackguard']), 'dpkg -r');
    expect(existsSync(at('usr/bin/rackguard'))).toBe(false);
    expect(existsSync(at('usr/lib/rackguard'))).toBe(false);
    expect(existsSync(at('lib/systemd/system/rackguard.service'))).toBe(false);
    expect(readFileSync(at('etc/rackguard/rackguard.yaml'), 'utf8')).toBe(local);
    expect(readFileSync(at('var/lib/rackguard/outbox.db'), 'utf8')).toBe('buffered readings');
    expect(inRoot(['getent', 'passwd', 'rackguard']).status).toBe(0);
    expect(ok(inRoot(['dpkg-query', '-W', '-f', '${db:Status-Status}', 'rackguard']), 'dpkg-query')).toBe('config-files');
  });

  it('purge removes the configuration, the data, the user and the group', () => {
    writeFileSync(at('etc/rackguard/host.yaml'), 'version: 1\n'); // a file the administrator added
    ok(inRoot(['dpkg', '-P', 'rackguard']), 'dpkg -P');
    expect(existsSync(at('etc/rackguard'))).toBe(false);
    expect(existsSync(at('var/lib/rackguard'))).toBe(false);
    expect(inRoot(['getent', 'passwd', 'rackguard']).status).toBe(2);
    expect(inRoot(['getent', 'group', 'rackguard']).status).toBe(2);
    expect(existsSync(at('etc/systemd/system/multi-user.target.wants/rackguard.service'))).toBe(false);
    expect(inRoot(['dpkg-query', '-W', 'rackguard']).status).not.toBe(0);
  });
});
