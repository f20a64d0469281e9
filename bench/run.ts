/**
 * `npm run bench` runs every suite; `npm run bench -- acquisition` runs one. Each suite prints its
 * figures and merges them into bench/results/latest.json under its own key. Targets are printed
 * beside the figures; they are never assertions.
 */
import { printFigures, writeFigures, type Figures } from './results.js';

type Suite = () => Promise<Figures | Record<string, Figures>>;

const SUITES: Record<string, () => Promise<Suite>> = {
  acquisition: async () => (await import('./suites/acquisition.js')).run,
  agent: async () => (await import('./suites/agent.js')).run,
  detection: async () => (await import('./suites/detection.js')).run,
  outputs: async () => (await import('./suites/outputs.js')).run,
};

async function main(): Promise<void> {
  const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const unknown = wanted.filter((w) => !(w in SUITES));
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown suite(s) ${unknown.join(', ')}; known: ${Object.keys(SUITES).join(', ')}\n`);
    process.exit(2);
  }
  for (const name of wanted.length > 0 ? wanted : Object.keys(SUITES)) {
    process.stdout.write(`\n== ${name}\n`);
    const run = await SUITES[name]!();
    const figures = (await run()) as Figures;
    printFigures(name, figures);
    process.stdout.write(`-> ${writeFigures(name, figures)}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
