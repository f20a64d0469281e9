/**
 * Reading the small text files the agent is configured by (the configuration, profiles, scenarios,
 * credential files), safely: only regular files, only up to a size cap.
 *
 * Why not readFileSync: it follows whatever the path names. A FIFO blocks open() until a writer
 * appears (the agent hangs, and a blocked synchronous call cannot even be interrupted by SIGTERM);
 * /dev/zero never ends (check-config grew past 16 GB); a 32 MB file took 38 s and 3.5 GB to parse.
 * So the file is opened with O_NONBLOCK (a FIFO open returns at once), checked with fstat on the open
 * descriptor (not a stat before the open, which a swap between the two calls would defeat), and read
 * up to the cap plus one byte (the file may grow after fstat).
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';

/** The cap on configuration, profile and scenario files: real ones are a few kB. */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/** Why a path cannot be read as a file: an `ErrnoException`-like code and a sentence. */
export class FileReadError extends Error {
  constructor(
    readonly reason: 'not_regular' | 'too_large' | 'os',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'FileReadError';
  }

  /** The OS error code (ENOENT, EACCES, …) when the open or read itself failed. */
  get code(): string | undefined {
    return (this.cause as NodeJS.ErrnoException | undefined)?.code;
  }
}

/** What a non-regular file is, for messages: "a directory", "a FIFO", "a character device", … */
export function describeFileType(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(n % (1024 * 1024) === 0 ? 0 : 1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(n % 1024 === 0 ? 0 : 1)} KiB`;
  return `${n} bytes`;
}

/**
 * Opens `file` without blocking and checks that it is a regular file; returns the descriptor and
 * its stats. Throws FileReadError. The caller closes the descriptor.
 */
function openRegular(file: string): { fd: number; st: Stats } {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO for reading does not wait for a writer. O_NOCTTY: a tty path never
    // becomes our controlling terminal. Neither changes anything for a regular file.
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    throw new FileReadError('os', (err as Error).message, { cause: err });
  }
  let st: Stats;
  try {
    st = fstatSync(fd);
  } catch (err) {
    closeSync(fd);
    throw new FileReadError('os', (err as Error).message, { cause: err });
  }
  if (!st.isFile()) {
    closeSync(fd);
    throw new FileReadError('not_regular', `${describeFileType(st)}, not a regular file`);
  }
  return { fd, st };
}

/**
 * Reads a regular file of at most `maxBytes` as UTF-8. Throws FileReadError (`not_regular`,
 * `too_large`, or `os` with the OS error as cause); never blocks on a FIFO and never reads more than
 * maxBytes + 1 bytes.
 */
export function readRegularFile(file: string, maxBytes = MAX_CONFIG_FILE_BYTES): string {
  const { fd, st } = openRegular(file);
  try {
    const tooLarge = (): FileReadError => new FileReadError('too_large', `larger than the ${formatBytes(maxBytes)} limit${st.size > maxBytes ? ` (${formatBytes(st.size)})` : ''}`);
    if (st.size > maxBytes) throw tooLarge();
    const buf = Buffer.allocUnsafe(maxBytes + 1);
    let len = 0;
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, len, buf.length - len, null);
      } catch (err) {
        throw new FileReadError('os', (err as Error).message, { cause: err });
      }
      if (n === 0) break;
      len += n;
      if (len > maxBytes) throw tooLarge();
    }
    return buf.toString('utf8', 0, len);
  } finally {
    closeSync(fd);
  }
}

/**
 * Checks that `file` is a regular file the agent can open for reading, without reading it (credential
 * and TLS files: their contents are the sinks' business and never logged). Throws FileReadError.
 */
export function checkRegularFile(file: string): void {
  closeSync(openRegular(file).fd);
}
