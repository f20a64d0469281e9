/**
 * `npm run bench` runs every suite; `npm run bench -- acquisition` runs one. Each suite prints its
 * figures and merges them into bench/results/latest.json under its own key. Targets are printed
 * beside the figures; they are never assertions.
 *
 * Every suite runs in a process of its own: memory figures (RSS, peak RSS) must describe the suite
 * that printed them, not the garbage an earlier suite left behind (a week-long detection replay
 * takes a shared process to gigabytes, which once made an outage look like it shrank memory).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { printFigures, writeFigures, type Figures } from './results.js';

type Suite = () => Promise<Figures>;

const SUITES: Record<string, () => Promise<Suite>> = {
  acquisition: async () => (await import('./suites/acquisition.js')).run,
  actions: async () => (await import('./suites/actions.js')).run,
  'actions-bmc': async () => (await import('./suites/actions-bmc.js')).run,
  agent: async () => (await import('./suites/agent.js')).run,
  detection: async () => (await import('./suites/detection.js')).run,
  observability: async () => (await import('./suites/observability.js')).run,
  outputs: async () => (await import('./suites/outputs.js')).run,
  outage: async () => (await import('./suites/outage.js')).run,
  recovery: async () => (await import('./suites/recovery.js')).run,
};

/** Where a suite's figures go in latest.json when not under its own name (the issue names them actions.*). */
const RESULT_KEYS: Record<string, string> = { 'actions-bmc': 'actions' };

/** Runs one suite in this process (the child side). */
async function runHere(name: string): Promise<void> {
  const run = await SUITES[name]!();
  const figures = await run();
  printFigures(name, figures);
  process.stdout.write(`-> ${writeFigures(name, figures, RESULT_KEYS[name] ?? name)}\n`);
}

/** Runs one suite in a fresh node process with the same flags (--expose-gc). */
function runChild(name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--child', name], { stdio: 'inherit' });
    child.once('error', reject);
    child.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`suite ${name} failed (${signal ?? `exit ${String(code)}`})`))));
  });
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const child = args.indexOf('--child');
  if (child >= 0) {
    await runHere(args[child + 1]!);
    return;
  }
  const wanted = args.filter((a) => !a.startsWith('-'));
  const unknown = wanted.filter((w) => !(w in SUITES));
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown suite(s) ${unknown.join(', ')}; known: ${Object.keys(SUITES).join(', ')}\n`);
    process.exit(2);
  }
  const failed: string[] = [];
  for (const name of wanted.length > 0 ? wanted : Object.keys(SUITES)) {
    process.stdout.write(`\n== ${name}\n`);
    try {
      await runChild(name);
    } catch (err) {
      failed.push(name);
      process.stderr.write(`bench: ${(err as Error).message}\n`);
    }
  }
  if (failed.length > 0) process.exit(1);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
