/** Minute job: finishes job-level retries that a crash left part-way (job_views.ts `resumeJobRetries`). */
import { resumeJobRetries as resume } from "../domain/job_views.ts";

export async function resumeJobRetries(kv: Deno.Kv, now: Date) {
  return { runs: await resume(kv, now) };
}
