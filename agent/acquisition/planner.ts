/**
 * Batching planner: merges a device's points into as few reads as possible. Pure.
 *
 * Points of one table are sorted by address and merged greedily while the unused registers between
 * them stay within `maxGapRegisters` and the read stays within `maxReadRegisters` (the spec allows
 * 125 registers per FC03/FC04 read, 2000 bits per FC01/FC02; some devices allow less). Reading a few
 * unused registers is far cheaper than another request: each request costs two frames plus two
 * 3.5-character silences on the line.
 */
import type { ModbusPointDef } from '../config/model.js';
import { MAX_READ_QUANTITY, isBitTable, type Table } from '../modbus/pdu.js';
import { registerCount } from './decode.js';

export interface ReadItem {
  point: ModbusPointDef;
  /** Index of the point's first register (or bit) within the read. */
  offset: number;
}

export interface PlannedRead {
  table: Table;
  address: number;
  quantity: number;
  items: ReadItem[];
}

export interface PlanOptions {
  maxReadRegisters: number;
  maxGapRegisters: number;
}

const TABLE_ORDER: Table[] = ['discrete', 'coil', 'input', 'holding'];

export function planReads(points: readonly ModbusPointDef[], opts: PlanOptions): PlannedRead[] {
  const reads: PlannedRead[] = [];
  for (const table of TABLE_ORDER) {
    const bits = isBitTable(table);
    // Bit tables count in bits: a register's worth of gap is 16 coils.
    const maxQty = bits ? MAX_READ_QUANTITY[table] : Math.min(opts.maxReadRegisters, MAX_READ_QUANTITY[table]);
    const maxGap = bits ? opts.maxGapRegisters * 16 : opts.maxGapRegisters;
    const pts = points
      .filter((p) => p.table === table)
      .sort((a, b) => a.address - b.address || a.id.localeCompare(b.id));
    let cur: PlannedRead | undefined;
    let curEnd = 0;
    for (const point of pts) {
      const width = bits ? 1 : registerCount(point.type);
      const end = point.address + width;
      if (cur && point.address - curEnd <= maxGap && Math.max(curEnd, end) - cur.address <= maxQty) {
        curEnd = Math.max(curEnd, end);
        cur.quantity = curEnd - cur.address;
        cur.items.push({ point, offset: point.address - cur.address });
        continue;
      }
      cur = { table, address: point.address, quantity: width, items: [{ point, offset: 0 }] };
      curEnd = end;
      reads.push(cur);
    }
  }
  return reads;
}
