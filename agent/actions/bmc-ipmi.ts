/**
 * PLACEHOLDER (to be replaced by the act-bmc engineer): the Ipmi BMC transport. It exists so that the
 * transport registry compiles before the real one lands.
 */
import type { IpmiHostDef } from '../config/actions-schema.js';
import { RackguardError } from '../errors.js';
import type { TransportDeps } from './transport-deps.js';
import type { HostTransport } from './types.js';

export function createIpmiTransport(_deps: TransportDeps): HostTransport<IpmiHostDef> {
  return {
    shutdown: () => Promise.reject(new RackguardError('E_CONFIG_INVALID', 'ipmi transport not implemented yet')),
  };
}
