/**
 * The process groups of the agent's detached children, so that none outlives the agent.
 *
 * Exec action hooks run in a process group of their own (agent/actions/exec.ts), so that a timeout
 * kills the hook and whatever it started. On a stop the engine sends the group SIGTERM and waits the
 * action's killGraceS (up to 60 s) before SIGKILL; the agent's stop deadline (stopTimeoutS) may be
 * shorter, and a second signal exits at once. A hook that ignores SIGTERM would then go on running,
 * orphaned, after the agent exited: outside systemd nobody kills its group, and under systemd it
 * holds the unit in "deactivating" until the stop timeout. main notes the groups when a stop begins
 * (the leaders are alive then) and again at the exit, and SIGKILLs what is left of them last thing.
 *
 * Linux only (/proc), like the rest of the service part; elsewhere it finds nothing and kills nothing.
 */
import { readdirSync, readFileSync } from 'node:fs';

/**
 * Process group ids led by direct children of `parentPid` that are not in the parent's own group
 * (children that called setsid/setpgid: `spawn(…, { detached: true })`). Zombie leaders count: the
 * rest of their group may still run.
 */
export function detachedChildGroups(parentPid: number, procDir = '/proc'): number[] {
  let ownGroup: number | undefined;
  const groups: number[] = [];
  let names: string[];
  try {
    names = readdirSync(procDir);
  } catch {
    return [];
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(`${procDir}/${name}/stat`);
    if (!stat) continue;
    if (stat.pid === parentPid) ownGroup = stat.pgrp;
    if (stat.ppid === parentPid && stat.pgrp === stat.pid) groups.push(stat.pid);
  }
  return groups.filter((g) => g !== ownGroup);
}

interface Stat {
  pid: number;
  ppid: number;
  pgrp: number;
}

/** `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses, so split after the last ')'. */
function readStat(file: string): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined; // the process ended meanwhile
  }
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = text.slice(close + 2).split(' ');
  return { pid: Number.parseInt(text, 10), ppid: Number(fields[1]), pgrp: Number(fields[2]) };
}

/** Remembers the detached children's groups seen at each note(), and kills them all at the end. */
export class ChildGroupReaper {
  private readonly seen = new Set<number>();

  constructor(
    private readonly pid: number,
    private readonly procDir = '/proc',
  ) {}

  /** Records the groups of the detached children alive now (a group outlives its leader's exit). */
  note(): void {
    for (const g of detachedChildGroups(this.pid, this.procDir)) this.seen.add(g);
  }

  /**
   * Sends `signal` to every group noted (and to those alive now); returns the groups that still had a
   * member to receive it. Synchronous, so it can run right before process.exit().
   */
  killAll(signal: NodeJS.Signals = 'SIGKILL'): number[] {
    this.note();
    const hit: number[] = [];
    for (const g of this.seen) {
      try {
        process.kill(-g, signal);
        hit.push(g);
      } catch {
        // ESRCH: the group is empty, as it is after a clean stop.
      }
    }
    this.seen.clear();
    return hit;
  }
}
