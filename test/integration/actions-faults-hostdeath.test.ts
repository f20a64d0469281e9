/**
 * The host agent (`rackguard host`, dist/agent/main.js: `npm run build` first) goes away while its
 * local shutdown command runs: the usual case, since that command stops the services, the agent's
 * own among them (its unit has KillMode=process so the command survives). The command must still run
 * to its end: it must not die of a broken output pipe (SIGPIPE) at its next line of output.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostReplyRouter, sendHostCommand } from '../../agent/actions/host-client.js';
import { FileSeqStore } from '../../agent/actions/seq-file.js';
import { silentLogger } from '../helpers/agent.js';
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';
import { spawnAndWait, type SpawnedProcess } from '../helpers/proc.js';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'agent', 'main.js');
const BASE = 'rg-death';
let broker: Mosquitto;
let tmp: TempDir;
let gw: MqttClient;
let host: SpawnedProcess | undefined;
let attempts = 0;

beforeAll(async () => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run npm run build first`);
  broker = await startMosquitto();
  tmp = await tempDir('rackguard-faults-hostdeath-');
  gw = await mqtt.connectAsync(broker.url, { clientId: 'death-gw', protocolVersion: 5 });
});
afterAll(async () => {
  await host?.stop('SIGKILL');
  await gw?.endAsync(true);
  await broker?.cleanup();
  await tmp?.cleanup();
});

const alive = (pid: number): boolean => {
  try {
    // A zombie (exited, not yet reaped) counts as gone.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

describe('host agent gone while its command runs', () => {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    it(`${signal} to the host agent: its shutdown command still runs to the end, writing output after the agent is gone`, async () => {
      // A directory per attempt: a retry must not meet the failed attempt's directory, pid or marks.
      const dir = join(tmp.path, `${signal}-${++attempts}`);
      mkdirSync(dir);
      const secretFile = join(dir, 'secret');
      writeFileSync(secretFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
      const gate = join(dir, 'gate');
      const marks = join(dir, 'marks');
      const script = join(dir, 'shutdown.sh');
      // Says where it is on stdout and stderr, as shutdown scripts do (stopping VMs, syncing …).
      writeFileSync(script, `#!/bin/sh\necho $$ > "${dir}/pid"\necho "stopping VMs"\nwhile [ ! -e "${gate}" ]; do sleep 0.02; done\necho "VMs stopped"\necho "syncing" >&2\necho done >> "${marks}"\n`);
      chmodSync(script, 0o755);
      const yaml = join(dir, 'host.yaml');
      writeFileSync(yaml, `version: 1\nhost: db-01\nmqtt: { url: "${broker.url}", reconnectMs: 200, clientId: death-${signal} }\nbaseTopic: ${BASE}\nsecretFile: ${secretFile}\nstateDir: ${join(dir, 'state')}\ncommands: { shutdown: ["${script}"] }\n`);
      host = await spawnAndWait(process.execPath, [MAIN, 'host', '--config', yaml], { readyLine: /host agent ready/, timeoutMs: 20_000, cwd: dir });

      const router = new HostReplyRouter(gw, BASE, silentLogger);
      try {
        const h = await sendHostCommand(gw, 'db-01', { action: 'shutdown', incident: `inc-${signal}`, dryRun: false, ttlS: 60 }, { secret: readFileSync(secretFile, 'utf8').trim(), seqStore: new FileSeqStore(join(dir, 'gw-seq.json')), replies: router, baseTopic: BASE, gateway: 'gw-1', ackTimeoutMs: 10_000 });
        expect(h.ack.kind === 'reply' && h.ack.reply.status).toBe('accepted');
        await expect.poll(() => existsSync(join(dir, 'pid')), { timeout: 10_000 }).toBe(true);
        const pid = Number(readFileSync(join(dir, 'pid'), 'utf8').trim());

        await host.stop(signal);
        host = undefined;
        writeFileSync(gate, '');
        // No event tells when an orphaned process ends: its /proc entry is the external state.
        await expect.poll(() => alive(pid), { timeout: 10_000, interval: 20 }).toBe(false);
        expect(existsSync(marks) ? readFileSync(marks, 'utf8') : '(no marks: the command died before its end)').toBe('done\n');
        // Nobody read its output file back; the next start of the host agent removes it.
        const outputs = (): string[] => readdirSync(join(dir, 'state')).filter((n) => /^command-\d+\.out$/.test(n));
        expect(outputs()).toHaveLength(1);
        host = await spawnAndWait(process.execPath, [MAIN, 'host', '--config', yaml], { readyLine: /host agent ready/, timeoutMs: 20_000, cwd: dir });
        expect(outputs()).toEqual([]);
        await host.stop('SIGTERM');
        host = undefined;
      } finally {
        router.detach();
        // Not left running for a retry (same client id) after a failure.
        await host?.stop('SIGKILL');
        host = undefined;
      }
    }, 60_000);
  }
});
