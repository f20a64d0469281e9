// Lives in scripts/lib so the benchmarks and the demo share it with the tests.
export * from '../../scripts/lib/mosquitto.js';
