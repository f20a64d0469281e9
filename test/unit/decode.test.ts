import { describe, expect, it } from 'vitest';
import { decodeRaw, encodeValue, encodeRawUnsigned } from '../../agent/acquisition/decode.js';

// Register values below were worked out by hand from the IEEE 754 / two's complement encodings.
describe('decodeRaw', () => {
  it('int16 and uint16', () => {
    expect(decodeRaw('int16', 'ABCD', [0x00eb]).value).toBe(235);
    expect(decodeRaw('int16', 'ABCD', [0xff9c]).value).toBe(-100); // 0x10000 - 100
    expect(decodeRaw('int16', 'ABCD', [0x8000]).value).toBe(-32768);
    expect(decodeRaw('uint16', 'ABCD', [0xff9c]).value).toBe(65436);
    expect(decodeRaw('int16', 'ABCD', [0x7fff]).rawUnsigned).toBe(0x7fff);
  });

  it('bool and bit', () => {
    expect(decodeRaw('bool', 'ABCD', [1]).value).toBe(1);
    expect(decodeRaw('bool', 'ABCD', [0]).value).toBe(0);
    expect(decodeRaw('bool', 'ABCD', [0x0100]).value).toBe(1); // any non-zero register is true
    expect(decodeRaw('bit', 'ABCD', [0b1010], 1).value).toBe(1);
    expect(decodeRaw('bit', 'ABCD', [0b1010], 2).value).toBe(0);
    expect(decodeRaw('bit', 'ABCD', [0x8000], 15).value).toBe(1);
  });

  // 7.0 as float32 is 0x40E00000: A=0x40 B=0xE0 C=0x00 D=0x00.
  it.each([
    ['ABCD', [0x40e0, 0x0000]],
    ['CDAB', [0x0000, 0x40e0]],
    ['BADC', [0xe040, 0x0000]],
    ['DCBA', [0x0000, 0xe040]],
  ] as const)('float32 7.0 in %s', (order, regs) => {
    expect(decodeRaw('float32', order, regs).value).toBe(7);
  });

  // -12.5 is 0xC1480000.
  it('float32 negative in CDAB', () => {
    expect(decodeRaw('float32', 'CDAB', [0x0000, 0xc148]).value).toBe(-12.5);
  });

  // 0x12345678 = 305419896: A=0x12 B=0x34 C=0x56 D=0x78.
  it.each([
    ['ABCD', [0x1234, 0x5678]],
    ['CDAB', [0x5678, 0x1234]],
    ['BADC', [0x3412, 0x7856]],
    ['DCBA', [0x7856, 0x3412]],
  ] as const)('uint32 and int32 in %s', (order, regs) => {
    expect(decodeRaw('uint32', order, regs).value).toBe(305419896);
    expect(decodeRaw('int32', order, regs).value).toBe(305419896);
    expect(decodeRaw('uint32', order, regs).rawUnsigned).toBe(0x12345678);
  });

  it('int32 negative: 0xFFFFFF9C is -100', () => {
    expect(decodeRaw('int32', 'ABCD', [0xffff, 0xff9c]).value).toBe(-100);
    expect(decodeRaw('int32', 'CDAB', [0xff9c, 0xffff]).value).toBe(-100);
    expect(decodeRaw('uint32', 'ABCD', [0xffff, 0xff9c]).value).toBe(4294967196);
  });
});

describe('encodeValue is the inverse of decode', () => {
  it('matches the hand-computed registers', () => {
    expect(encodeValue({ type: 'float32', wordOrder: 'CDAB', scale: 1, offset: 0 }, 7)).toEqual([0x0000, 0x40e0]);
    expect(encodeValue({ type: 'int16', wordOrder: 'ABCD', scale: 0.1, offset: 0 }, -10)).toEqual([0xff9c]);
    expect(encodeValue({ type: 'int16', wordOrder: 'ABCD', scale: 0.1, offset: 0 }, 23.46)).toEqual([235]);
    expect(encodeValue({ type: 'uint32', wordOrder: 'BADC', scale: 1, offset: 0 }, 0x12345678)).toEqual([0x3412, 0x7856]);
    expect(encodeValue({ type: 'bit', wordOrder: 'ABCD', scale: 1, offset: 0, bit: 3 }, 1)).toEqual([8]);
    expect(encodeRawUnsigned({ type: 'int16', wordOrder: 'ABCD' }, 0x7fff)).toEqual([0x7fff]);
  });

  it.each(['ABCD', 'CDAB', 'BADC', 'DCBA'] as const)('round-trips every type in %s', (order) => {
    for (const type of ['int16', 'uint16', 'int32', 'uint32', 'float32'] as const) {
      const v = type === 'uint16' || type === 'uint32' ? 1234 : -1234;
      const regs = encodeValue({ type, wordOrder: order, scale: 1, offset: 0 }, v);
      expect(decodeRaw(type, order, regs).value).toBe(v);
    }
  });
});
