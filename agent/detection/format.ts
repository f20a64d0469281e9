/**
 * How numbers and sensors are written in reason text: one place, so every event reads alike.
 */

/** `rack01.temperature` → `rack01`: the device names the rack; other point ids are shown whole. */
export function sensorLabel(pointId: string): string {
  return pointId.endsWith('.temperature') ? pointId.slice(0, -'.temperature'.length) : pointId;
}

/** °C, one decimal. */
export const fmtTemp = (v: number): string => v.toFixed(1);
/** °C/min, two decimals. */
export const fmtRate = (v: number): string => v.toFixed(2);
/** Seconds, whole. */
export const fmtS = (v: number): string => String(Math.round(v));
