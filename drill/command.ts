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
import { writeFileSync } from 'node:fs';
import type { Config } from '../agent/config/model.js';
import { eventJson, eventLine } from '../agent/detection/replay.js';
import { traceText } from '../agent/detection/trace.js';
import { VirtualRackSampler } from '../firmware-sim/sampler.js';
import { loadScenarioFile } from '../firmware-sim/scenario.js';
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

/** Runs a drill for the CLI; `write` receives stdout text. */
export function drillCommand(config: Config, o: DrillCommandOptions, write: (text: string) => void): void {
  const scenario = loadScenarioFile(o.scenario, { config });
  const result = runDrill({ config, scenario, ...(o.durationS !== undefined ? { durationS: o.durationS } : {}) });
  for (const e of result.events) write(`${o.json ? JSON.stringify(eventJson(e)) : eventLine(e)}\n`);
  const h = result.headline;
  const fmt = (s: number | null): string => (s === null ? 'n/a' : `${Math.round(s)} s`);
  if (!o.json) {
    write(
      `drill ${result.scenario.name}: failure at ${fmt(h.onsetS)}; alarm after ${fmt(h.alarmAfterS)}, critical after ${fmt(h.criticalAfterS)}; ` +
        `lead before 32 °C ${fmt(h.lead32S)}, before 35 °C ${fmt(h.lead35S)}\n`,
    );
  }
  if (o.report) {
    writeFileSync(o.report, renderReport(result));
    if (!o.json) write(`report: ${o.report}\n`);
  }
  if (o.trace) {
    const sampler = new VirtualRackSampler({ config, scenario });
    writeFileSync(o.trace, traceText(sampler.run(result.scenario.durationS)));
    if (!o.json) write(`trace: ${o.trace}\n`);
  }
}
