/**
 * Which boot this is, and the time since it began: a clock that wall-clock steps cannot move.
 *
 * A Raspberry Pi without a real-time clock boots with the wall time fake-hwclock saved (or 1970), so
 * "how long was the agent down" cannot be read off the wall clock after a reboot: a power cut of hours
 * can look like seconds. Within one boot, /proc/uptime (CLOCK_BOOTTIME: it counts suspend too) gives
 * it exactly; across boots, only a synchronised wall clock can.
 */
import { readFileSync } from 'node:fs';

export interface BootMark {
  /** /proc/sys/kernel/random/boot_id: a fresh random id at every boot. */
  bootId: string;
  /** Milliseconds since this boot began (/proc/uptime). */
  uptimeMs: number;
}

/** This boot's mark, or undefined where /proc does not tell (not Linux, or a restricted sandbox). */
export function readBootMark(procDir = '/proc'): BootMark | undefined {
  try {
    const bootId = readFileSync(`${procDir}/sys/kernel/random/boot_id`, 'utf8').trim();
    const uptimeS = Number.parseFloat(readFileSync(`${procDir}/uptime`, 'utf8').split(' ')[0]!);
    if (!bootId || !Number.isFinite(uptimeS)) return undefined;
    return { bootId, uptimeMs: Math.round(uptimeS * 1000) };
  } catch {
    return undefined;
  }
}

/**
 * How long ago (ms) a moment marked `then` (its wall time and boot mark) was, or undefined when that
 * cannot be known: another boot (or no mark) on a wall clock not known to be synchronised, or a
 * negative answer (the wall clock was stepped back).
 */
export function elapsedSince(then: { wallMs: number; boot?: BootMark }, now: { wallMs: number; boot?: BootMark; clockSynced: boolean }): number | undefined {
  if (then.boot && now.boot && then.boot.bootId === now.boot.bootId) return Math.max(0, now.boot.uptimeMs - then.boot.uptimeMs);
  if (!now.clockSynced) return undefined;
  const d = now.wallMs - then.wallMs;
  return d >= 0 ? d : undefined;
}
