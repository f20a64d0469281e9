/**
 * The host-command protocol's pure parts: canonical form, signatures, the acceptance rule (expiry,
 * skew, seq, host) and the gateway's seq counter, plus the seq file and the host.yaml loader.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  canonicalCommand,
  chooseReplyTopic,
  judgeCommand,
  MAX_COMMAND_BYTES,
  nextSeq,
  parseReply,
  signCommand,
  signReply,
  signatureMatches,
  type AcceptContext,
  type UnsignedHostCommand,
} from '../../agent/actions/host-protocol.js';
import { buildCommand } from '../../agent/actions/host-client.js';
import { FileSeqStore } from '../../agent/actions/seq-file.js';
import { hostConfigSchema, parseHostConfig } from '../../agent/config/host-schema.js';
import { yamlToData } from '../../agent/config/load.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const SECRET = 'a'.repeat(64);
const NOW = Date.UTC(2026, 3, 1, 12, 0, 0);

const unsigned = (over: Partial<UnsignedHostCommand> = {}): UnsignedHostCommand => ({
  v: 1,
  host: 'db-01',
  action: 'shutdown',
  incident: 'inc-1',
  seq: 10,
  issuedAtMs: NOW,
  expiresAtMs: NOW + 30_000,
  dryRun: false,
  gateway: 'gw-1',
  ...over,
});
const ctx = (over: Partial<AcceptContext> = {}): AcceptContext => ({ host: 'db-01', secret: SECRET, nowMs: NOW + 1000, maxClockSkewMs: 5000, lastSeq: 9, ...over });
const bytes = (o: unknown): Buffer => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o));
const verdictOf = (o: unknown, c: Partial<AcceptContext> = {}) => judgeCommand(bytes(o), ctx(c));

describe('canonical form', () => {
  it('is fixed-order JSON of every field but sig, whatever order the object was built in', () => {
    const a = unsigned();
    const reordered = Object.fromEntries(Object.entries(a).reverse()) as unknown as UnsignedHostCommand;
    expect(canonicalCommand(reordered)).toBe(canonicalCommand(a));
    expect(canonicalCommand(a)).toBe(
      `{"v":1,"host":"db-01","action":"shutdown","incident":"inc-1","seq":10,"issuedAtMs":${NOW},"expiresAtMs":${NOW + 30_000},"dryRun":false,"gateway":"gw-1"}`,
    );
  });

  it('signs with HMAC-SHA256 in lowercase hex, and every signed field changes the signature', () => {
    const sig = signCommand(unsigned(), SECRET).sig;
    expect(sig).toMatch(/^[0-9a-f]{64}$/);
    const changes: Partial<UnsignedHostCommand>[] = [{ host: 'db-02' }, { action: 'test' }, { incident: 'inc-2' }, { seq: 11 }, { issuedAtMs: NOW + 1 }, { expiresAtMs: NOW + 30_001 }, { dryRun: true }, { gateway: 'gw-2' }];
    for (const c of changes) expect(signCommand(unsigned(c), SECRET).sig, JSON.stringify(c)).not.toBe(sig);
    expect(signCommand(unsigned(), 'b'.repeat(64)).sig).not.toBe(sig);
  });

  it('verifies only a 64-hex-digit signature of the exact text', () => {
    const text = canonicalCommand(unsigned());
    const sig = signCommand(unsigned(), SECRET).sig;
    expect(signatureMatches(SECRET, text, sig)).toBe(true);
    expect(signatureMatches(SECRET, text, sig.toUpperCase())).toBe(false);
    expect(signatureMatches(SECRET, text, sig.slice(0, 62))).toBe(false);
    expect(signatureMatches(SECRET, text, `${sig}00`)).toBe(false);
    expect(signatureMatches(SECRET, `${text} `, sig)).toBe(false);
    expect(signatureMatches(SECRET, text, 42)).toBe(false);
  });
});

describe('judgeCommand', () => {
  it('accepts a signed, current command for this host with a higher seq', () => {
    const v = verdictOf(signCommand(unsigned(), SECRET));
    expect(v.accept).toBe(true);
  });

  it.each([
    ['unsigned', unsigned()],
    ['unsigned', { ...unsigned(), sig: '' }],
    ['bad-signature', { ...signCommand(unsigned(), SECRET), sig: signCommand(unsigned(), 'x'.repeat(64)).sig }],
    ['bad-signature', { ...signCommand(unsigned(), SECRET), seq: 11 }],
    ['wrong-host', signCommand(unsigned({ host: 'db-02' }), SECRET)],
    ['replayed', signCommand(unsigned({ seq: 9 }), SECRET)],
    ['replayed', signCommand(unsigned({ seq: 3 }), SECRET)],
    ['malformed', { ...signCommand(unsigned(), SECRET), extra: 'x' }],
    ['malformed', { ...signCommand(unsigned(), SECRET), v: 2 }],
    ['malformed', signCommand(unsigned({ action: 'reboot' as 'test' }), SECRET)],
    ['malformed', signCommand(unsigned({ seq: 1.5 }), SECRET)],
    ['malformed', signCommand(unsigned({ incident: 'a\nb' }), SECRET)],
    ['malformed', signCommand(unsigned({ host: 'a/b' }), SECRET)],
    ['malformed', signCommand(unsigned({ expiresAtMs: NOW }), SECRET)],
    ['malformed', '{"v":1,'],
    ['malformed', '[1,2]'],
  ])('rejects %s: %j', (reason, msg) => {
    const v = verdictOf(msg);
    expect(v.accept).toBe(false);
    if (!v.accept) expect(v.reason).toBe(reason);
  });

  it('rejects an oversized payload before parsing it', () => {
    const big = Buffer.alloc(MAX_COMMAND_BYTES + 1, 0x20);
    const v = judgeCommand(big, ctx());
    expect(v).toMatchObject({ accept: false, reason: 'oversized' });
    // Exactly at the limit is parsed (and here malformed, being blanks).
    expect(judgeCommand(Buffer.alloc(MAX_COMMAND_BYTES, 0x20), ctx())).toMatchObject({ accept: false, reason: 'malformed' });
  });

  it('rejects a command past its expiry plus the allowed skew, and accepts it within the skew', () => {
    const cmd = signCommand(unsigned({ expiresAtMs: NOW + 10_000 }), SECRET);
    expect(verdictOf(cmd, { nowMs: NOW + 10_000 + 5000 }).accept).toBe(true);
    expect(verdictOf(cmd, { nowMs: NOW + 10_000 + 5001 })).toMatchObject({ accept: false, reason: 'expired' });
    expect(verdictOf(cmd, { nowMs: NOW + 10_000 + 5001, maxClockSkewMs: 0 })).toMatchObject({ accept: false, reason: 'expired' });
  });

  it('rejects a command issued in the future beyond the skew (a gateway clock ahead)', () => {
    const cmd = signCommand(unsigned({ issuedAtMs: NOW + 60_000, expiresAtMs: NOW + 90_000 }), SECRET);
    expect(verdictOf(cmd, { nowMs: NOW })).toMatchObject({ accept: false, reason: 'not-yet-valid' });
    expect(verdictOf(cmd, { nowMs: NOW + 56_000 }).accept).toBe(true);
  });

  it('checks the signature before believing any field: a forged command for another host is bad-signature', () => {
    const other = signCommand(unsigned({ host: 'db-02' }), 'other-host-secret'.repeat(3));
    expect(verdictOf(other)).toMatchObject({ accept: false, reason: 'bad-signature' });
  });

  it('keeps the seq and incident of a rejected command for the reply', () => {
    const v = verdictOf(signCommand(unsigned({ seq: 5 }), SECRET));
    expect(v).toMatchObject({ accept: false, reason: 'replayed', hints: { seq: 5, incident: 'inc-1' } });
  });
});

describe('replies', () => {
  it('verify with the host secret, and a forged or altered reply is refused', () => {
    const r = signReply({ v: 1, host: 'db-01', seq: 10, incident: 'inc-1', status: 'done', final: true, exitCode: 0, tsMs: NOW }, SECRET);
    expect(parseReply(bytes(r), SECRET)).toMatchObject({ status: 'done', seq: 10 });
    expect(parseReply(bytes({ ...r, status: 'failed' }), SECRET)).toBeUndefined();
    expect(parseReply(bytes(r), 'z'.repeat(64))).toBeUndefined();
    expect(parseReply(bytes('nonsense'), SECRET)).toBeUndefined();
  });

  it('use the MQTT 5 response topic only under the base topic and without wildcards', () => {
    expect(chooseReplyTopic('rg', 'h', 'rg/gw/replies')).toBe('rg/gw/replies');
    expect(chooseReplyTopic('rg', 'h', 'elsewhere/x')).toBe('rg/hosts/h/reply');
    expect(chooseReplyTopic('rg', 'h', 'rg/+/x')).toBe('rg/hosts/h/reply');
    expect(chooseReplyTopic('rg', 'h', undefined)).toBe('rg/hosts/h/reply');
  });
});

describe('gateway seq', () => {
  it('rises above the last seq and never falls below the wall clock', () => {
    expect(nextSeq(0, NOW)).toBe(NOW);
    expect(nextSeq(NOW + 500, NOW)).toBe(NOW + 501);
    // A clock stepped back (an RTC-less Pi after boot) still yields a higher seq.
    expect(nextSeq(NOW, NOW - 3_600_000)).toBe(NOW + 1);
  });

  it('builds a command that expires ttlS after it is issued', () => {
    const c = buildCommand('db-01', { action: 'test', incident: 'i', dryRun: true, ttlS: 30 }, { gateway: 'gw', seq: 7, nowWallMs: NOW + 0.7 });
    expect(c).toMatchObject({ v: 1, host: 'db-01', seq: 7, issuedAtMs: NOW, expiresAtMs: NOW + 30_000, dryRun: true, gateway: 'gw' });
  });
});

let tmp: TempDir;
beforeAll(async () => {
  tmp = await tempDir('rackguard-hostproto-');
});
afterAll(async () => {
  await tmp?.cleanup();
});

describe('FileSeqStore', () => {
  it('reads 0 when absent, persists atomically, and refuses a damaged file instead of reading 0', () => {
    const file = join(tmp.path, 'state', 'last-seq.json');
    const s = new FileSeqStore(file);
    expect(s.read()).toBe(0);
    s.write(42);
    expect(new FileSeqStore(file).read()).toBe(42);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({ v: 1, lastSeq: 42 });
    writeFileSync(file, '{"lastSeq": "x"}');
    expect(() => s.read()).toThrow(/damaged/);
    writeFileSync(file, '');
    expect(() => s.read()).toThrow(expect.objectContaining({ code: 'E_HOST_STATE' }));
  });

  it('reports a write it cannot make as E_HOST_STATE', () => {
    // A regular file where the state directory should be: refused even for root.
    const blocker = join(tmp.path, 'not-a-dir');
    writeFileSync(blocker, '');
    expect(() => new FileSeqStore(join(blocker, 'last-seq.json')).write(1)).toThrow(expect.objectContaining({ code: 'E_HOST_STATE' }));
  });
});

describe('host.yaml', () => {
  it('reports every problem at once with its path', () => {
    const text = `version: 1
host: "db/01"
mqtt: { url: "http://x", protocolVersion: 3 }
secretFile: missing.secret
commands: { shutdown: [systemctl, poweroff] }
commandTimeoutS: "5"
bogus: 1
`;
    let problems: string[] = [];
    try {
      parseHostConfig(text, 'host.yaml', tmp.path);
    } catch (err) {
      problems = (err as { problems: string[] }).problems;
    }
    expect(problems.join('\n')).toMatch(/^host: /m);
    expect(problems.join('\n')).toMatch(/^mqtt\.url: /m);
    expect(problems.join('\n')).toMatch(/^mqtt\.protocolVersion: /m);
    expect(problems.join('\n')).toMatch(/^commandTimeoutS: .*remove the quotes/m);
    expect(problems.join('\n')).toMatch(/^bogus: unknown field/m);
  });

  it('checks files and commands once the shape is right, resolving paths against the config directory', () => {
    const text = `version: 1
host: db-01
mqtt: { url: "mqtt://127.0.0.1:1883" }
secretFile: missing.secret
commands: { shutdown: [systemctl, poweroff], test: [/nonexistent/bin/check] }
`;
    let problems: string[] = [];
    try {
      parseHostConfig(text, 'host.yaml', tmp.path);
    } catch (err) {
      problems = (err as { problems: string[] }).problems;
    }
    expect(problems).toEqual([
      `secretFile: cannot read ${join(tmp.path, 'missing.secret')}: ENOENT`,
      'commands.shutdown[0]: expected an absolute path, got "systemctl"',
      'commands.test[0]: /nonexistent/bin/check is not executable here: ENOENT',
    ]);
    writeFileSync(join(tmp.path, 'ok.secret'), `${SECRET}\n`);
    const ok = parseHostConfig(text.replace('missing.secret', 'ok.secret').replace('[systemctl, poweroff], test: [/nonexistent/bin/check]', '[/bin/true]'), 'host.yaml', tmp.path);
    expect(ok).toMatchObject({ host: 'db-01', secretFile: join(tmp.path, 'ok.secret'), baseTopic: 'rackguard', dryRun: false, maxClockSkewS: 30, mqtt: { protocolVersion: 5 } });
    expect(Object.isFrozen(ok.commands)).toBe(true);
  });
});

describe('config/host.example.yaml', () => {
  it('matches the schema (its files name the paths of a real server, so only the shape is checked here)', () => {
    const doc = yamlToData(readFileSync(join(import.meta.dirname, '..', '..', 'config', 'host.example.yaml'), 'utf8'));
    expect(doc.ok).toBe(true);
    const r = hostConfigSchema.safeParse(doc.ok ? doc.data : undefined);
    expect(r.error?.issues ?? []).toEqual([]);
  });
});
