import { createServer, type Server } from 'node:net';
import { Aedes } from 'aedes';

/**
 * An in-process MQTT broker (aedes) for the demo only, so `mosquitto_sub -h 127.0.0.1 -t 'rackguard/#' -v`
 * can watch without installing a broker. Production and the tests use a real broker (mosquitto or
 * the site's cluster). Binds 127.0.0.1 only; when the preferred port is taken it takes a free one.
 */
export interface EmbeddedBroker {
  port: number;
  url: string;
  stop(): Promise<void>;
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', onError);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

export async function startEmbeddedBroker(preferredPort = 1883): Promise<EmbeddedBroker> {
  const broker = await Aedes.createBroker();
  const server = createServer(broker.handle);
  let port: number;
  try {
    port = await listen(server, preferredPort);
  } catch {
    port = await listen(server, 0);
  }
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    stop: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => broker.close(() => resolve()));
    },
  };
}
