// Lives in scripts/lib so the benchmarks share it with the tests.
export * from '../../scripts/lib/ipmi-sim.js';
