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
import { isAbsolute, resolve } from 'node:path';

/** The cap on configuration, profile and scenario files: real ones are a few kB. */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/** Why a path cannot be read as a file: an `ErrnoException`-like code and a sentence. */
export class FileReadError extends Error {
  constructor(
    readonly reason: 'not_regular' | 'too_large' | 'not_utf8' | 'os',
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

/** The cap on credential files (a username or password, one line). */
export const MAX_CREDENTIAL_FILE_BYTES = 64 * 1024;

/**
 * The bytes as UTF-8 text, or a FileReadError naming the first invalid byte by line and column. A
 * lenient decode would turn a Latin-1 "Ü" in a serial path or a host name into U+FFFD, a value that
 * differs from what the operator sees in an editor: a bad value must never become another value.
 */
function decodeUtf8(buf: Buffer): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    const at = firstInvalidUtf8(buf);
    const line = buf.subarray(0, at).toString('utf8').split('\n').length;
    const column = at - (at === 0 ? 0 : buf.lastIndexOf(0x0a, at - 1) + 1) + 1;
    throw new FileReadError('not_utf8', `not valid UTF-8 (byte 0x${(buf[at] ?? 0).toString(16).padStart(2, '0')} at line ${line}, column ${column}): save the file as UTF-8`);
  }
}

/** Offset of the first byte that does not start a well-formed UTF-8 sequence (RFC 3629 §4). */
function firstInvalidUtf8(buf: Buffer): number {
  let i = 0;
  while (i < buf.length) {
    const b = buf[i]!;
    // Sequence length, and the allowed range of the second byte (excludes overlongs and surrogates).
    let n: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b < 0x80) n = 1;
    else if (b >= 0xc2 && b <= 0xdf) n = 2;
    else if (b >= 0xe0 && b <= 0xef) [n, lo, hi] = [3, b === 0xe0 ? 0xa0 : 0x80, b === 0xed ? 0x9f : 0xbf];
    else if (b >= 0xf0 && b <= 0xf4) [n, lo, hi] = [4, b === 0xf0 ? 0x90 : 0x80, b === 0xf4 ? 0x8f : 0xbf];
    else return i;
    for (let k = 1; k < n; k++) {
      const c = buf[i + k];
      if (c === undefined || c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) return i;
    }
    i += n;
  }
  return i;
}

/**
 * Reads a regular file of at most `maxBytes` as UTF-8 (strict: invalid bytes are an error, a leading
 * BOM is dropped). Throws FileReadError (`not_regular`, `too_large`, `not_utf8`, or `os` with the OS
 * error as cause); never blocks on a FIFO and never reads more than maxBytes + 1 bytes.
 */
export function readRegularFile(file: string, maxBytes = MAX_CONFIG_FILE_BYTES): string {
  const { fd, st } = openRegular(file);
  try {
    const tooLarge = (): FileReadError => new FileReadError('too_large', `larger than the ${formatBytes(maxBytes)} limit${st.size > maxBytes ? ` (${formatBytes(st.size)})` : ''}`);
    if (st.size > maxBytes) throw tooLarge();
    // Sized by fstat (a large cap, as for traces, must not mean a large allocation for a small file),
    // plus one byte to notice a file that grew; grown, never past the cap plus one, if it did.
    let buf = Buffer.allocUnsafe(st.size + 1);
    let len = 0;
    for (;;) {
      if (len === buf.length) {
        const bigger = Buffer.allocUnsafe(Math.min(maxBytes + 1, buf.length * 2));
        buf.copy(bigger, 0, 0, len);
        buf = bigger;
      }
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
    return decodeUtf8(buf.subarray(0, len));
  } finally {
    closeSync(fd);
  }
}

/**
 * Checks that `file` is a regular file the agent can open for reading, without reading it (credential
 * and TLS files: their contents are the sinks' business and never logged), and, given maxBytes, that it
 * is not larger (a multi-megabyte password file is a wrong path, and the sink would read it whole).
 * Throws FileReadError.
 */
export function checkRegularFile(file: string, maxBytes?: number): void {
  const { fd, st } = openRegular(file);
  closeSync(fd);
  if (maxBytes !== undefined && st.size > maxBytes) throw new FileReadError('too_large', `larger than the ${formatBytes(maxBytes)} limit (${formatBytes(st.size)})`);
}

/** A file problem in one phrase: the OS code (ENOENT, EACCES) or what is wrong with the file. */
export function fileProblem(err: unknown): string {
  if (err instanceof FileReadError) return err.reason === 'os' ? (err.code ?? err.message) : err.message;
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

/**
 * For the files a configuration names (credentials, TLS, tokens, hook scripts' inputs): resolves
 * `file` against the configuration's directory, checks it with checkRegularFile (not read: a FIFO
 * must not hang check-config, and the contents are the parts' business), pushes one
 * `<where>: cannot read <path>: <problem>` line per problem, and returns the absolute path.
 */
export function configFileChecker(baseDir: string, problems: string[]): (where: string, file: string, maxBytes?: number) => string {
  return (where, file, maxBytes) => {
    const path = isAbsolute(file) ? file : resolve(baseDir, file);
    try {
      checkRegularFile(path, maxBytes);
    } catch (err) {
      problems.push(`${where}: cannot read ${path}: ${fileProblem(err)}`);
    }
    return path;
  };
}
