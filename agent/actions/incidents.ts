/**
 * The engine's memory of open incidents, persisted in `<stateDir>/actions-incidents.json` so that an
 * agent restart never runs an incident's actions twice: a level is marked handled (and the file
 * written, with fsync and an atomic rename) BEFORE its actions start, and completed once they all
 * ended. A level handled but not completed was cut short by a stop or a crash (a shutdown sequence
 * with groups not yet asked): after the restart it is due again, so a zone still critical finishes
 * its shutdown (the hosts already asked are asked again; a second power-off request is harmless,
 * groups never asked are the outage).
 */
import type { BootMark } from '../service/boot.js';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Level } from '../detection/types.js';
import { RackguardError } from '../errors.js';

export const INCIDENTS_FILE = 'actions-incidents.json';

export interface IncidentState {
  id: string;
  zone: string;
  /** Wall ms of the first event above normal. */
  startedTs: number;
  /** The highest level reached in this incident. */
  highest: Level;
  /** Levels whose actions were started (or held back by inhibit / dry run): never again in this incident. */
  handled: Level[];
  /**
   * Levels whose actions all ran to their end (succeeded, failed, held back: not cut short by the
   * agent stopping). A level handled but not completed was interrupted by a stop or a crash: after a
   * restart it is due again (its actions run once more if the zone reaches it again, through the gate).
   * Absent in files written before it existed: every handled level then counts as completed.
   */
  completed?: Level[];
  /** Indices of the policies that fired: their onClear hooks run when the zone is back to normal. */
  fired: number[];
  /** Wall ms the agent last knew the incident open (refreshed while it runs): decides a resume after restart. */
  aliveTs: number;
  /** The boot and uptime at aliveTs: within one boot, how long the agent was down whatever the wall clock did. */
  aliveBoot?: BootMark;
}

/** `row-a-20261130T010203Z-3f9c1a`: the zone, when it started, and randomness against a restart in the same second. */
export function newIncidentId(zone: string, ts: number): string {
  const stamp = new Date(ts).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${zone}-${stamp}-${randomBytes(3).toString('hex')}`;
}

const LEVELS: readonly unknown[] = ['normal', 'warning', 'alarm', 'critical'];
const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

function isIncident(i: unknown): i is IncidentState {
  if (typeof i !== 'object' || i === null) return false;
  const o = i as Record<string, unknown>;
  return (
    typeof o.id === 'string' &&
    typeof o.zone === 'string' &&
    isFiniteNumber(o.startedTs) &&
    LEVELS.includes(o.highest) &&
    Array.isArray(o.handled) &&
    o.handled.every((l) => LEVELS.includes(l)) &&
    (o.completed === undefined || (Array.isArray(o.completed) && o.completed.every((l) => LEVELS.includes(l)))) &&
    Array.isArray(o.fired) &&
    o.fired.every((n) => Number.isInteger(n) && (n as number) >= 0) &&
    isFiniteNumber(o.aliveTs) &&
    (o.aliveBoot === undefined || (typeof o.aliveBoot === 'object' && o.aliveBoot !== null && typeof (o.aliveBoot as BootMark).bootId === 'string' && isFiniteNumber((o.aliveBoot as BootMark).uptimeMs)))
  );
}

export class IncidentStore {
  private readonly file: string;
  /** Entries the last load() dropped as malformed (their id, or a prefix of the entry). */
  dropped: string[] = [];
  constructor(private readonly dir: string) {
    this.file = join(dir, INCIDENTS_FILE);
  }

  get path(): string {
    return this.file;
  }

  /** The open incidents on disk; none when the file does not exist. Throws E_HOST_STATE for an unreadable or damaged file. */
  load(): IncidentState[] {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new RackguardError('E_HOST_STATE', `${this.file}: cannot read the actions' incident state: ${(err as Error).message}`, { cause: err });
    }
    try {
      const data = JSON.parse(text) as { incidents?: IncidentState[] };
      if (!Array.isArray(data.incidents)) throw new Error('no "incidents" list');
      // Every field checked: an entry missing one (an older or hand-edited file) would throw later in
      // the engine, inside the detector's event path. It is dropped and named in `dropped`.
      this.dropped = [];
      return data.incidents.filter((i) => {
        const ok = isIncident(i);
        if (!ok) this.dropped.push(typeof (i as { id?: unknown } | null)?.id === 'string' ? (i as { id: string }).id : JSON.stringify(i).slice(0, 80));
        return ok;
      });
    } catch (err) {
      throw new RackguardError('E_HOST_STATE', `${this.file}: damaged incident state: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Writes the whole state durably (temp file, fsync, rename). Throws E_HOST_STATE. */
  save(incidents: readonly IncidentState[]): void {
    const tmp = `${this.file}.tmp`;
    try {
      mkdirSync(this.dir, { recursive: true });
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, JSON.stringify({ version: 1, incidents }, null, 1));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.file);
    } catch (err) {
      throw new RackguardError('E_HOST_STATE', `${this.file}: cannot write the actions' incident state: ${(err as Error).message}`, { cause: err });
    }
  }
}
