/**
 * PLACEHOLDER (to be replaced by the act-bmc engineer): the Redfish BMC transport. It exists so that the
 * transport registry compiles before the real one lands.
 */
import type { RedfishHostDef } from '../config/actions-schema.js';
import { RackguardError } from '../errors.js';
import type { TransportDeps } from './transport-deps.js';
import type { HostTransport } from './types.js';

export function createRedfishTransport(_deps: TransportDeps): HostTransport<RedfishHostDef> {
  return {
    shutdown: () => Promise.reject(new RackguardError('E_CONFIG_INVALID', 'redfish transport not implemented yet')),
  };
}
