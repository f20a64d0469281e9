/**
 * STUB (act-engine's branch only): act-shutdown's TransportRegistry (via → HostTransport, built
 * lazily) wins at merge. Same constructor and close() so the engine compiles against it.
 */
import type { TransportDeps } from './transport-deps.js';

export interface RegistryOptions {
  commandTtlS?: number;
}

export class TransportRegistry {
  constructor(
    readonly deps: TransportDeps,
    readonly opts: RegistryOptions = {},
  ) {}

  close(): void {}
}
