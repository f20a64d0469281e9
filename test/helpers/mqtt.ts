/**
 * An MQTT subscriber for tests, on a real broker: it records every message it receives and lets a
 * test await a condition on them (an event, with a deadline), never a sleep.
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { waitFor } from './wait.js';

export interface Received {
  topic: string;
  /** The payload as UTF-8 text. */
  payload: string;
  retain: boolean;
}

export interface SubscriberOptions {
  clientId: string;
  /** Topic filter subscribed at QoS 1. */
  topic: string;
  /**
   * Persistent session (false, the default): the broker keeps QoS 1 messages while we are away, as
   * for a dashboard or a bridge. True for a subscriber that only watches the present.
   */
  clean?: boolean;
  username?: string;
  password?: string;
  /** Reconnect period, ms. Default 200: a test restarts brokers and should not wait long. */
  reconnectPeriod?: number;
}

export interface Subscriber {
  client: MqttClient;
  /** Every message received so far, in arrival order. */
  messages: Received[];
  /** Resolves once `pred` holds over all messages received so far. */
  waitFor(pred: (all: Received[]) => boolean, timeoutMs: number, what: string): Promise<void>;
  /** Resolves with the first message at index `from` or later that satisfies `pred`. */
  waitMsg(pred: (m: Received) => boolean, timeoutMs: number, what: string, from?: number): Promise<Received>;
  /** Disconnects (force: no wait for in-flight acks). Safe twice. */
  stop(): Promise<void>;
}

/** Connects, subscribes (QoS 1) and resolves once the subscription is acknowledged. */
export async function startSubscriber(url: string, opts: SubscriberOptions): Promise<Subscriber> {
  const connectOpts: IClientOptions = {
    clientId: opts.clientId,
    clean: opts.clean ?? false,
    protocolVersion: 4,
    reconnectPeriod: opts.reconnectPeriod ?? 200,
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
  };
  const client = mqtt.connect(url, connectOpts);
  const messages: Received[] = [];
  client.on('message', (topic, payload, packet) => {
    messages.push({ topic, payload: payload.toString(), retain: packet.retain });
  });
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    await client.subscribeAsync(opts.topic, { qos: 1 });
  } catch (err) {
    client.end(true);
    throw err;
  }
  const last = (): string => messages.slice(-3).map((m) => `${m.topic} ${m.payload.slice(0, 80)}`).join(' | ');
  return {
    client,
    messages,
    waitFor: (pred, timeoutMs, what) =>
      waitFor(client, 'message', () => pred(messages), timeoutMs, what, () => `got ${messages.length} messages; last: ${last()}`).then(() => undefined),
    waitMsg: (pred, timeoutMs, what, from = 0) => {
      // Scans only what arrived since the last check, so a long run stays linear.
      let next = from;
      const scan = (): Received | undefined => {
        for (; next < messages.length; next++) if (pred(messages[next]!)) return messages[next];
        return undefined;
      };
      return waitFor(client, 'message', scan, timeoutMs, what, () => `got ${messages.length} messages; last: ${last()}`);
    },
    stop: () => client.endAsync(true),
  };
}
