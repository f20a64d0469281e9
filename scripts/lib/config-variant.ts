import { readFileSync, writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';

/** Raw (unvalidated) config tree, as read from YAML. */
export type RawTree = { buses: Array<Record<string, unknown> & { devices?: Array<Record<string, unknown>> }>; [k: string]: unknown };

/**
 * Writes a copy of a config file with some fields changed (serial path, TCP port, poll interval),
 * for the demo and the benchmarks. The copy goes through the normal loader afterwards, so it is
 * validated like any user file.
 */
export function writeConfigVariant(src: string, dst: string, mutate: (raw: RawTree) => void): string {
  const raw = parse(readFileSync(src, 'utf8')) as RawTree;
  mutate(raw);
  writeFileSync(dst, `# generated from ${src}\n${stringify(raw)}`);
  return dst;
}

/** Points every serial bus at `serialPath` and every tcp bus at 127.0.0.1:`tcpPort`. */
export function pointAtSimulator(raw: RawTree, serialPath: string, tcpPort: number): void {
  for (const bus of raw.buses) {
    if (bus.type === 'serial') bus.path = serialPath;
    if (bus.type === 'tcp') {
      bus.host = '127.0.0.1';
      bus.port = tcpPort;
    }
  }
}

export function setPollInterval(raw: RawTree, ms: number): void {
  for (const bus of raw.buses) for (const d of bus.devices ?? []) d.pollIntervalMs = ms;
}
