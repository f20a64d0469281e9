/**
 * What every host transport factory receives. The MQTT client is the gateway's own connection to
 * the broker the host agents listen on (only the host-agent transport uses it).
 */
import type { MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';

export interface TransportDeps {
  logger: Logger;
  clock: Clock;
  /** Site and gateway names (commands name their sender). */
  gateway: string;
  /** Directory for state that must survive reboots (the gateway's command sequence). */
  stateDir: string;
  /** Topic root of host agents: `<hostsBaseTopic>/hosts/<host>/cmd`. */
  hostsBaseTopic: string;
  /** Connected MQTT client, when the host-agent transport is used. */
  mqtt?: MqttClient;
}
