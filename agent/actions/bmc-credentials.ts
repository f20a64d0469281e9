/**
 * BMC credentials (IPMI and Redfish hosts): a user name and a password, each the first line of its
 * own file, read at call time so that a rotated password is used without a restart. Only regular
 * files of a few kB are read (a FIFO or /dev/zero given by mistake must not hang the shutdown path).
 */
import { readRegularFile } from '../config/read-file.js';
import { RackguardError } from '../errors.js';

/** A credential file is one short line; anything bigger is a mistake. */
const MAX_CREDENTIAL_FILE_BYTES = 4096;

export interface BmcCredentials {
  username: string;
  password: string;
}

/** The trimmed first line of `file`; E_SECRET_READ naming the host, the field and the file otherwise. */
export function readCredentialLine(file: string, what: string): string {
  let text: string;
  try {
    text = readRegularFile(file, MAX_CREDENTIAL_FILE_BYTES);
  } catch (err) {
    throw new RackguardError('E_SECRET_READ', `${what}: cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const line = (text.split(/\r?\n/)[0] ?? '').trim();
  if (line === '') throw new RackguardError('E_SECRET_READ', `${what}: ${file} is empty (the first line is used)`);
  return line;
}

/** Reads both files of a BMC host; `host` names it in errors. */
export function readBmcCredentials(host: string, def: { usernameFile: string; passwordFile: string }): BmcCredentials {
  return {
    username: readCredentialLine(def.usernameFile, `host ${host} usernameFile`),
    password: readCredentialLine(def.passwordFile, `host ${host} passwordFile`),
  };
}
