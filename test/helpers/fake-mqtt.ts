/**
 * A fake mqtt.js client for the MQTT sink's `connect` seam: every publish waits until the test
 * acknowledges, refuses or drops it, so ack order, timeouts and reconnects are driven step by step on
 * virtual time. It keeps the retained value per topic in the order a broker would (by receipt of the
 * publishes it acknowledged).
 */
import { EventEmitter } from 'node:events';
import { ErrorWithReasonCode, type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';

export interface FakePublish {
  topic: string;
  payload: string;
  qos: number;
  retain: boolean;
  /** Index in the client's publish order (a broker processes publishes in receipt order). */
  order: number;
  settled: boolean;
  ack(): void;
  refuse(reasonCode: number): void;
}

export class FakeClient extends EventEmitter {
  readonly publishes: FakePublish[] = [];
  ended = false;
  constructor(
    readonly url: string,
    readonly opts: IClientOptions,
    private readonly broker: FakeBroker,
  ) {
    super();
  }

  publishAsync(topic: string, payload: string | Buffer, opts: { qos?: number; retain?: boolean }): Promise<undefined> {
    return new Promise((resolve, reject) => {
      const order = this.broker.received++;
      const p: FakePublish = {
        topic,
        payload: payload.toString(),
        qos: opts.qos ?? 0,
        retain: opts.retain ?? false,
        order,
        settled: false,
        ack: () => {
          if (p.settled) return;
          p.settled = true;
          // As mqtt.js does, 'packetreceive' comes before the packet is handled.
          this.emit('packetreceive', { cmd: 'puback' });
          if (p.retain) this.broker.store(topic, p.payload, order);
          resolve(undefined);
        },
        refuse: (code) => {
          if (p.settled) return;
          p.settled = true;
          reject(new ErrorWithReasonCode(`refused ${code}`, code));
        },
      };
      this.publishes.push(p);
      if (this.broker.autoAck) queueMicrotask(() => p.ack());
    });
  }

  /** PINGREQs sent; each is answered (PINGRESP) on the next microtask unless `answerPings` is false. */
  pings = 0;
  answerPings = true;
  sendPing(): void {
    this.pings++;
    if (this.answerPings) queueMicrotask(() => this.emit('packetreceive', { cmd: 'pingresp' }));
  }

  /** Publishes sent and not yet answered. */
  get outstanding(): FakePublish[] {
    return this.publishes.filter((p) => !p.settled);
  }

  endAsync(): Promise<void> {
    this.ended = true;
    return Promise.resolve();
  }

  end(): this {
    this.ended = true;
    return this;
  }

  /** The broker accepted the connection. */
  accept(properties: IConnackPacket['properties'] = {}): void {
    this.emit('connect', { cmd: 'connack', sessionPresent: false, properties } as IConnackPacket);
  }

  /** The socket closed (broker down, or a refused connection). */
  drop(): void {
    this.emit('close');
  }
}

export class FakeBroker {
  readonly clients: FakeClient[] = [];
  /** Retained payload per topic, last writer by receipt order. */
  readonly retained = new Map<string, { payload: string; order: number }>();
  received = 0;
  autoAck = false;

  readonly connect = (url: string, opts: IClientOptions): MqttClient => {
    const c = new FakeClient(url, opts, this);
    this.clients.push(c);
    return c as unknown as MqttClient;
  };

  get last(): FakeClient {
    const c = this.clients.at(-1);
    if (!c) throw new Error('no client yet');
    return c;
  }

  store(topic: string, payload: string, order: number): void {
    const cur = this.retained.get(topic);
    if (!cur || cur.order < order) this.retained.set(topic, { payload, order });
  }
}

/** Lets every pending promise callback run (no timers involved: virtual time stays put). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
}
