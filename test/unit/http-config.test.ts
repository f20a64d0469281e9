/**
 * The `http:` section's checks at load: a bind any other host can reach needs a token file, a token
 * file is resolved relative to the config file and must be a regular file now. Through parseConfig,
 * and through `rackguard check-config` for the exit code. Nothing here binds a socket.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, isLoopbackAddress, loadConfigFile, parseConfig } from '../../agent/config/load.js';
import { packageRoot } from '../../agent/paths.js';
import { rackText } from '../helpers/config-text.js';

const ROOT = packageRoot();
const dir = mkdtempSync(join(tmpdir(), 'rackguard-http-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configText(http: string): string {
  return `${rackText(1)}${http}
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

describe('http config', () => {
  it('defaults: 127.0.0.1:9108, no token; absent section: no endpoint', () => {
    expect(parseConfig(configText('http: {}'), 't').http).toEqual({ bind: '127.0.0.1', port: 9108, recentEvents: 200 });
    expect(parseConfig(configText(''), 't').http).toBeUndefined();
  });

  it.each(['0.0.0.0', '192.0.2.1', '::', 'gateway.example.net', '::ffff:192.0.2.1'])('bind %s without tokenFile is refused, naming http.bind', (bind) => {
    const problems = problemsOf(configText(`http: { bind: "${bind}", port: 0 }`));
    expect(problems).toEqual([`http.bind: "${bind}" is not a loopback address; binding it needs http.tokenFile (a file holding the token every request must carry)`]);
  });

  it.each(['127.0.0.1', '127.0.0.2', 'localhost', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1'])('bind %s (loopback) needs no token', (bind) => {
    expect(problemsOf(configText(`http: { bind: "${bind}", port: 0 }`))).toEqual([]);
  });

  it('isLoopbackAddress', () => {
    expect(isLoopbackAddress('127.255.0.1')).toBe(true);
    expect(isLoopbackAddress('128.0.0.1')).toBe(false);
    expect(isLoopbackAddress('::2')).toBe(false);
  });

  it('tokenFile: resolved relative to the config file, must exist and be a regular file', () => {
    mkdirSync(join(dir, 'secrets'), { recursive: true });
    writeFileSync(join(dir, 'secrets', 'token'), 'abc\n');
    const cfgFile = join(dir, 'rackguard.yaml');
    writeFileSync(cfgFile, configText('http: { bind: 0.0.0.0, port: 0, tokenFile: secrets/token }'));
    expect(loadConfigFile(cfgFile).http?.tokenFile).toBe(join(dir, 'secrets', 'token'));
    expect(problemsOf(configText('http: { tokenFile: secrets/missing }'))).toEqual([`http.tokenFile: cannot read ${join(dir, 'secrets', 'missing')}: ENOENT`]);
    expect(problemsOf(configText('http: { tokenFile: secrets }'))).toEqual([`http.tokenFile: cannot read ${join(dir, 'secrets')}: a directory, not a regular file`]);
  });

  it('rackguard check-config exits 2 naming http.bind for bind 0.0.0.0 and 192.0.2.1 without tokenFile', () => {
    for (const bind of ['0.0.0.0', '192.0.2.1']) {
      const file = join(dir, `bind-${bind}.yaml`);
      writeFileSync(file, configText(`http: { bind: "${bind}", port: 0 }`));
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'agent/main.ts'), 'check-config', file], { cwd: ROOT, encoding: 'utf8' });
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(`http.bind: "${bind}" is not a loopback address; binding it needs http.tokenFile`);
      expect(r.stdout).toBe('');
    }
  });
});
