/**
 * SIGHUP: re-read and validate the configuration file (issue 9 item 3). An invalid file, or a valid one
 * a reload cannot apply, changes nothing: every problem is logged on its own line and recorded as one
 * `config_reload_failed` event in the outbox (the sinks carry it to the operator), and the agent goes on
 * with the configuration it has. A valid one is applied by Agent.reload, and what changed is logged.
 * Reloads never overlap: a SIGHUP during a reload runs one more afterwards.
 */
import type { Logger } from 'pino';
import type { Agent } from '../app.js';
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
    try {
      config = loadConfigFile(file);
      problems = preflightChecks(config).errors;
    } catch (err) {
      if (err instanceof ConfigError) problems = err.problems;
      else if (err instanceof RackguardError) problems = [err.message];
      else problems = [`unexpected error: ${(err as Error).message}`];
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
    for (const problem of problems) logger.error({ file, problem }, `configuration reload refused: ${file}: ${problem}`);
    logger.error({ file, problems: problems.length }, `configuration reload refused (${problems.length} problem${problems.length === 1 ? '' : 's'}): still running on the previous configuration`);
    agent.reportReloadFailure(file, problems);
    this.deps.onOutcome?.(false, `reload refused: ${problems.length} problem${problems.length === 1 ? '' : 's'} in ${file}`);
  }
}
