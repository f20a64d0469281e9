/**
 * A real IPMI BMC for tests and benchmarks: OpenIPMI's `ipmi_sim` (Debian `openipmi`), unprivileged,
 * on a free loopback UDP port, with its own lan.conf, emu file and state dir in a temp dir.
 *
 * Its chassis control is a small shell script (lan.conf `chassis_control "SCRIPT 0x20"`): ipmi_sim
 * runs it as `SCRIPT 0x20 get power` for `chassis power status` and `SCRIPT 0x20 set shutdown 1` for
 * `chassis power soft` (`set power 0` for `chassis power off`). The script appends every request to
 * requests.log and keeps the simulated power in a file: a soft-off turns it off unless the file
 * `ignore-soft` exists (an OS that does not honour ACPI).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, type TempDir } from './tmp.js';

export const IPMI_SIM = '/usr/bin/ipmi_sim';
export const IPMITOOL = '/usr/bin/ipmitool';

export interface IpmiSimOptions {
  username?: string;
  password?: string;
  /** When false, a soft power-off is recorded but the power stays on. Default true. */
  honourSoft?: boolean;
}

export interface IpmiSim {
  readonly port: number;
  readonly username: string;
  readonly password: string;
  readonly dir: string;
  /** Every chassis-control request so far, e.g. "0x20 get power", "0x20 set shutdown 1". */
  requests(): string[];
  /** The simulated power: 'on' or 'off'. */
  power(): 'on' | 'off';
  setPower(state: 'on' | 'off'): void;
  setHonourSoft(honour: boolean): void;
  /** ipmi_sim's own output so far (for failure messages). */
  output(): string;
  stop(): Promise<void>;
  /** stop() and remove the temp dir. */
  cleanup(): Promise<void>;
}

/** A UDP port on 127.0.0.1 that was free a moment ago (the kernel picks it; we release it). */
export function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = createSocket('udp4');
    sock.once('error', reject);
    sock.bind(0, '127.0.0.1', () => {
      const { port } = sock.address();
      sock.close(() => resolve(port));
    });
  });
}

const CHASSIS_SCRIPT = `#!/bin/sh
# Chassis control for ipmi_sim (written by scripts/lib/ipmi-sim.ts): records, and simulates the power.
d=$(dirname "$0")
echo "$*" >> "$d/requests.log"
power=$(cat "$d/power" 2>/dev/null || echo 1)
shift
op=$1
shift
case $op in
  get)
    for p in "$@"; do
      case $p in
        power) echo "power:$power" ;;
        boot) echo "boot:default" ;;
        *) echo "Invalid parameter: $p"; exit 1 ;;
      esac
    done ;;
  set)
    while [ -n "$1" ]; do
      p=$1; v=$2; shift 2
      case $p in
        shutdown) if [ "$v" = 1 ] && [ ! -e "$d/ignore-soft" ]; then echo 0 > "$d/power"; fi ;;
        power) echo "$v" > "$d/power" ;;
      esac
    done ;;
  check) exit 1 ;;
  *) echo "Unknown operation: $op"; exit 1 ;;
esac
`;

function ipmitoolStatus(port: number, username: string, password: string): Promise<boolean> {
  return new Promise((resolve) => {
    // -N 1 -R 1: one short try per readiness probe.
    execFile(IPMITOOL, ['-I', 'lanplus', '-H', '127.0.0.1', '-p', String(port), '-U', username, '-E', '-C', '3', '-N', '1', '-R', '1', 'chassis', 'power', 'status'], { env: { IPMI_PASSWORD: password, LC_ALL: 'C' }, timeout: 5000 }, (err, stdout) =>
      resolve(!err && /Chassis Power is/.test(stdout)),
    );
  });
}

export async function startIpmiSim(opts: IpmiSimOptions = {}): Promise<IpmiSim> {
  const username = opts.username ?? 'rgadmin';
  const password = opts.password ?? 'sim-pass-42';
  const tmp: TempDir = await tempDir('rackguard-ipmisim-');
  const dir = tmp.path;
  const port = await freeUdpPort();
  const script = join(dir, 'chassis-control.sh');
  writeFileSync(script, CHASSIS_SCRIPT, { mode: 0o755 });
  writeFileSync(join(dir, 'power'), '1\n');
  if (opts.honourSoft === false) writeFileSync(join(dir, 'ignore-soft'), '');
  mkdirSync(join(dir, 'state'));
  writeFileSync(
    join(dir, 'lan.conf'),
    [
      'name "rgsim"',
      'set_working_mc 0x20',
      '  startlan 1',
      `    addr 127.0.0.1 ${port}`,
      '    priv_limit admin',
      '    allowed_auths_callback md5',
      '    allowed_auths_user md5',
      '    allowed_auths_operator md5',
      '    allowed_auths_admin md5',
      '    guid a123456789abcdefa123456789abcdef',
      '  endlan',
      `  chassis_control "${script} 0x20"`,
      `  user 2 true "${username}" "${password}" admin 10 md5`,
      '',
    ].join('\n'),
  );
  writeFileSync(join(dir, 'sim.emu'), ['mc_setbmc 0x20', 'mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02', 'mc_enable 0x20', ''].join('\n'));

  let out = '';
  const child: ChildProcess = spawn(IPMI_SIM, ['-c', join(dir, 'lan.conf'), '-f', join(dir, 'sim.emu'), '-s', join(dir, 'state'), '-n'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));
  child.once('error', (err) => (out += `spawn error: ${err.message}\n`));
  // Safety net: a test process that dies without cleanup() must not leave a BMC behind.
  const killOnExit = (): void => void child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async (): Promise<void> => {
    process.off('exit', killOnExit);
    if (exited) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exit;
    clearTimeout(t);
  };

  // ipmi_sim prints nothing when it is ready, and UDP has no connect to wait for: probe with a real
  // status query (bounded).
  const deadline = performance.now() + 10_000;
  while (!(await ipmitoolStatus(port, username, password))) {
    if (exited || performance.now() > deadline) {
      await stop();
      await tmp.cleanup();
      throw new Error(`ipmi_sim on 127.0.0.1:${port} did not answer within 10 s${exited ? ' (it exited)' : ''}; output:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    port,
    username,
    password,
    dir,
    requests: () => (existsSync(join(dir, 'requests.log')) ? readFileSync(join(dir, 'requests.log'), 'utf8').split('\n').filter((l) => l !== '') : []),
    power: () => (readFileSync(join(dir, 'power'), 'utf8').trim() === '0' ? 'off' : 'on'),
    setPower: (state) => writeFileSync(join(dir, 'power'), state === 'off' ? '0\n' : '1\n'),
    setHonourSoft: (honour) => (honour ? rmSync(join(dir, 'ignore-soft'), { force: true }) : writeFileSync(join(dir, 'ignore-soft'), '')),
    output: () => out,
    stop,
    async cleanup() {
      await stop();
      await tmp.cleanup();
    },
  };
}
