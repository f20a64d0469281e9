/**
 * Import rules of rackguard, checked in the test suite (test/unit/dependencies.test.ts) with
 * dependency-cruiser. Paths are relative to the directory depcruise runs in (the repository root).
 *
 * The layers, from the bottom:
 *   agent/        the production agent. Imports nothing above it. Its pure modules (codec, decoding,
 *                 planner, sample tracking, config model, clock, errors, detection) may be used by the
 *                 layers above; its runtime (lines, pollers, stream sources, outputs, app) may not.
 *   firmware-sim/ the simulator: the agent's pure modules only.
 *   drill/        drills need both the agent's detector and the simulator's thermal model.
 *   scripts/, bench/, test/   may import anything.
 *
 * One exception: agent/main.ts loads drill/command.ts with a dynamic import() when the `drill`
 * command is chosen, so `rackguard drill` keeps working while `rackguard run` never evaluates
 * drill/ or firmware-sim/. A static import there would load the simulator into every agent
 * process, so only a dynamic (or type-only, erased at compile time) edge is allowed.
 */

/** The agent's acquisition runtime: I/O, timers and queues, not for the simulator. */
const ACQUISITION_RUNTIME = '^agent/acquisition/(rtu-line|tcp-line|serial-link|poller|stream-source|line)\\.ts$';
/** The agent's other runtime parts (outputs, composition root, process entry). */
const AGENT_RUNTIME = ['^agent/outputs/', '^agent/app\\.ts$', '^agent/main\\.ts$'];

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'An import cycle: modules that cannot be understood, tested or loaded one at a time.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'agent-not-to-sim',
      severity: 'error',
      comment: 'The production agent must never load the simulator.',
      from: { path: '^agent/' },
      to: { path: '^firmware-sim/' },
    },
    {
      name: 'agent-not-to-drill',
      severity: 'error',
      comment: 'Only agent/main.ts may reach drill/, and only lazily (see the header of this file).',
      from: { path: '^agent/', pathNot: '^agent/main\\.ts$' },
      to: { path: '^drill/' },
    },
    {
      name: 'agent-main-to-drill-lazily',
      severity: 'error',
      comment: 'agent/main.ts must load drill/ with a dynamic import(): a static import loads the simulator into `rackguard run`.',
      from: { path: '^agent/main\\.ts$' },
      to: { path: '^drill/', dynamic: false, dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'agent-not-to-dev-code',
      severity: 'error',
      comment: 'The agent ships alone: it never imports scripts, benchmarks or tests.',
      from: { path: '^agent/' },
      to: { path: '^(scripts|bench|test)/' },
    },
    {
      name: 'sim-not-to-acquisition-runtime',
      severity: 'error',
      comment: 'The simulator uses the agent\'s pure modules only (codec, decoding, planner, config model), never its acquisition runtime.',
      from: { path: '^firmware-sim/' },
      to: { path: ACQUISITION_RUNTIME },
    },
    {
      name: 'sim-not-to-agent-runtime',
      severity: 'error',
      comment: 'The simulator never loads the agent\'s outputs, app or entry point.',
      from: { path: '^firmware-sim/' },
      to: { path: AGENT_RUNTIME },
    },
    {
      name: 'sim-not-up',
      severity: 'error',
      comment: 'The simulator sits below drills, scripts, benchmarks and tests.',
      from: { path: '^firmware-sim/' },
      to: { path: '^(drill|scripts|bench|test)/' },
    },
    {
      name: 'drill-not-to-runtime',
      severity: 'error',
      comment: 'A drill runs on virtual time through pure modules: no acquisition or output runtime.',
      from: { path: '^drill/' },
      to: { path: [ACQUISITION_RUNTIME, ...AGENT_RUNTIME] },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'An import that does not resolve would hide an edge from every rule above.',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'shipped-not-to-dev-dependencies',
      severity: 'error',
      comment: 'agent/, firmware-sim/ and drill/ run from an install without devDependencies.',
      from: { path: '^(agent|firmware-sim|drill)/' },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // node_modules is not followed (doNotFollow) but must not be excluded: excluding it drops every edge
    // into a package, and shipped-not-to-dev-dependencies could then never fire.
    exclude: { path: '(^|/)dist/' },
    // Type-only imports count too: a cycle through types is still a cycle in the design.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    // Node's ESM resolution: './x.js' in an import means './x.ts' in the sources, and packages
    // that publish only an "exports" map (aedes) resolve through it.
    enhancedResolveOptions: {
      extensions: ['.ts', '.js', '.mjs', '.cjs', '.json'],
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
    },
    skipAnalysisNotInRules: false,
  },
};
