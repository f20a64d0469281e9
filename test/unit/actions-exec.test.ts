/**
 * The exec action with real scripts (/bin/sh) writing marker files: the event in the environment and
 * on stdin, arguments and values with shell metacharacters passed literally, a hung hook killed at its
 * timeout with its children, the output tail bounded.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { systemClock, VirtualClock } from '../../agent/clock.js';
import type { ExecActionDef } from '../../agent/config/actions-schema.js';
import { OUTPUT_TAIL_BYTES, runExec } from '../../agent/actions/exec.js';
import type { ActionContext } from '../../agent/actions/types.js';

const dir = mkdtempSync(join(tmpdir(), 'rackguard-exec-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
/** Per attempt: a retried test must not read what the hook of a failed attempt wrote (perhaps late). */
let attempt = 0;

function script(name: string, body: string): string {
  const f = join(dir, name);
  writeFileSync(f, `#!/bin/sh\n${body}\n`);
  chmodSync(f, 0o755);
  return f;
}

function def(argv: string[], over: Partial<ExecActionDef> = {}): ExecActionDef {
  return { kind: 'exec', name: 'hook', argv, timeoutS: 30, killGraceS: 1, env: {}, ...over };
}

const nasty = `x; touch ${join(dir, 'pwned')}; $(touch ${join(dir, 'pwned2')}) \`touch ${join(dir, 'pwned3')}\` "dq" 'sq'`;

const ctx: ActionContext = { incident: 'row-a-20261130T010000Z-1', zone: 'row-a', level: 'critical', etaS: 123.4, reason: nasty, ts: Date.UTC(2026, 10, 30, 1, 0, 0), dryRun: false };

/** True when the process is gone (or a zombie nobody reaped yet: it runs nothing any more). */
function gone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/**
 * The "leader child" pids a hook wrote with one `echo` (a single write: the file is empty or whole).
 * Awaited, not assumed: on a loaded machine the shell may not have run that far yet.
 */
async function pidsOf(file: string): Promise<[number, number]> {
  await expect.poll(() => (existsSync(file) ? readFileSync(file, 'utf8') : ''), { timeout: 20_000, interval: 10 }).toMatch(/^\d+ \d+\n$/);
  const [leader, child] = readFileSync(file, 'utf8').trim().split(' ').map(Number);
  return [leader!, child!];
}

/** A killed process leaves /proc once the kernel finished its exit: await that, it is not instant. */
async function expectGone(pid: number, what: string): Promise<void> {
  await expect.poll(() => gone(pid), { timeout: 10_000, interval: 10, message: `${what} (pid ${pid}) still running` }).toBe(true);
}

describe('exec action', () => {
  it('the event reaches the hook in the environment and as JSON on stdin; the action env is added', async () => {
    const out = join(dir, 'env-out');
    const hook = script(
      'env.sh',
      `{ printf 'zone=%s\\n' "$RACKGUARD_ZONE"; printf 'level=%s\\n' "$RACKGUARD_LEVEL"; printf 'incident=%s\\n' "$RACKGUARD_INCIDENT"; printf 'eta=%s\\n' "$RACKGUARD_ETA_S"; printf 'dry=%s\\n' "$RACKGUARD_DRY_RUN"; printf 'extra=%s\\n' "$SITE_ROLE"; printf 'mqttpw=%s\\n' "$RACKGUARD_MQTT_PASSWORD"; } > ${out}.env
printf '%s' "$RACKGUARD_EVENT" > ${out}.event
cat > ${out}.stdin
echo done`,
    );
    process.env.RACKGUARD_MQTT_PASSWORD = 'must-not-leak';
    try {
      const r = await runExec(def([hook], { env: { SITE_ROLE: 'primary' } }), ctx, { clock: systemClock, extra: { site: 's1' } });
      expect(r.status).toBe('succeeded');
      expect(r.detail.exitCode).toBe(0);
      expect(r.detail.outputTail).toBe('done\n');
    } finally {
      delete process.env.RACKGUARD_MQTT_PASSWORD;
    }
    expect(readFileSync(`${out}.env`, 'utf8')).toBe(`zone=row-a\nlevel=critical\nincident=${ctx.incident}\neta=123\ndry=0\nextra=primary\nmqttpw=\n`);
    const fromEnv = JSON.parse(readFileSync(`${out}.event`, 'utf8'));
    const fromStdin = JSON.parse(readFileSync(`${out}.stdin`, 'utf8'));
    expect(fromStdin).toEqual(fromEnv);
    expect(fromStdin).toMatchObject({ site: 's1', action: 'hook', incident: ctx.incident, zone: 'row-a', level: 'critical', etaS: 123.4, reason: nasty, dryRun: false, ts: '2026-11-30T01:00:00.000Z' });
  });

  it('arguments and values with ;, $() and quotes pass literally (no shell anywhere)', async () => {
    const out = join(dir, 'args-out');
    const hook = script('args.sh', `printf '%s\\n' "$@" > ${out}; printf '%s' "$RACKGUARD_REASON" > ${out}.reason`);
    const r = await runExec(def([hook, nasty, '$(id)', "it's"]), ctx, { clock: systemClock });
    expect(r.status).toBe('succeeded');
    expect(readFileSync(out, 'utf8')).toBe(`${nasty}\n$(id)\nit's\n`);
    expect(readFileSync(`${out}.reason`, 'utf8')).toBe(nasty);
    for (const f of ['pwned', 'pwned2', 'pwned3']) expect(existsSync(join(dir, f))).toBe(false);
  });

  it('a hung hook is killed at its timeout with its children, even when it ignores SIGTERM', async () => {
    // Virtual time: the timeout falls due when the test says, after the hook is in its hung state (TERM
    // ignored, child started). On real time a loaded machine could reach the deadline before the shell
    // reached its trap. The kill itself is real: signals to a real process group.
    const pids = join(dir, `pids-${++attempt}`);
    const hook = script('hang.sh', `trap '' TERM\nsleep 1000 &\necho started\necho "$$ $!" > ${pids}\nwait`);
    const clock = new VirtualClock();
    let result: Awaited<ReturnType<typeof runExec>> | undefined;
    void runExec(def([hook], { timeoutS: 0.5, killGraceS: 0.3 }), ctx, { clock }).then((r) => (result = r));
    try {
      const [leader, child] = await pidsOf(pids);
      clock.advance(500); // the timeout: SIGTERM to the group, which ignores it (the premise of the test)
      expect(gone(leader)).toBe(false);
      clock.advance(300); // the kill grace: SIGKILL to the group
      await expect.poll(() => result, { timeout: 20_000, interval: 10, message: 'the hook ends' }).toBeDefined();
      const r = result!;
      expect(r.status).toBe('timeout');
      expect(r.message).toMatch(/killed after its 0.5 s timeout/);
      expect(r.detail.outputTail).toBe('started\n');
      await expectGone(leader, 'the hook');
      await expectGone(child, "the hook's child");
    } finally {
      clock.advance(10_000); // a failed attempt leaves no hung hook behind (no timer left when it passed)
    }
  });

  it('a non-zero exit is a failure with its code; the output tail is bounded to the newest 4 KiB', async () => {
    const hook = script('loud.sh', `i=0; while [ $i -lt 2000 ]; do echo "line $i of noise padding padding padding"; i=$((i+1)); done; echo "the end" >&2; exit 3`);
    const r = await runExec(def([hook]), ctx, { clock: systemClock });
    expect(r.status).toBe('failed');
    expect(r.detail.exitCode).toBe(3);
    const tail = r.detail.outputTail as string;
    expect(Buffer.byteLength(tail)).toBe(OUTPUT_TAIL_BYTES);
    expect(tail.endsWith('line 1999 of noise padding padding padding\nthe end\n')).toBe(true);
    expect(r.detail.outputBytes as number).toBeGreaterThan(50_000);
  });

  it('a hook that cannot start is a failed result, not a throw', async () => {
    const r = await runExec(def([join(dir, 'missing.sh')]), ctx, { clock: systemClock });
    expect(r.status).toBe('failed');
    expect(r.message).toMatch(/cannot start .*ENOENT/);
  });

  it('an abort (agent stopping) kills the group', async () => {
    const pids = join(dir, `pids-abort-${++attempt}`);
    const hook = script('abort.sh', `sleep 1000 &\necho "$$ $!" > ${pids}\nwait`);
    const ac = new AbortController();
    const p = runExec(def([hook], { killGraceS: 0.2 }), ctx, { clock: systemClock, signal: ac.signal });
    // Abort once the script has said it started its child (an event, not a sleep).
    const [leader, child] = await pidsOf(pids).finally(() => ac.abort());
    const r = await p;
    expect(r.status).toBe('failed');
    await expectGone(leader, 'the hook');
    await expectGone(child, "the hook's child");
  });
});
