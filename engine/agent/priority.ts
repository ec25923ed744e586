/**
 * IO priority of a backup (the policy's `ioPriority`): the heavy part — reading, chunking, encrypting and
 * uploading — runs in a child process (worker.ts) started under `nice` and `ionice` where they exist, so
 * the priority covers every thread of that process and ends with it (a process cannot raise its own
 * priority back once lowered, so the agent itself is never reniced).
 *
 * - `low`: `nice -n 10` and `ionice -c 2 -n 7` (best effort, lowest level — the idle class could starve the
 *   backup on a busy disk);
 * - `high`: `ionice -c 2 -n 0`, and `nice -n -5` when the agent runs as root (raising priority needs it);
 * - `normal`: neither.
 */
import { findExecutable } from "./files.ts";

/** The command prefix of the worker and what it applies. */
export interface PriorityPlan {
  prefix: string[];
  /** What was applied, e.g. "nice -n 10, ionice -c 2 -n 7"; "none" or the reason nothing was. */
  applied: string;
}

export function priorityPlan(
  ioPriority: unknown,
  find: (name: string) => string | null = findExecutable,
  isRoot = Deno.uid() === 0,
): PriorityPlan {
  if (ioPriority !== "low" && ioPriority !== "high") return { prefix: [], applied: "none (normal)" };
  const nice = find("nice");
  const ionice = find("ionice");
  const prefix: string[] = [];
  const applied: string[] = [];
  const niceArgs = ioPriority === "low" ? ["-n", "10"] : isRoot ? ["-n", "-5"] : null;
  if (nice && niceArgs) {
    prefix.push(nice, ...niceArgs);
    applied.push(`nice ${niceArgs.join(" ")}`);
  }
  if (ionice) {
    const args = ["-c", "2", "-n", ioPriority === "low" ? "7" : "0"];
    prefix.push(ionice, ...args);
    applied.push(`ionice ${args.join(" ")}`);
  }
  if (applied.length === 0) {
    return {
      prefix,
      applied: `not applied: neither nice nor ionice is available${nice ? " to this user" : ""}`,
    };
  }
  return { prefix, applied: applied.join(", ") };
}
