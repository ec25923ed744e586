/**
 * Long result lists uploaded in parts (DESIGN.md §5, ENGINE.md §5): a browse listing (`entries`), search
 * matches (`matches`) and per-file errors (`errors`) can be longer than one 64 KiB request. The engine
 * that holds a job posts them as numbered parts (`POST …/jobs/{id}/parts`, several requests), then its
 * result names how many parts each list has (`parts`) and how many items it found in all (`totals`). The
 * result is refused while a named part is missing, so a list is never cut silently; a list the engine
 * cut itself keeps its total, and pages say "N of TOTAL".
 *
 * Storage: each part is one KV value (the UTF-8 JSON of its validated items, as a Uint8Array, so its size
 * is exact) under the attempt that uploaded it, with its item count beside it:
 * `["job_parts", jobId, attempt, list, part]` and `["job_part_counts", jobId, attempt, list, part]`. A
 * result's inline `errors` are kept as part -1 of `errors` (first). Parts of browse and search expire with
 * the listings they feed; errors stay with their run.
 */
import { jobKey, partCountsPrefix, partsPrefix } from "./keys/jobs.ts";
import { z } from "zod";
import { ConflictError, HttpError, NotFoundError, ValidationError } from "./errors.ts";
import type { Job } from "./job_queue.ts";
import { CommitConflictError } from "./retry.ts";
import { partCountKey, partKey } from "./keys/jobs.ts";
export { partCountKey, partKey };

export const RESULT_LISTS = ["entries", "matches", "errors"] as const;
export type ResultList = (typeof RESULT_LISTS)[number];

/** Parts one list may have. */
export const MAX_PARTS = 200;
/** Items one part may hold (the 64 KiB body bounds it first, in practice). */
export const MAX_PART_ITEMS = 5000;
/** Encoded bytes one part may take in KV (a KV value holds 64 KiB). */
export const MAX_PART_BYTES = 64_000;
/** Inline errors a result may carry (more go in parts). */
export const MAX_INLINE_ERRORS = 100;
/** Browse and search parts expire with their listings (a week, like RESTORE_CACHE_TTL_MS). */
const LISTING_PART_TTL_MS = 7 * 86_400_000;

const Iso = z.iso.datetime({ offset: true, error: "must be an ISO 8601 time" });
const Size = z.number().int("must be a whole number").min(0, "must not be negative");

/** One entry of a browse listing, as an engine reports it. */
export const EntryItem = z.object({
  name: z.string().min(1, "must not be empty").max(1024, "must be at most 1024 characters")
    .refine((v) => !/[\p{Cc}/\\]/u.test(v) && v !== "." && v !== "..", "must be a plain file name"),
  type: z.enum(["file", "dir", "symlink", "other"], { error: "must be file, dir, symlink or other" }),
  size: Size,
  mtime: Iso.optional(),
}).strict();
/** One search match. */
export const MatchItem = z.object({
  path: z.string().min(1, "must not be empty").max(4096, "must be at most 4096 characters"),
  type: z.enum(["file", "dir", "symlink", "other"]).optional(),
  size: Size,
  mtime: Iso.optional(),
}).strict();
/** One per-file error: the path it concerns and what went wrong. */
export const ErrorItem = z.object({
  path: z.string().min(1, "must not be empty").max(4096, "must be at most 4096 characters"),
  message: z.string().max(1000, "must be at most 1000 characters"),
}).strict();
export type ErrorItem = z.infer<typeof ErrorItem>;

const ITEM_SCHEMAS = { entries: EntryItem, matches: MatchItem, errors: ErrorItem } as const;

/** The job kinds each list belongs to (`errors`: any kind). */
const LIST_KINDS: Record<ResultList, readonly string[] | null> = {
  entries: ["browse"],
  matches: ["search"],
  errors: null,
};

export const PartInput = z.object({
  list: z.enum(RESULT_LISTS, { error: "must be entries, matches or errors" }),
  part: z.number().int("must be a whole number").min(0, `must be 0–${MAX_PARTS - 1}`)
    .max(MAX_PARTS - 1, `must be 0–${MAX_PARTS - 1}`),
  items: z.array(z.unknown()).min(1, "must not be empty").max(
    MAX_PART_ITEMS,
    `at most ${MAX_PART_ITEMS} items`,
  ),
}).strict();
export type PartInput = z.input<typeof PartInput>;

/** The result's list facts kept with the job: parts uploaded, items kept, items the engine found. */
export interface ListFacts {
  parts: number;
  kept: number;
  total: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function leaseLive(job: Job, now: Date): boolean {
  return job.status === "leased" && now.getTime() < Date.parse(job.leaseExpiresAt ?? "");
}

/**
 * Stores one part of a list of the job `id` for its holder (`principal`), under the job's current attempt.
 * Sending a part again replaces it (a retried request). Throws NotFoundError for another principal's job,
 * ConflictError once a result is recorded or the lease has expired, ValidationError (422 naming the item)
 * for a list this kind of job has not or an invalid item, HttpError 413 for a part too large to keep.
 */
export async function storeResultPart(
  kv: Deno.Kv,
  principal: string,
  id: string,
  input: PartInput,
  now: Date,
): Promise<{ list: ResultList; part: number; items: number }> {
  const data = PartInput.parse(input);
  const entry = await kv.get<Job>(jobKey(id));
  const job = entry.value;
  if (!job || job.principal !== principal) throw new NotFoundError("No such job for this principal");
  if (job.result) throw new ConflictError("This job's result is already recorded: parts come before it");
  if (!leaseLive(job, now)) throw new ConflictError("The lease of this job has expired or the job has ended");
  const kinds = LIST_KINDS[data.list];
  if (kinds && !kinds.includes(job.kind)) {
    throw new ValidationError(`A ${job.kind} job has no ${data.list} list`, {
      list: `must be ${
        job.kind === "browse" ? "entries or errors" : job.kind === "search" ? "matches or errors" : "errors"
      } for a ${job.kind} job`,
    });
  }
  const schema = ITEM_SCHEMAS[data.list];
  const items: unknown[] = [];
  for (const [i, raw] of data.items.entries()) {
    const r = schema.safeParse(raw);
    if (!r.success) {
      const issue = r.error.issues[0];
      const field = ["items", i, ...issue.path].join(".");
      throw new ValidationError(`Item ${i} of part ${data.part} is invalid: ${issue.message}`, {
        [field]: issue.message,
      });
    }
    items.push(r.data);
  }
  const bytes = encoder.encode(JSON.stringify(items));
  if (bytes.length > MAX_PART_BYTES) {
    throw new HttpError(
      413,
      "too_large",
      `Part ${data.part} takes ${bytes.length} bytes once validated, more than ${MAX_PART_BYTES}: send fewer items per part`,
    );
  }
  const options = LIST_KINDS[data.list] ? { expireIn: LISTING_PART_TTL_MS } : undefined;
  // Checked against the job: a result recorded (or a lease lost) meanwhile refuses the part.
  const res = await kv.atomic().check(entry)
    .set(partKey(id, job.attempts, data.list, data.part), bytes, options)
    .set(partCountKey(id, job.attempts, data.list, data.part), items.length, options)
    .commit();
  // Transient (a progress report renewed the lease meanwhile): the engine sends the part again (503).
  if (!res.ok) throw new CommitConflictError("The job changed while the part was stored; send it again", 1);
  return { list: data.list, part: data.part, items: items.length };
}

/**
 * Checks a result's `parts` and `totals` against what the attempt uploaded and returns each list's facts.
 * Throws ValidationError (422 naming `parts.<list>` or `totals.<list>`) when a named part is missing,
 * parts were uploaded beyond the named count, or a total is below the items kept.
 */
export async function settleResultLists(
  kv: Deno.Kv,
  job: Job,
  parts: Partial<Record<ResultList, number>>,
  totals: Partial<Record<ResultList, number>>,
  inline: Partial<Record<ResultList, number>>,
): Promise<Partial<Record<ResultList, ListFacts>>> {
  const out: Partial<Record<ResultList, ListFacts>> = {};
  for (const list of RESULT_LISTS) {
    const named = parts[list] ?? 0;
    const uploaded = new Map<number, number>();
    for await (const e of kv.list<number>({ prefix: partCountsPrefix(job.id, job.attempts, list) })) {
      uploaded.set(Number(e.key[4]), e.value);
    }
    const missing: number[] = [];
    let kept = inline[list] ?? 0;
    for (let p = 0; p < named; p++) {
      const n = uploaded.get(p);
      if (n === undefined) missing.push(p);
      else kept += n;
    }
    if (missing.length) {
      throw new ValidationError(`Parts of ${list} are missing: upload them before the result`, {
        [`parts.${list}`]: `part${missing.length === 1 ? "" : "s"} ${missing.slice(0, 10).join(", ")}${
          missing.length > 10 ? "…" : ""
        } of ${named} ${missing.length === 1 ? "is" : "are"} missing`,
      });
    }
    const beyond = [...uploaded.keys()].filter((p) => p >= named);
    if (beyond.length) {
      throw new ValidationError(`More parts of ${list} were uploaded than the result names`, {
        [`parts.${list}`]: `${uploaded.size} part(s) were uploaded but the result names ${named}`,
      });
    }
    const total = totals[list] ?? kept;
    if (total < kept) {
      throw new ValidationError(`The total of ${list} is below the items sent`, {
        [`totals.${list}`]: `must be at least ${kept}, the number of ${list} sent`,
      });
    }
    if (named > 0 || kept > 0 || totals[list] !== undefined) out[list] = { parts: named, kept, total };
  }
  return out;
}

/** Adds to `op` the result's inline errors, kept as part -1 of `errors` (read first). */
export function keepInlineErrorsInOp(op: Deno.AtomicOperation, job: Job, errors: ErrorItem[]): void {
  if (!errors.length) return;
  op.set(partKey(job.id, job.attempts, "errors", -1), encoder.encode(JSON.stringify(errors)))
    .set(partCountKey(job.id, job.attempts, "errors", -1), errors.length);
}

/** The items of one part of a finished job's list (part -1: the inline errors), or null when missing. */
export async function readResultPart<T = unknown>(
  kv: Deno.Kv,
  jobId: string,
  attempt: number,
  list: ResultList,
  part: number,
): Promise<T[] | null> {
  const value = (await kv.get<Uint8Array>(partKey(jobId, attempt, list, part))).value;
  return value ? JSON.parse(decoder.decode(value)) as T[] : null;
}

/**
 * Every item of a list, in order (inline first, then parts 0…`parts`-1). Only the parts the result named
 * are read: one that arrived while the result was being recorded is not part of it.
 */
export async function readResultList<T = unknown>(
  kv: Deno.Kv,
  jobId: string,
  attempt: number,
  list: ResultList,
  parts: number,
): Promise<T[]> {
  const out: T[] = [];
  const end = partKey(jobId, attempt, list, parts);
  for await (const e of kv.list<Uint8Array>({ prefix: partsPrefix(jobId, attempt, list), end })) {
    out.push(...JSON.parse(decoder.decode(e.value)) as T[]);
  }
  return out;
}

/**
 * The part numbers of a list that hold items, in order (-1 first when inline errors were kept), up to the
 * `parts` the result named.
 */
export async function listPartNumbers(
  kv: Deno.Kv,
  jobId: string,
  attempt: number,
  list: ResultList,
  parts: number,
): Promise<Array<{ part: number; items: number }>> {
  const out: Array<{ part: number; items: number }> = [];
  const end = partCountKey(jobId, attempt, list, parts);
  for await (const e of kv.list<number>({ prefix: partCountsPrefix(jobId, attempt, list), end })) {
    out.push({ part: Number(e.key[4]), items: e.value });
  }
  return out;
}

/** Deletes the parts earlier attempts of a job left (a retried attempt uploads its own). */
export async function dropStaleParts(kv: Deno.Kv, jobId: string, attempt: number): Promise<void> {
  for (const prefix of [partsPrefix(jobId), partCountsPrefix(jobId)]) {
    const keys: Deno.KvKey[] = [];
    for await (const e of kv.list({ prefix })) if (e.key[2] !== attempt) keys.push(e.key);
    for (let i = 0; i < keys.length; i += 500) {
      const op = kv.atomic();
      for (const key of keys.slice(i, i + 500)) op.delete(key);
      await op.commit();
    }
  }
}
