/**
 * SIGHUP: re-read and validate the configuration file (issue 9 item 3). An invalid file, or a valid one
 * a reload cannot apply, changes nothing: every problem is logged on its own line and recorded as one
 * `config_reload_failed` event in the outbox (the sinks carry it to the operator), and the agent goes on
 * with the configuration it has. A valid one is applied by Agent.reload, and what changed is logged.
 * Reloads never overlap: a SIGHUP during a reload runs one more afterwards.
 *
 * A SIGHUP can come while the file is still being written (`cat > file`, a copy, an editor that
 * writes in place). A cut YAML file is usually invalid, but a prefix can be valid: cut after the
 * buses, it is a configuration with no zones, and applying it would switch detection off. So the
 * file must stay unchanged (inode, size, modification time) for `settleMs` before it is read, and
 * again until the read is done; a file that keeps changing for `settleMaxMs` is refused.
 */
import { statSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Agent } from '../app.js';
import { systemClock, type Clock } from '../clock.js';
import { ConfigError, loadConfigFile } from '../config/load.js';
import type { Config } from '../config/model.js';
import { preflightChecks } from '../config/preflight.js';
import { RackguardError } from '../errors.js';

export interface ReloaderDeps {
  file: string;
  agent: Agent;
  logger: Logger;
  /** Told the outcome, for the STATUS line. */
  onOutcome?: (ok: boolean, summary: string) => void;
  /** Called with the configuration once it is applied (main keeps its stop deadline from it). */
  onApplied?: (config: Config) => void;
  /** Monotonic time for the settle wait (a wall-clock step must not cut or stretch it). Default the system clock. */
  clock?: Clock;
  /** How long the file must stay unchanged before it is read. Default 500 ms. */
  settleMs?: number;
  /** How long a file that keeps changing is waited for before the reload is refused. Default 10 s. */
  settleMaxMs?: number;
}

const DEFAULT_SETTLE_MS = 500;
const DEFAULT_SETTLE_MAX_MS = 10_000;

/** What changes when a file is written or replaced; 'absent' when it cannot be stat'ed (the loader says why). */
function fingerprint(file: string): string {
  try {
    const st = statSync(file, { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch (err) {
    return `absent:${(err as NodeJS.ErrnoException).code ?? ''}`;
  }
}

export class Reloader {
  private running: Promise<void> | undefined;
  private again = false;

  constructor(private readonly deps: ReloaderDeps) {}

  /** Starts a reload, or queues one after the reload in progress. Never rejects. */
  request(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.reloadOnce();
      } while (this.again);
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async reloadOnce(): Promise<void> {
    const { file, agent, logger } = this.deps;
    logger.info({ file }, 'SIGHUP: reloading the configuration');
    let config: Config | undefined;
    let problems: string[] = [];
    const settleMs = this.deps.settleMs ?? DEFAULT_SETTLE_MS;
    const settleMaxMs = this.deps.settleMaxMs ?? DEFAULT_SETTLE_MAX_MS;
    const clock = this.deps.clock ?? systemClock;
    const sleep = (ms: number): Promise<void> => new Promise((resolve) => void clock.setTimeout(resolve, ms));
    const giveUpAt = clock.monoMs() + settleMaxMs;
    let before = fingerprint(file);
    for (;;) {
      await sleep(settleMs);
      const settled = fingerprint(file);
      if (settled === before) {
        config = undefined;
        problems = [];
        try {
          config = loadConfigFile(file);
          problems = preflightChecks(config).errors;
        } catch (err) {
          if (err instanceof ConfigError) problems = err.problems;
          else if (err instanceof RackguardError) problems = [err.message];
          else problems = [`unexpected error: ${(err as Error).message}`];
        }
        // Changed while it was read: what was read may be a mix of two versions.
        const after = fingerprint(file);
        if (after === settled) break;
        before = after;
      } else {
        before = settled;
      }
      if (clock.monoMs() >= giveUpAt) {
        config = undefined;
        problems = [`the file kept changing for ${Math.round(settleMaxMs / 1000)} s (a write still going on?): not read`];
        break;
      }
      logger.info({ file }, 'SIGHUP: the configuration file is being written; waiting for it to settle');
    }
    if (config && problems.length === 0) {
      try {
        const changes = await agent.reload(config);
        logger.info({ file, changes }, `configuration reloaded: ${changes.join('; ')}`);
        this.deps.onApplied?.(config);
        this.deps.onOutcome?.(true, 'configuration reloaded');
        return;
      } catch (err) {
        if (!(err instanceof RackguardError && err.code === 'E_RELOAD_NEEDS_RESTART')) {
          logger.error({ err, file }, 'configuration reload failed while applying it; the agent may be partly on the new configuration');
          this.deps.onOutcome?.(false, 'configuration reload failed');
          return;
        }
        problems = [err.message];
      }
    }
    for (const problem of problems) logger.error({ file, problem }, `configuration reload refused: ${problem.startsWith(`${file}:`) ? problem : `${file}: ${problem}`}`);
    logger.error({ file, problems: problems.length }, `configuration reload refused (${problems.length} problem${problems.length === 1 ? '' : 's'}): still running on the previous configuration`);
    agent.reportReloadFailure(file, problems);
    this.deps.onOutcome?.(false, `reload refused: ${problems.length} problem${problems.length === 1 ? '' : 's'} in ${file}`);
  }
}
