/**
 * The import rules of .dependency-cruiser.cjs, checked by dependency-cruiser itself (the CLI, as CI
 * or a developer would run it): no cycle, the agent never loads the simulator, the simulator never
 * loads the agent's acquisition runtime, `rackguard drill` reaches the simulator only lazily.
 *
 * A rule set that matches nothing passes as well as a house in order does, so the same config is
 * also run on a small fixture tree that breaks each rule once, and every break must be reported.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir, type TempDir } from '../helpers/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const CONFIG = join(ROOT, '.dependency-cruiser.cjs');
const DEPCRUISE = join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

interface Violation {
  from: string;
  to: string;
  rule: { name: string; severity: string };
  cycle?: Array<{ name: string }>;
}
interface Dependency {
  resolved: string;
  dynamic: boolean;
  dependencyTypes: string[];
}
interface CruiseResult {
  modules: Array<{ source: string; dependencies: Dependency[] }>;
  summary: { violations: Violation[]; totalCruised: number };
}

/** Runs depcruise with the project's rules in `cwd` over `dirs`; returns its JSON result. */
function depcruise(cwd: string, dirs: string[]): CruiseResult {
  const r = spawnSync(process.execPath, [DEPCRUISE, '--config', CONFIG, '--output-type', 'json', ...dirs], { cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (!r.stdout) throw new Error(`depcruise gave no output (exit ${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as CruiseResult;
}

const show = (vs: Violation[]): string => vs.map((v) => `${v.rule.name}: ${v.from} → ${v.to}${v.cycle ? ` (cycle ${v.cycle.map((c) => c.name).join(' → ')})` : ''}`).join('\n');

describe('the repository', () => {
  let result: CruiseResult;
  beforeAll(() => {
    // bench/ and test/ may import anything, but a cycle or an import that does not resolve there hides
    // edges as well as anywhere else.
    result = depcruise(ROOT, ['agent', 'firmware-sim', 'drill', 'scripts', 'bench', 'test']);
  });

  it('has no import cycle and no forbidden edge', () => {
    // Printed so a failure says which edge to remove.
    expect(show(result.summary.violations)).toBe('');
    expect(result.summary.totalCruised).toBeGreaterThan(50);
  });

  it('reaches drill/ from agent/main.ts only through a dynamic import', () => {
    const main = result.modules.find((m) => m.source === 'agent/main.ts');
    expect(main).toBeDefined();
    const runtime = main!.dependencies.filter((d) => d.resolved.startsWith('drill/') && !d.dependencyTypes.includes('type-only'));
    expect(runtime.map((d) => [d.resolved, d.dynamic])).toEqual([['drill/command.ts', true]]);
  });
});

describe('the rules bite', () => {
  let fixture: TempDir;
  let violations: Violation[];

  // Each file breaks one rule, except those marked allowed.
  const FILES: Record<string, string> = {
    'tsconfig.json': JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true } }),
    'package.json': JSON.stringify({ name: 'fixture', type: 'module', devDependencies: { 'dev-only': '1.0.0' } }),
    'node_modules/dev-only/package.json': JSON.stringify({ name: 'dev-only', version: '1.0.0', type: 'module', main: 'index.js' }),
    'node_modules/dev-only/index.js': 'export const dev = 1;\n',
    'agent/uses-dev-dependency.ts': "import { dev } from 'dev-only';\nexport const d = dev;\n",
    'agent/uses-scripts.ts': "import { helper } from '../scripts/helper.js';\nexport const h = helper;\n",
    'scripts/helper.ts': 'export const helper = 3;\n',
    'agent/unresolved.ts': "import { gone } from './no-such-module.js';\nexport const u = gone;\n",
    'agent/outputs/mqtt.ts': 'export const mqtt = 4;\n',
    'firmware-sim/uses-outputs.ts': "import { mqtt } from '../agent/outputs/mqtt.js';\nexport const o = mqtt;\n",
    'firmware-sim/uses-drill.ts': "import { report } from '../drill/report.js';\nexport const r = report;\n",
    'drill/report.ts': 'export const report = 5;\n',
    'drill/uses-poller.ts': "import { poll } from '../agent/acquisition/poller.js';\nexport const p = poll;\n",
    'agent/a.ts': "import { b } from './b.js';\nexport const a = (): number => b() + 1;\n",
    'agent/b.ts': "import { a } from './a.js';\nexport const b = (): number => a() - 1;\n",
    'agent/uses-sim.ts': "import { sim } from '../firmware-sim/rack.js';\nexport const x = sim;\n",
    'agent/uses-drill.ts': "import { drill } from '../drill/command.js';\nexport const y = drill;\n",
    'agent/main.ts': "import { drill } from '../drill/command.js';\nexport const z = drill;\n",
    'agent/acquisition/poller.ts': 'export const poll = 1;\n',
    'agent/acquisition/decode.ts': 'export const decode = 2;\n',
    // Allowed: the simulator may use the agent's pure decoding.
    'firmware-sim/rack.ts': "import { decode } from '../agent/acquisition/decode.js';\nexport const sim = decode;\n",
    'firmware-sim/sampler.ts': "import { poll } from '../agent/acquisition/poller.js';\nexport const s = poll;\n",
    // Allowed: a drill may use both the agent and the simulator.
    'drill/command.ts': "import { sim } from '../firmware-sim/rack.js';\nimport { decode } from '../agent/acquisition/decode.js';\nexport const drill = sim + decode;\n",
  };

  beforeAll(async () => {
    fixture = await tempDir('rackguard-depcruise-');
    for (const [file, text] of Object.entries(FILES)) {
      mkdirSync(dirname(join(fixture.path, file)), { recursive: true });
      writeFileSync(join(fixture.path, file), text);
    }
    violations = depcruise(fixture.path, ['agent', 'firmware-sim', 'drill', 'scripts']).summary.violations;
  });
  afterAll(async () => {
    await fixture?.cleanup();
  });

  it('reports each cycle, forbidden edge and static drill import, and nothing that is allowed', () => {
    const got = violations.map((v) => `${v.rule.name}: ${v.from} → ${v.to}`).sort();
    expect(got).toEqual(
      [
        // One report per cycle, naming where it was entered.
        'no-circular: agent/a.ts → agent/b.ts',
        'agent-not-to-sim: agent/uses-sim.ts → firmware-sim/rack.ts',
        'agent-not-to-drill: agent/uses-drill.ts → drill/command.ts',
        'agent-main-to-drill-lazily: agent/main.ts → drill/command.ts',
        'sim-not-to-acquisition-runtime: firmware-sim/sampler.ts → agent/acquisition/poller.ts',
        'shipped-not-to-dev-dependencies: agent/uses-dev-dependency.ts → node_modules/dev-only/index.js',
        'agent-not-to-dev-code: agent/uses-scripts.ts → scripts/helper.ts',
        'not-to-unresolvable: agent/unresolved.ts → ./no-such-module.js',
        'sim-not-to-agent-runtime: firmware-sim/uses-outputs.ts → agent/outputs/mqtt.ts',
        'sim-not-up: firmware-sim/uses-drill.ts → drill/report.ts',
        'drill-not-to-runtime: drill/uses-poller.ts → agent/acquisition/poller.ts',
      ].sort(),
    );
    expect(violations.every((v) => v.rule.severity === 'error')).toBe(true);
  });

  it('accepts main.ts loading drill/ with a dynamic import', async () => {
    writeFileSync(join(fixture.path, 'agent/main.ts'), "export async function drill(): Promise<unknown> {\n  return (await import('../drill/command.js')).drill;\n}\n");
    const again = depcruise(fixture.path, ['agent', 'firmware-sim', 'drill', 'scripts']).summary.violations;
    expect(again.filter((v) => v.from === 'agent/main.ts')).toEqual([]);
    expect(again).toHaveLength(violations.length - 1);
  });
});
