/**
 * The BES's job loop (DESIGN.md §5): claim up to the free slots, run each job with a progress report every
 * few seconds (which renews the lease; its reply — `leaseExpiresAt`, `cancel`, and later a fresh data
 * token — is kept for the job's runner), then post the result in the protocol's shape, retried until it is
 * recorded or refused. A job whose lease is lost (409 on progress) stops; a cancelled one ends `CANCELLED`.
 */
import type { EngineClient, EngineIdentity, PostRetryOptions } from "../protocol/client.ts";
import { isRetryableStatus, RESULT_RETRY_BUDGET_MS } from "../protocol/retry.ts";
import { type Logger, messageOf } from "./log.ts";
import { classifyStorageError, isRepositoryDamage, TargetError } from "./storage.ts";

/** A job as the claim answers it. */
export interface ClaimedJob {
  id: string;
  kind: string;
  priority: "critical" | "high" | "normal";
  payload: Record<string, unknown>;
  leaseExpiresAt: string;
  /** The job's data token, and for a replicate to another BES's target a write token for that BES. */
  dataToken?: string | null;
  replicaDataToken?: string | null;
}

/** The long lists a result may upload in parts (docs/engine-protocol.md, "Long lists in parts"). */
export type ResultList = "entries" | "matches" | "errors";

/** What the engine measured (the result's `stats`; every field optional). */
export interface ResultStats {
  files?: number;
  dirs?: number;
  bytesRead?: number;
  bytesNew?: number;
  bytesStored?: number;
  durationMs?: number;
  added?: number;
  modified?: number;
  deleted?: number;
}

/** What a handler returns: the result without its times. */
export interface JobOutcome {
  status: "success" | "warning" | "failed";
  bytesTransferred?: number;
  protectedBytes?: number;
  error?: { reason: string; message: string } | null;
  retryable?: boolean;
  output?: Record<string, unknown> | null;
  stats?: ResultStats | null;
  /** The first per-file errors (at most 100; more in parts, counted in `totals.errors`). */
  errors?: { path: string; message: string }[];
  /** Parts uploaded per list (`JobContext.uploadList`), and the items found when fewer were sent. */
  parts?: Partial<Record<ResultList, number>>;
  totals?: Partial<Record<ResultList, number>>;
}

/** Most parts one list may have, items per part, and JSON bytes of one part's items (64 KiB bodies). */
export const MAX_PARTS = 200;
export const MAX_PART_ITEMS = 5000;
export const PART_BYTES = 60_000;

/**
 * Splits `items` into parts of at most `PART_BYTES` of JSON and `MAX_PART_ITEMS` items, at most `maxParts`
 * parts: `kept` is how many items the parts hold (the first ones; fewer than `items.length` only when the
 * parts ran out).
 */
export function splitParts<T>(items: T[], maxParts = MAX_PARTS): { parts: T[][]; kept: number } {
  const encoder = new TextEncoder();
  const parts: T[][] = [];
  let part: T[] = [];
  let bytes = 2; // "[" and "]"
  let kept = 0;
  for (const item of items) {
    const size = encoder.encode(JSON.stringify(item)).length + 1;
    if (part.length > 0 && (part.length >= MAX_PART_ITEMS || bytes + size > PART_BYTES)) {
      parts.push(part);
      part = [];
      bytes = 2;
    }
    if (parts.length >= maxParts) return { parts, kept };
    if (size + 2 > PART_BYTES) {
      throw new JobFailure("ENGINE_ERROR", `One item of a result list is ${size} bytes, too long for a part`);
    }
    part.push(item);
    bytes += size;
    kept++;
  }
  if (part.length > 0) parts.push(part);
  return { parts, kept };
}

/** A job failure a handler throws: reason and message as the result reports them. */
export class JobFailure extends Error {
  constructor(readonly reason: string, message: string, readonly retryable = false) {
    super(message);
  }
}

/** What a running job sees. */
export interface JobContext {
  readonly job: ClaimedJob;
  /** Aborted when the control plane cancels the job or its lease is lost. */
  readonly signal: AbortSignal;
  /** The latest progress reply: `leaseExpiresAt`, `cancel`, and whatever later versions add (data tokens). */
  readonly lastProgressReply: Record<string, unknown> | null;
  /** Sets what the next progress report says. */
  progress(update: { percent?: number; message?: string; bytesTransferred?: number }): void;
  /** Posts a progress report now (a runner that needs a fresh reply, e.g. a renewed token). */
  reportNow(): Promise<Record<string, unknown> | null>;
  /**
   * Uploads `parts` of `list` (numbered from 0) before the result (`POST …/jobs/{id}/parts`), retrying
   * network and server errors. Throws `JobFailure` when the control plane refuses one (a lost lease:
   * `LEASE_EXPIRED`, retryable). Returns the number of parts, for the result's `parts`.
   */
  uploadParts(list: ResultList, parts: unknown[][]): Promise<number>;
  readonly log: Logger;
}

export type JobHandler = (ctx: JobContext) => Promise<JobOutcome>;

/** Results are cut to this many characters of message, so a result always fits its job record. */
const MAX_MESSAGE = 2000;

/** The outcome of an error a handler threw. */
export function outcomeOfError(e: unknown): JobOutcome {
  if (e instanceof JobFailure) {
    return { status: "failed", error: { reason: e.reason, message: e.message }, retryable: e.retryable };
  }
  if (e instanceof TargetError) {
    return { status: "failed", error: { reason: e.reason, message: e.message }, retryable: e.retryable };
  }
  const storage = classifyStorageError(e, { name: "of this job", id: "-" });
  if (storage) {
    return {
      status: "failed",
      error: { reason: storage.reason, message: storage.message },
      retryable: storage.retryable,
    };
  }
  if (isRepositoryDamage(e)) {
    return {
      status: "failed",
      error: { reason: "REPOSITORY_DAMAGED", message: messageOf(e) },
      retryable: false,
    };
  }
  return { status: "failed", error: { reason: "ENGINE_ERROR", message: messageOf(e) }, retryable: false };
}

export interface JobRunnerOptions {
  client: EngineClient;
  identity: () => EngineIdentity;
  handlers: Record<string, JobHandler>;
  /** Answers kinds without a handler. */
  fallback: JobHandler;
  log: Logger;
  maxJobs: number;
  pollMs: number;
  progressMs: number;
  /** How a result is re-sent (tests shorten the waits); default: up to `RESULT_RETRY_BUDGET_MS`, jittered. */
  resultRetry?: Partial<PostRetryOptions>;
}

/** Claims and runs jobs until stopped. */
export class JobRunner {
  #active = new Map<string, Promise<void>>();
  #stopped = false;
  #wake: (() => void) | null = null;
  #loop: Promise<void> | null = null;
  #claimError: string | null = null;

  constructor(readonly options: JobRunnerOptions) {}

  /** Jobs running now. */
  get activeJobs(): number {
    return this.#active.size;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Asks for jobs now (a heartbeat said some are pending). */
  poke(): void {
    this.#wake?.();
  }

  /** Stops claiming; waits for the running jobs to finish. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
    await Promise.allSettled([...this.#active.values()]);
  }

  async #sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
    this.#wake = null;
  }

  async #run(): Promise<void> {
    const { log } = this.options;
    while (!this.#stopped) {
      const free = this.options.maxJobs - this.#active.size;
      if (free > 0) {
        try {
          const jobs = await this.claim(free);
          if (this.#claimError !== null) log.log("info", "claiming jobs works again", {});
          this.#claimError = null;
          for (const job of jobs) this.#launch(job);
          if (jobs.length === free) continue; // there may be more: ask again at once
        } catch (e) {
          // Logged when the problem changes, not at every poll while the control plane is away.
          if (messageOf(e) !== this.#claimError) {
            log.log("warn", "claiming jobs failed", { error: messageOf(e) });
          }
          this.#claimError = messageOf(e);
        }
      }
      if (!this.#stopped) await this.#sleep(this.options.pollMs);
    }
  }

  /** One claim of up to `max` jobs. */
  async claim(max: number): Promise<ClaimedJob[]> {
    const res = await this.options.client.post(this.options.identity(), "/api/bes/v1/jobs/claim", { max });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`claim answered ${res.status}: ${text.slice(0, 300)}`);
    return (JSON.parse(text) as { jobs: ClaimedJob[] }).jobs;
  }

  #launch(job: ClaimedJob): void {
    const run = this.runJob(job).catch((e) =>
      this.options.log.log("error", "job runner failed", {
        jobId: job.id,
        kind: job.kind,
        error: messageOf(e),
      })
    ).finally(() => {
      this.#active.delete(job.id);
      this.#wake?.(); // a slot is free
    });
    this.#active.set(job.id, run);
  }

  /** Runs one claimed job to its posted result. */
  async runJob(job: ClaimedJob): Promise<void> {
    const { client, identity, log } = this.options;
    const startedAt = new Date();
    const controller = new AbortController();
    let lastReply: Record<string, unknown> | null = null;
    let state = { percent: 0, message: `${job.kind} started`, bytesTransferred: 0 };
    let leaseLost = false;
    const report = async (): Promise<Record<string, unknown> | null> => {
      if (leaseLost) return lastReply;
      try {
        const res = await client.post(identity(), `/api/bes/v1/jobs/${job.id}/progress`, state);
        const text = await res.text();
        if (res.status === 200) {
          lastReply = JSON.parse(text);
          if (lastReply?.cancel === true && !controller.signal.aborted) {
            controller.abort(new JobFailure("CANCELLED", "The job was cancelled"));
          }
        } else if (res.status === 409 || res.status === 404) {
          leaseLost = true;
          log.log("warn", "job lease lost; stopping it", { jobId: job.id, status: res.status });
          controller.abort(new JobFailure("LEASE_EXPIRED", `The lease of job ${job.id} was lost`, true));
        } else {
          log.log("warn", "progress refused", {
            jobId: job.id,
            status: res.status,
            body: text.slice(0, 200),
          });
        }
      } catch (e) {
        log.log("warn", "progress not delivered", { jobId: job.id, error: messageOf(e) });
      }
      return lastReply;
    };
    const ctx: JobContext = {
      job,
      signal: controller.signal,
      get lastProgressReply() {
        return lastReply;
      },
      progress(update) {
        state = {
          percent: Math.min(100, Math.max(0, update.percent ?? state.percent)),
          message: (update.message ?? state.message).slice(0, 500),
          bytesTransferred: Math.max(0, Math.floor(update.bytesTransferred ?? state.bytesTransferred)),
        };
      },
      reportNow: report,
      uploadParts: (list, parts) => this.uploadParts(job, list, parts),
      log,
    };
    log.log("info", "job started", { jobId: job.id, kind: job.kind, priority: job.priority });
    await report(); // at once: the run shows as running, and the reply (a data token, later) is there
    const ticker = setInterval(() => void report(), this.options.progressMs);
    let outcome: JobOutcome;
    try {
      const handler = this.options.handlers[job.kind] ?? this.options.fallback;
      outcome = controller.signal.aborted ? outcomeOfError(controller.signal.reason) : await handler(ctx);
    } catch (e) {
      outcome = outcomeOfError(controller.signal.aborted ? controller.signal.reason : e);
    } finally {
      clearInterval(ticker);
    }
    if (leaseLost) return; // a result now would be refused; the control plane requeues the job
    await this.postResult(job, startedAt, outcome);
  }

  /** Uploads the parts of one list of `job`'s result (see `JobContext.uploadParts`). */
  async uploadParts(job: ClaimedJob, list: ResultList, parts: unknown[][]): Promise<number> {
    const { client, identity, log } = this.options;
    if (parts.length > MAX_PARTS) {
      throw new JobFailure("ENGINE_ERROR", `${parts.length} parts of ${list}: at most ${MAX_PARTS}`);
    }
    for (const [part, items] of parts.entries()) {
      for (let attempt = 0;; attempt++) {
        if (attempt > 0) await new Promise((r) => setTimeout(r, Math.min(10_000, 250 * 2 ** attempt)));
        let res: Response;
        try {
          res = await client.post(identity(), `/api/bes/v1/jobs/${job.id}/parts`, { list, part, items });
        } catch (e) {
          if (attempt >= 5) {
            throw new JobFailure(
              "CONTROL_PLANE_UNREACHABLE",
              `Could not upload part ${part} of ${list}: ${messageOf(e)}`,
              true,
            );
          }
          log.log("warn", "part not delivered; retrying", { jobId: job.id, list, part, error: messageOf(e) });
          continue;
        }
        const text = await res.text();
        if (res.status === 200) break;
        if ((res.status >= 500 || res.status === 429) && attempt < 5) continue;
        if (res.status === 409 || res.status === 404) {
          throw new JobFailure(
            "LEASE_EXPIRED",
            `Part ${part} of ${list} was refused (${res.status}): the lease of job ${job.id} was lost`,
            true,
          );
        }
        throw new JobFailure(
          "ENGINE_ERROR",
          `Part ${part} of ${list} was refused (${res.status}): ${text.slice(0, 300)}`,
        );
      }
    }
    return parts.length;
  }

  /**
   * Posts a result, re-sent (newly signed) on network failures, 5xx — 503 `busy`: a commit lost its races —
   * 429 and 401 for up to `RESULT_RETRY_BUDGET_MS` with jittered backoff, each retry logged with the job id;
   * true once recorded (or found recorded already), false when refused (409/404/422) or never delivered.
   */
  async postResult(job: ClaimedJob, startedAt: Date, outcome: JobOutcome): Promise<boolean> {
    const { client, identity, log } = this.options;
    const error = outcome.status === "success"
      ? null
      : outcome.error
      ? { reason: outcome.error.reason.slice(0, 64), message: outcome.error.message.slice(0, MAX_MESSAGE) }
      : { reason: "ENGINE_ERROR", message: "The job did not succeed" };
    const body = {
      status: outcome.status,
      startedAt: startedAt.toISOString(),
      endedAt: new Date(Math.max(Date.now(), startedAt.getTime())).toISOString(),
      bytesTransferred: Math.max(0, Math.floor(outcome.bytesTransferred ?? 0)),
      protectedBytes: Math.max(0, Math.floor(outcome.protectedBytes ?? 0)),
      error,
      retryable: outcome.retryable ?? false,
      output: outcome.output ?? null,
      ...(outcome.stats ? { stats: outcome.stats } : {}),
      ...(outcome.errors?.length ? { errors: outcome.errors.slice(0, 100) } : {}),
      ...(outcome.parts && Object.keys(outcome.parts).length ? { parts: outcome.parts } : {}),
      ...(outcome.totals && Object.keys(outcome.totals).length ? { totals: outcome.totals } : {}),
    };
    let res: Response;
    try {
      res = await client.postRetrying(identity, `/api/bes/v1/jobs/${job.id}/result`, body, {
        budgetMs: RESULT_RETRY_BUDGET_MS,
        // 401 too: a clock that drifted past the skew window may be corrected meanwhile.
        retryable: (status) => isRetryableStatus(status) || status === 401,
        onRetry: ({ retry, delayMs, status, problem }) =>
          log.log("warn", "result not delivered; retrying", {
            jobId: job.id,
            retry,
            delayMs,
            status,
            problem: problem.slice(0, 200),
          }),
        ...this.options.resultRetry,
      });
    } catch (e) {
      log.log("error", "result could not be delivered", { jobId: job.id, error: messageOf(e) });
      return false;
    }
    const text = await res.text();
    if (res.status === 200) {
      let applied = true;
      try {
        applied = (JSON.parse(text) as { applied?: boolean }).applied !== false;
      } catch {
        // an answer without a body: recorded all the same
      }
      log.log(outcome.status === "failed" ? "warn" : "info", "job finished", {
        jobId: job.id,
        kind: job.kind,
        status: outcome.status,
        reason: error?.reason ?? null,
        message: error?.message.split("\n")[0].slice(0, 300) ?? null,
        // false: an earlier send of this result was recorded though its answer was lost.
        ...(applied ? {} : { alreadyApplied: true }),
      });
      return true;
    }
    if (!isRetryableStatus(res.status) && res.status !== 401) {
      // 409 (a different result exists, or the lease expired: the job was requeued), 404, 422: final.
      log.log("error", "result refused", { jobId: job.id, status: res.status, body: text.slice(0, 300) });
      return false;
    }
    log.log("error", "result could not be delivered", { jobId: job.id, status: res.status });
    return false;
  }
}
