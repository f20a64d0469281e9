/**
 * BMC shutdown through IPMI, end to end on real parts: Debian's ipmitool (the production transport,
 * agent/actions/bmc-ipmi.ts) against OpenIPMI's ipmi_sim on a loopback UDP port, whose chassis-control
 * script turns the simulated power off on `chassis power soft`.
 *   bmc_soft_off_ms      median, from the request to power-off confirmed by a `chassis power status`
 *                        poll (the first poll follows the acknowledgement at once, then every 250 ms here; target <= 2000 ms; production
 *                        polls every 5 s, which dominates this figure there)
 *   bmc_soft_off_max_ms  the slowest of the runs
 *   bmc_soft_ack_ms      median, from the request to the BMC's acceptance of `chassis power soft`
 * The issue names this figure actions.bmc_soft_off_ms: bench/run.ts merges these figures into the
 * `actions` key of bench/results/latest.json, beside the actions suite's own.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { createIpmiTransport } from '../../agent/actions/bmc-ipmi.js';
import type { HostOutcome } from '../../agent/actions/types.js';
import { systemClock } from '../../agent/clock.js';
import { ipmiHostSchema } from '../../agent/config/actions-schema.js';
import { startIpmiSim } from '../../scripts/lib/ipmi-sim.js';
import { tempDir } from '../../scripts/lib/tmp.js';
import type { Figures } from '../results.js';

const RUNS = 10;
const POLL_INTERVAL_MS = 250;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function run(): Promise<Figures> {
  const tmp = await tempDir('rackguard-bench-bmc-');
  const sim = await startIpmiSim();
  try {
    writeFileSync(join(tmp.path, 'user'), `${sim.username}\n`);
    writeFileSync(join(tmp.path, 'pass'), `${sim.password}\n`, { mode: 0o600 });
    const host = ipmiHostSchema.parse({ via: 'ipmi', name: 'bench-node', address: '127.0.0.1', port: sim.port, usernameFile: join(tmp.path, 'user'), passwordFile: join(tmp.path, 'pass'), forceOffAfterS: 60 });
    const transport = createIpmiTransport(
      { logger: pino({ level: 'silent' }), clock: systemClock, gateway: 'bench', stateDir: tmp.path, hostsBaseTopic: 'bench' },
      { pollIntervalMs: POLL_INTERVAL_MS },
    );
    const off: number[] = [];
    const ack: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      sim.setPower('on');
      const ac = new AbortController();
      let later!: (o: HostOutcome) => void;
      const laterP = new Promise<HostOutcome>((r) => (later = r));
      const t0 = performance.now();
      const now = await transport.shutdown(host, { incident: `bench-${i}`, zone: 'z', level: 'critical', etaS: null, reason: 'bench', ts: Date.now(), dryRun: false }, { test: false, ackTimeoutMs: 30_000, signal: ac.signal, onLater: later });
      if (now.status !== 'acknowledged') throw new Error(`bench actions-bmc: run ${i}: ${now.status}: ${now.message}`);
      ack.push(performance.now() - t0);
      const timeout = setTimeout(() => ac.abort(), 30_000);
      const final = await Promise.race([laterP, new Promise<undefined>((r) => ac.signal.addEventListener('abort', () => r(undefined)))]);
      clearTimeout(timeout);
      if (final?.status !== 'powered-off') throw new Error(`bench actions-bmc: run ${i}: no power-off (${final ? final.message : 'timed out'})`);
      off.push(performance.now() - t0);
    }
    return {
      bmc_soft_off_ms: Math.round(median(off)),
      bmc_soft_off_max_ms: Math.round(Math.max(...off)),
      bmc_soft_ack_ms: Math.round(median(ack)),
      poll_interval_ms: POLL_INTERVAL_MS,
      runs: RUNS,
    };
  } finally {
    await sim.cleanup();
    await tmp.cleanup();
  }
}
