/** Configuration text shared by the unit tests that need a small rack but never poll it. */

/**
 * `version: 1` and a serial bus `l` on /dev/null with `n` XY-MD02 sensors r1…rn (unit ids 1…n); with
 * `zone`, one zone over all their temperatures (`extra`: more keys of the zone, e.g. `detection: {…}`).
 */
export function rackText(n: number, zone?: { id: string; extra?: string }): string {
  const ids = Array.from({ length: n }, (_, i) => `r${i + 1}`);
  const devices = ids.map((id, i) => `      - { id: ${id}, unitId: ${i + 1}, profile: xy-md02 }\n`).join('');
  const zones = zone ? `zones:\n  - { id: ${zone.id}, sensors: [${ids.map((id) => `${id}.temperature`).join(', ')}]${zone.extra ? `, ${zone.extra}` : ''} }\n` : '';
  return `version: 1\nbuses:\n  - id: l\n    type: serial\n    path: /dev/null\n    devices:\n${devices}${zones}`;
}
