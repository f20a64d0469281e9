import { describe, expect, it } from 'vitest';
import type { ModbusPointDef } from '../../agent/config/model.js';
import { planReads } from '../../agent/acquisition/planner.js';

function pt(name: string, table: ModbusPointDef['table'], address: number, type: ModbusPointDef['type'] = 'int16'): ModbusPointDef {
  return { id: `d.${name}`, deviceId: 'd', name, table, address, type, wordOrder: 'ABCD', scale: 1, offset: 0, unit: '', kind: 'other', faultValues: [] };
}

const summary = (reads: ReturnType<typeof planReads>) => reads.map((r) => `${r.table}@${r.address}x${r.quantity}:${r.items.map((i) => `${i.point.name}+${i.offset}`).join(',')}`);

describe('planReads', () => {
  it('merges adjacent registers into one read', () => {
    const reads = planReads([pt('t', 'input', 1), pt('h', 'input', 2)], { maxReadRegisters: 125, maxGapRegisters: 0 });
    expect(summary(reads)).toEqual(['input@1x2:t+0,h+1']);
  });

  it('fills gaps up to maxGapRegisters, and no further', () => {
    const pts = [pt('a', 'holding', 0), pt('b', 'holding', 5), pt('c', 'holding', 20)];
    expect(summary(planReads(pts, { maxReadRegisters: 125, maxGapRegisters: 4 }))).toEqual(['holding@0x6:a+0,b+5', 'holding@20x1:c+0']);
    expect(summary(planReads(pts, { maxReadRegisters: 125, maxGapRegisters: 3 }))).toEqual(['holding@0x1:a+0', 'holding@5x1:b+0', 'holding@20x1:c+0']);
    expect(summary(planReads(pts, { maxReadRegisters: 125, maxGapRegisters: 14 }))).toEqual(['holding@0x21:a+0,b+5,c+20']);
  });

  it('counts 32-bit points as two registers and keeps them whole', () => {
    const pts = [pt('f', 'holding', 2, 'float32'), pt('g', 'holding', 4, 'float32'), pt('s', 'holding', 0, 'uint16')];
    expect(summary(planReads(pts, { maxReadRegisters: 125, maxGapRegisters: 1 }))).toEqual(['holding@0x6:s+0,f+2,g+4']);
    // With a 5-register cap the last float must start a new read rather than be split.
    expect(summary(planReads(pts, { maxReadRegisters: 5, maxGapRegisters: 1 }))).toEqual(['holding@0x4:s+0,f+2', 'holding@4x2:g+0']);
  });

  it('never exceeds 125 registers even when the device allows more gap', () => {
    const pts = Array.from({ length: 200 }, (_, i) => pt(`p${i}`, 'input', i));
    const reads = planReads(pts, { maxReadRegisters: 125, maxGapRegisters: 8 });
    expect(reads.map((r) => r.quantity)).toEqual([125, 75]);
    expect(reads.flatMap((r) => r.items).length).toBe(200);
  });

  it('keeps tables apart and reads several bits of one register once', () => {
    const bitA = { ...pt('a', 'holding', 7, 'bit'), bit: 0 };
    const bitB = { ...pt('b', 'holding', 7, 'bit'), bit: 3 };
    const pts = [bitA, bitB, pt('run', 'discrete', 0, 'bool'), pt('on', 'coil', 3, 'bool'), pt('t', 'input', 7)];
    expect(summary(planReads(pts, { maxReadRegisters: 125, maxGapRegisters: 0 }))).toEqual([
      'discrete@0x1:run+0',
      'coil@3x1:on+0',
      'input@7x1:t+0',
      'holding@7x1:a+0,b+0',
    ]);
  });

  it('bit tables merge in bits, up to 2000', () => {
    const pts = [pt('c0', 'coil', 0, 'bool'), pt('c40', 'coil', 40, 'bool'), pt('c1999', 'coil', 1999, 'bool'), pt('c2000', 'coil', 2000, 'bool')];
    const reads = planReads(pts, { maxReadRegisters: 125, maxGapRegisters: 124 });
    expect(summary(reads)).toEqual(['coil@0x2000:c0+0,c40+40,c1999+1999', 'coil@2000x1:c2000+0']);
  });
});
