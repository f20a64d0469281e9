/**
 * A sequence number persisted in a small file, written atomically: the host agent's last accepted
 * seq (so a replay after a reboot is still refused) and the gateway's last issued seq (so a restarted
 * gateway never reuses one). Synchronous on purpose: the write must be on disk before the caller acts
 * (or publishes), and it is a few bytes.
 *
 * Atomic = write a temp file, fsync it, rename it over the old one, fsync the directory: after a
 * power cut the file holds either the old or the new number, never a torn one, and the rename itself
 * is durable.
 */
import { closeSync, constants, fsyncSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { FileReadError, readRegularFile } from '../config/read-file.js';
import { RackguardError } from '../errors.js';

export interface SeqStore {
  /** The last persisted seq; 0 when none was ever written. */
  read(): number;
  /** Persists `seq` durably; throws E_HOST_STATE when it cannot. */
  write(seq: number): void;
}

const MAX_STATE_BYTES = 4096;

export class FileSeqStore implements SeqStore {
  constructor(readonly path: string) {}

  read(): number {
    let text: string;
    try {
      text = readRegularFile(this.path, MAX_STATE_BYTES);
    } catch (err) {
      if (err instanceof FileReadError && err.code === 'ENOENT') return 0;
      throw new RackguardError('E_HOST_STATE', `cannot read seq state ${this.path}: ${(err as Error).message}`, { cause: err });
    }
    let seq: unknown;
    try {
      seq = (JSON.parse(text) as { lastSeq?: unknown }).lastSeq;
    } catch (err) {
      seq = err;
    }
    // A damaged file must not quietly become 0: that would accept every replay.
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) {
      throw new RackguardError('E_HOST_STATE', `seq state ${this.path} is damaged (expected {"lastSeq": <integer>}); refusing to guess the last seq`);
    }
    return seq;
  }

  write(seq: number): void {
    const dir = dirname(this.path);
    const tmp = `${this.path}.tmp-${process.pid}`;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
      try {
        writeSync(fd, `${JSON.stringify({ v: 1, lastSeq: seq })}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
      const dfd = openSync(dir, constants.O_RDONLY);
      try {
        fsyncSync(dfd);
      } finally {
        closeSync(dfd);
      }
    } catch (err) {
      try {
        unlinkSync(tmp);
      } catch {
        // not created, or already renamed
      }
      throw new RackguardError('E_HOST_STATE', `cannot persist seq ${seq} to ${this.path}: ${(err as Error).message}`, { cause: err });
    }
  }
}
