/**
 * Which transport reaches a host: `via` → HostTransport. Each is built on first use, so a config with
 * only BMC hosts never touches MQTT, and one with only host agents never looks for ipmitool.
 */
import type { HostDef } from '../config/actions-schema.js';
import { createIpmiTransport } from './bmc-ipmi.js';
import { createRedfishTransport } from './bmc-redfish.js';
import { createHostAgentTransport } from './host-transport.js';
import type { TransportDeps } from './transport-deps.js';
import type { HostTransport } from './types.js';

export type Via = HostDef['via'];
type HostOf<V extends Via> = Extract<HostDef, { via: V }>;

/** How each transport is made; replaceable for tests (fake transports through this seam). */
export type TransportFactories = { [V in Via]: (deps: TransportDeps) => HostTransport<HostOf<V>> & { close?(): void } };

export interface RegistryOptions {
  /** Commands to host agents expire after this, s (shutdown.commandTtlS). */
  commandTtlS?: number;
  /** Replaces some factories (tests). */
  factories?: Partial<TransportFactories>;
}

export class TransportRegistry {
  private readonly made = new Map<Via, HostTransport & { close?(): void }>();
  private readonly factories: TransportFactories;

  constructor(
    private readonly deps: TransportDeps,
    opts: RegistryOptions = {},
  ) {
    this.factories = {
      agent: (d) => createHostAgentTransport(d, opts.commandTtlS !== undefined ? { commandTtlS: opts.commandTtlS } : {}),
      ipmi: createIpmiTransport,
      redfish: createRedfishTransport,
      ...opts.factories,
    };
  }

  /** The transport for `via`, created on the first call. */
  get<V extends Via>(via: V): HostTransport<HostOf<V>> {
    let t = this.made.get(via);
    if (!t) {
      // The cast is the registry's one promise: the transport made for `via` only ever gets hosts of that `via`.
      t = (this.factories[via] as (d: TransportDeps) => HostTransport & { close?(): void })(this.deps);
      this.made.set(via, t);
    }
    return t as HostTransport<HostOf<V>>;
  }

  /** The transport for this host's `via`. */
  forHost(host: HostDef): HostTransport {
    return this.get(host.via) as HostTransport;
  }

  /** Releases what the transports hold (the host-agent reply router's listener); the MQTT client is the caller's. */
  close(): void {
    for (const t of this.made.values()) t.close?.();
    this.made.clear();
  }
}
