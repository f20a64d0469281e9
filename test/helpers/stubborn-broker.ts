/**
 * A broker that accepts MQTT 3.1.1 connections and acknowledges only the publishes a test allows:
 * a fault a real mosquitto cannot be made to produce (a broker that takes records and never answers).
 * Loopback, a free port; it records every PUBLISH it receives, in order.
 */
import { createServer, type Server, type Socket } from 'node:net';

export interface ReceivedPublish {
  topic: string;
  payload: string;
  retain: boolean;
}

export interface StubbornBroker {
  url: string;
  readonly publishes: ReceivedPublish[];
  close(): Promise<void>;
}

/** `ack(p)` decides whether a QoS 1 publish gets its PUBACK. */
export async function startStubbornBroker(ack: (p: ReceivedPublish) => boolean): Promise<StubbornBroker> {
  const publishes: ReceivedPublish[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        // Fixed header: type/flags, then the remaining length as a varint.
        let len = 0;
        let mult = 1;
        let j = 1;
        let complete = false;
        while (j < buf.length && j <= 4) {
          const d = buf[j++]!;
          len += (d & 127) * mult;
          mult *= 128;
          if ((d & 128) === 0) {
            complete = true;
            break;
          }
        }
        if (!complete || buf.length < j + len) return;
        const first = buf[0]!;
        const body = buf.subarray(j, j + len);
        buf = buf.subarray(j + len);
        const type = first >> 4;
        if (type === 1) s.write(Buffer.from([0x20, 2, 0, 0])); // CONNACK, accepted
        else if (type === 12) s.write(Buffer.from([0xd0, 0])); // PINGRESP
        else if (type === 3) {
          const qos = (first >> 1) & 3;
          const tl = body.readUInt16BE(0);
          const topic = body.subarray(2, 2 + tl).toString();
          const id = qos > 0 ? body.readUInt16BE(2 + tl) : 0;
          const p: ReceivedPublish = { topic, payload: body.subarray(2 + tl + (qos > 0 ? 2 : 0)).toString(), retain: (first & 1) === 1 };
          publishes.push(p);
          if (qos > 0 && ack(p)) s.write(Buffer.from([0x40, 2, id >> 8, id & 255]));
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    publishes,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
