/**
 * The boot mark read from the real /proc (agent/service/boot.ts): what the incident resume relies on
 * to measure a downtime within one boot, and elapsedSince()'s rule across boots.
 */
import { describe, expect, it } from 'vitest';
import { elapsedSince, readBootMark } from '../../agent/service/boot.js';

describe('boot mark', () => {
  it('this Linux machine has a boot id and an uptime that moves forward', async () => {
    const a = readBootMark();
    expect(a?.bootId).toMatch(/^[0-9a-f-]{36}$/);
    expect(a!.uptimeMs).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 20)); // /proc/uptime has 10 ms resolution
    const b = readBootMark()!;
    expect(b.bootId).toBe(a!.bootId);
    expect(b.uptimeMs).toBeGreaterThan(a!.uptimeMs);
    expect(elapsedSince({ wallMs: 0, boot: a! }, { wallMs: 0, boot: b, clockSynced: false })).toBe(b.uptimeMs - a!.uptimeMs);
  });

  it('across boots only a synchronised wall clock tells, and never a negative downtime', () => {
    const then = { wallMs: 1_000_000, boot: { bootId: 'a', uptimeMs: 5000 } };
    const other = { bootId: 'b', uptimeMs: 100 };
    expect(elapsedSince(then, { wallMs: 1_060_000, boot: other, clockSynced: false })).toBeUndefined();
    expect(elapsedSince(then, { wallMs: 1_060_000, boot: other, clockSynced: true })).toBe(60_000);
    expect(elapsedSince(then, { wallMs: 900_000, boot: other, clockSynced: true })).toBeUndefined();
  });
});
