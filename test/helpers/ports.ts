// Moved to scripts/lib so the demo and the benchmarks share it with the tests.
export * from '../../scripts/lib/ports.js';
