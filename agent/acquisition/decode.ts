/**
 * Register decoding (and its inverse, used by firmware-sim). Pure functions over plain data.
 *
 * 32-bit word orders, with A the most significant byte of the value and registers r0, r1 as sent:
 *   ABCD: r0 = AB, r1 = CD (big-endian, Modbus "natural")
 *   CDAB: r0 = CD, r1 = AB (word swap; common on PLCs and chiller controllers)
 *   BADC: r0 = BA, r1 = DC (byte swap within words)
 *   DCBA: r0 = DC, r1 = BA (little-endian)
 */
import type { ModbusPointConfig } from '../config/schema.js';

type WordOrder = ModbusPointConfig['wordOrder'];
type PointType = ModbusPointConfig['type'];

export function registerCount(type: PointType): number {
  return type === 'int32' || type === 'uint32' || type === 'float32' ? 2 : 1;
}

/** Bytes A,B,C,D (most significant first) from two registers in the given order. */
function toBigEndianBytes(r0: number, r1: number, order: WordOrder): Buffer {
  const b = Buffer.alloc(4);
  const [hi, lo] = order === 'ABCD' || order === 'BADC' ? [r0, r1] : [r1, r0];
  if (order === 'ABCD' || order === 'CDAB') {
    b.writeUInt16BE(hi, 0);
    b.writeUInt16BE(lo, 2);
  } else {
    b.writeUInt16LE(hi, 0);
    b.writeUInt16LE(lo, 2);
  }
  return b;
}

function fromBigEndianBytes(b: Buffer, order: WordOrder): [number, number] {
  const hi = order === 'ABCD' || order === 'CDAB' ? b.readUInt16BE(0) : b.readUInt16LE(0);
  const lo = order === 'ABCD' || order === 'CDAB' ? b.readUInt16BE(2) : b.readUInt16LE(2);
  return order === 'ABCD' || order === 'BADC' ? [hi, lo] : [lo, hi];
}

export interface RawDecoded {
  /** The decoded number before scale and offset (booleans as 0/1). */
  value: number;
  /** The raw unsigned register content (32-bit as A..D), compared against fault sentinels. */
  rawUnsigned: number;
}

/**
 * Decodes one point from the registers (or bits) of a read. `regs[0]` is the point's first register.
 * For bit tables `regs` holds 0/1 per coil.
 */
export function decodeRaw(type: PointType, order: WordOrder, regs: ArrayLike<number>, bit?: number): RawDecoded {
  const r0 = regs[0]!;
  switch (type) {
    case 'bool':
      return { value: r0 ? 1 : 0, rawUnsigned: r0 };
    case 'bit':
      return { value: (r0 >> (bit ?? 0)) & 1, rawUnsigned: r0 };
    case 'uint16':
      return { value: r0, rawUnsigned: r0 };
    case 'int16':
      return { value: r0 >= 0x8000 ? r0 - 0x10000 : r0, rawUnsigned: r0 };
    default: {
      const b = toBigEndianBytes(r0, regs[1]!, order);
      const rawUnsigned = b.readUInt32BE(0);
      const value = type === 'uint32' ? rawUnsigned : type === 'int32' ? b.readInt32BE(0) : b.readFloatBE(0);
      return { value, rawUnsigned };
    }
  }
}

/**
 * The registers a device would hold for `engineering` (inverse of decode + scale/offset). Used by
 * firmware-sim; rounds to the nearest representable raw value, which gives the 0.1 °C quantisation.
 */
export function encodeValue(
  p: Pick<ModbusPointConfig, 'type' | 'wordOrder' | 'scale' | 'offset' | 'bit'>,
  engineering: number,
): number[] {
  const raw = (engineering - p.offset) / p.scale;
  switch (p.type) {
    case 'bool':
      return [raw ? 1 : 0];
    case 'bit':
      return [raw ? 1 << (p.bit ?? 0) : 0];
    case 'uint16':
      return [clampInt(Math.round(raw), 0, 0xffff)];
    case 'int16':
      return [clampInt(Math.round(raw), -0x8000, 0x7fff) & 0xffff];
    default: {
      const b = Buffer.alloc(4);
      if (p.type === 'float32') b.writeFloatBE(raw, 0);
      else if (p.type === 'uint32') b.writeUInt32BE(clampInt(Math.round(raw), 0, 0xffffffff), 0);
      else b.writeInt32BE(clampInt(Math.round(raw), -0x80000000, 0x7fffffff), 0);
      return fromBigEndianBytes(b, p.wordOrder);
    }
  }
}

/** Registers that hold `rawUnsigned` verbatim (for serving fault sentinels such as 0x7FFF). */
export function encodeRawUnsigned(p: Pick<ModbusPointConfig, 'type' | 'wordOrder'>, rawUnsigned: number): number[] {
  if (registerCount(p.type) === 1) return [rawUnsigned & 0xffff];
  const b = Buffer.alloc(4);
  b.writeUInt32BE(rawUnsigned >>> 0, 0);
  return fromBigEndianBytes(b, p.wordOrder);
}

function clampInt(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}
