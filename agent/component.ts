/**
 * The one lifecycle every part of the agent shares: lines, pollers, stream sources, the recorder, the
 * outbox, the sinks, and next the actions, HTTP and notify parts. app.ts starts a list of them in
 * order and stops it in reverse, each in its own try/catch, under one deadline (zigbee2mqtt's
 * controller does the same with its extensions).
 *
 * The contract:
 * - the constructor only assigns fields; nothing opens, connects or schedules before start();
 * - start() never awaits an open-ended loop: a port that will not open, a broker that is down or an
 *   outbox that cannot be written is retried in the background and reported, not waited for;
 * - stop() is safe at any stage (before start, during start, twice) and clears every timer;
 * - start() after stop() works again without duplicating anything, and a failed start() can be retried.
 */
export interface Component {
  /** For logs: `line:rs485-a`, `poller:rs485-a`, `outbox`, `sink:mqtt`, … */
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}
