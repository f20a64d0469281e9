/**
 * Modbus PDU encoding shared by the agent (master) and firmware-sim (slave).
 * Modbus Application Protocol Specification v1.1b3, section 6.
 */
export type Table = 'coil' | 'discrete' | 'holding' | 'input';

export const FC = {
  readCoils: 1,
  readDiscreteInputs: 2,
  readHoldingRegisters: 3,
  readInputRegisters: 4,
  writeSingleCoil: 5,
  writeSingleRegister: 6,
  writeMultipleCoils: 15,
  writeMultipleRegisters: 16,
} as const;

export const READ_FC: Record<Table, number> = {
  coil: FC.readCoils,
  discrete: FC.readDiscreteInputs,
  holding: FC.readHoldingRegisters,
  input: FC.readInputRegisters,
};

/** Spec limits on quantity per read request (§6.1–6.4). */
export const MAX_READ_QUANTITY: Record<Table, number> = { coil: 2000, discrete: 2000, holding: 125, input: 125 };

export function isBitTable(t: Table): boolean {
  return t === 'coil' || t === 'discrete';
}

export function readRequestPdu(table: Table, address: number, quantity: number): Buffer {
  const pdu = Buffer.alloc(5);
  pdu[0] = READ_FC[table];
  pdu.writeUInt16BE(address, 1);
  pdu.writeUInt16BE(quantity, 3);
  return pdu;
}

/** Length in bytes of a normal (non-exception) response PDU to a read of `quantity` items. */
export function readResponsePduLength(table: Table, quantity: number): number {
  const byteCount = isBitTable(table) ? Math.ceil(quantity / 8) : quantity * 2;
  return 2 + byteCount;
}

/** Decodes the data bytes of a read response into registers (16-bit) or bits (0/1). */
export function readResponseValues(table: Table, quantity: number, pdu: Buffer): number[] {
  const out: number[] = new Array(quantity);
  if (isBitTable(table)) {
    for (let i = 0; i < quantity; i++) out[i] = (pdu[2 + (i >> 3)]! >> (i & 7)) & 1;
  } else {
    for (let i = 0; i < quantity; i++) out[i] = pdu.readUInt16BE(2 + i * 2);
  }
  return out;
}

/** Builds a read response PDU (slave side). */
export function readResponsePdu(fc: number, values: readonly number[], bits: boolean): Buffer {
  if (bits) {
    const n = Math.ceil(values.length / 8);
    const pdu = Buffer.alloc(2 + n);
    pdu[0] = fc;
    pdu[1] = n;
    values.forEach((v, i) => {
      if (v) pdu[2 + (i >> 3)]! |= 1 << (i & 7);
    });
    return pdu;
  }
  const pdu = Buffer.alloc(2 + values.length * 2);
  pdu[0] = fc;
  pdu[1] = values.length * 2;
  values.forEach((v, i) => pdu.writeUInt16BE(v & 0xffff, 2 + i * 2));
  return pdu;
}

export function exceptionPdu(fc: number, code: number): Buffer {
  return Buffer.from([fc | 0x80, code]);
}

/**
 * Length of a complete RTU request frame (address + PDU + CRC) given its first bytes, or undefined
 * when more bytes are needed to tell. Lets a slave frame requests by length instead of by a silence
 * timer (modbus-serial's ServerSerial waits 30 ms of silence per frame, capping it near 30 req/s).
 * Returns -1 for a function code whose framing we cannot know.
 */
export function rtuRequestFrameLength(buf: Uint8Array): number | undefined {
  if (buf.length < 2) return undefined;
  const fc = buf[1]!;
  if (fc >= 1 && fc <= 6) return 8;
  if (fc === 15 || fc === 16) {
    if (buf.length < 7) return undefined;
    return 9 + buf[6]!;
  }
  return -1;
}

/**
 * Length of a complete RTU response frame given its first bytes, for a request with function `fc`
 * (read functions carry a byte count; writes echo 4 bytes; exceptions are 5 bytes in all).
 */
export function rtuResponseFrameLength(buf: Uint8Array, fc: number): number | undefined {
  if (buf.length < 2) return undefined;
  if (buf[1]! & 0x80) return 5;
  if (fc >= 1 && fc <= 4) {
    if (buf.length < 3) return undefined;
    return 5 + buf[2]!;
  }
  return 8;
}
