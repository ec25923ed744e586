/**
 * What the engines reported with a run, for the run and restore point pages and `/api/v1/runs/{id}`:
 * the run with its measures (`Run.stats`) and its per-file errors a page at a time. Errors are kept with
 * the run's job as parts (result_parts.ts): the result's inline errors first, then each uploaded part,
 * one page each — so a run with many thousands of errors reads one KV value per page.
 */
import { NotFoundError } from "./errors.ts";
import { getJob, type Job } from "./job_queue.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import { type ErrorItem, listPartNumbers, readResultPart } from "./result_parts.ts";
import type { Run } from "./runs.ts";
import { runKey } from "./keys/runs.ts";

/** The run, or null; no scope check (the caller has checked the run's policy). */
export async function getRun(kv: Deno.Kv, id: string): Promise<Run | null> {
  return (await kv.get<Run>(runKey(id))).value;
}

/** The run if the actor may see it (its policy's account and org); NotFoundError otherwise. */
export async function requireRun(kv: Deno.Kv, actor: Actor, id: string): Promise<Run> {
  const run = /^[0-9A-Z]{26}$/.test(id) ? (await kv.get<Run>(runKey(id))).value : null;
  if (!run || !inScope(actor, { accountId: run.accountId, orgId: run.orgId })) {
    throw new NotFoundError(`Run ${id.slice(0, 40)} not found`);
  }
  authorize(actor, "backup.view", { accountId: run.accountId, orgId: run.orgId });
  return run;
}

/** One page of a job's per-file errors, with where it lies among them. */
export interface ErrorsPage {
  errors: ErrorItem[];
  /** 0-based page, and the pages there are (0 without errors). */
  page: number;
  pages: number;
  /** Index of the first error of the page among the kept ones. */
  offset: number;
  /** Errors kept (over all pages) and errors the engine met (a cut list keeps its total). */
  kept: number;
  total: number;
}

/** The errors page `page` (clamped) of a finished job; empty when it reported none. */
export async function jobErrorsPage(kv: Deno.Kv, job: Job | null, page: number): Promise<ErrorsPage> {
  const facts = job?.result?.lists?.errors;
  if (!job?.result || !facts) return { errors: [], page: 0, pages: 0, offset: 0, kept: 0, total: 0 };
  const attempt = job.result.partsAttempt ?? job.attempts;
  const parts = (await listPartNumbers(kv, job.id, attempt, "errors", facts.parts)).filter((p) =>
    p.items > 0
  );
  if (!parts.length) {
    return { errors: [], page: 0, pages: 0, offset: 0, kept: facts.kept, total: facts.total };
  }
  const p = Math.max(0, Math.min(Math.floor(page) || 0, parts.length - 1));
  const offset = parts.slice(0, p).reduce((n, x) => n + x.items, 0);
  const errors = await readResultPart<ErrorItem>(kv, job.id, attempt, "errors", parts[p].part) ?? [];
  return { errors, page: p, pages: parts.length, offset, kept: facts.kept, total: facts.total };
}

/** A run's errors page (through its job). */
export async function runErrorsPage(kv: Deno.Kv, run: Run, page: number): Promise<ErrorsPage> {
  return await jobErrorsPage(kv, run.jobId ? await getJob(kv, run.jobId) : null, page);
}
