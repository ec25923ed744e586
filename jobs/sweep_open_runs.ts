/**
 * Minute job: runs left open after their job ended (the process stopped between the job's end and the
 * run's update) are brought up to their job, so they stop blocking run now and retries; `runs_open`
 * entries of runs already ended are dropped (run_lifecycle.ts `sweepOpenRuns`).
 */
import { sweepOpenRuns as sweep } from "../domain/run_lifecycle.ts";

export async function sweepOpenRuns(kv: Deno.Kv, now: Date) {
  return await sweep(kv, now);
}
