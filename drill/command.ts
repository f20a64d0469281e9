/**
 * The body of `rackguard drill`: load the scenario, run it, print the events and headline, write the
 * optional report and trace.
 *
 * agent/main.ts loads this module only through a dynamic import when the drill command is chosen:
 * a drill needs the simulator's thermal model, and the production agent (`rackguard run`) must never
 * load firmware-sim/. The import rules are in .dependency-cruiser.cjs.
 *
 * No process handling here: errors are thrown (a bad scenario as E_SCENARIO_INVALID) and main.ts
 * turns them into exit codes.
 */
import { closeSync, constants, fstatSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import type { Config } from '../agent/config/model.js';
import { describeFileType } from '../agent/config/read-file.js';
import { RackguardError } from '../agent/errors.js';
import { eventJson, eventLine } from '../agent/detection/replay.js';
import { traceText } from '../agent/detection/trace.js';
import { VirtualRackSampler } from '../firmware-sim/sampler.js';
import { loadScenarioFile } from '../firmware-sim/scenario.js';
import { plannedLine } from '../agent/actions/plan.js';
import { runDrill } from './drill.js';
import { renderReport } from './report.js';

export interface DrillCommandOptions {
  /** Scenario file (YAML). */
  scenario: string;
  /** Where to write the HTML report, if wanted. */
  report?: string | undefined;
  /** Where to write the generated trace (`time_s,point,value`), if wanted. */
  trace?: string | undefined;
  /** Events as JSON lines and nothing else on stdout. */
  json: boolean;
  /** Overrides the scenario's duration, s. */
  durationS?: number | undefined;
}

/**
 * The longest drill: a simulated day takes about 20 s and 150 MB here, so a week is minutes, and a
 * mistyped `--duration 1e12` (or a scenario's durationS) is refused instead of running for ever.
 */
export const MAX_DRILL_DURATION_S = 7 * 24 * 3600;

/**
 * Opens an output file (--report, --trace) before the drill runs, so that a wrong path fails at once,
 * not after minutes of simulation, and never blocks: O_NONBLOCK makes opening a FIFO that no process
 * reads fail (ENXIO) instead of waiting, and anything but a regular file is refused.
 */
function openOutput(flag: string, file: string): number {
  const fail = (why: string, cause?: unknown): never => {
    throw new RackguardError('E_OUTPUT_FILE', `${flag} ${file}: cannot write: ${why}`, { cause });
  };
  let fd = -1;
  try {
    fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_NONBLOCK | constants.O_NOCTTY, 0o644);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    fail(code === 'EISDIR' ? 'a directory, not a regular file' : code === 'ENXIO' ? 'a FIFO (named pipe), not a regular file' : (err as Error).message, err);
  }
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    fail(`${describeFileType(st)}, not a regular file`);
  }
  return fd;
}

function writeOutput(fd: number, text: string): void {
  try {
    ftruncateSync(fd, 0);
    const buf = Buffer.from(text);
    for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off, buf.length - off, off);
  } finally {
    closeSync(fd);
  }
}

/** Runs a drill for the CLI; `write` receives stdout text. */
export function drillCommand(config: Config, o: DrillCommandOptions, write: (text: string) => void): void {
  if (o.durationS !== undefined && !(o.durationS <= MAX_DRILL_DURATION_S)) {
    throw new RackguardError('E_SCENARIO_INVALID', `--duration: at most ${MAX_DRILL_DURATION_S} s (7 days), got ${o.durationS}`);
  }
  const scenario = loadScenarioFile(o.scenario, { config });
  if (o.durationS === undefined && scenario.durationS !== undefined && !(scenario.durationS <= MAX_DRILL_DURATION_S)) {
    throw new RackguardError('E_SCENARIO_INVALID', `${o.scenario}: durationS: at most ${MAX_DRILL_DURATION_S} s (7 days), got ${scenario.durationS}`);
  }
  const reportFd = o.report === undefined ? undefined : openOutput('--report', o.report);
  let traceFd: number | undefined;
  try {
    traceFd = o.trace === undefined ? undefined : openOutput('--trace', o.trace);
  } catch (err) {
    if (reportFd !== undefined) closeSync(reportFd);
    throw err;
  }
  const result = runDrill({ config, scenario, ...(o.durationS !== undefined ? { durationS: o.durationS } : {}) });
  for (const e of result.events) write(`${o.json ? JSON.stringify(eventJson(e)) : eventLine(e)}\n`);
  // The actions after the events that trigger them, in the order the engine would run them.
  for (const a of result.actions ?? []) write(`${o.json ? JSON.stringify({ kind: 'planned_action', ...a }) : plannedLine(a)}\n`);
  const h = result.headline;
  const fmt = (s: number | null): string => (s === null ? 'n/a' : `${Math.round(s)} s`);
  if (!o.json) {
    write(
      `drill ${result.scenario.name}: failure at ${fmt(h.onsetS)}; alarm after ${fmt(h.alarmAfterS)}, critical after ${fmt(h.criticalAfterS)}; ` +
        `lead before 32 °C ${fmt(h.lead32S)}, before 35 °C ${fmt(h.lead35S)}\n`,
    );
  }
  if (reportFd !== undefined) {
    writeOutput(reportFd, renderReport(result));
    if (!o.json) write(`report: ${o.report}\n`);
  }
  if (traceFd !== undefined) {
    const sampler = new VirtualRackSampler({ config, scenario });
    writeOutput(traceFd, traceText(sampler.run(result.scenario.durationS)));
    if (!o.json) write(`trace: ${o.trace}\n`);
  }
}
