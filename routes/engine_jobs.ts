/**
 * Engine protocol v1: the job queue seen by its engines — `/api/<bes|agent>/v1/jobs`: claim, progress (lease
 * renewal, cancel), the job's keys, result parts and the result; for an agent also a file restore's path list.
 */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { applyJobOutcome } from "../domain/job_outcomes.ts";
import { HttpError } from "../domain/errors.ts";
import { CommitConflictError } from "../domain/retry.ts";
import { NONCE_TTL_MS } from "../domain/engine_nonces.ts";
import {
  applyResult,
  claimJobs,
  PRIORITIES,
  ProgressInput,
  reportProgress,
  ResultInput,
} from "../domain/job_queue.ts";
import { restorePathsChunk } from "../domain/restore_requests.ts";
import { handOutJob, progressDataAccess } from "../domain/data_access.ts";
import { deliverJobKeys } from "../domain/namespace_keys.ts";
import { PartInput, RESULT_LISTS, storeResultPart } from "../domain/result_parts.ts";
import type { AppEnv } from "./env.ts";
import {
  claimed,
  errorResponses,
  failure,
  jsonBody,
  protocolHook,
  reply,
  signedHeaders,
  signedRoute,
} from "./engine_protocol.ts";

/** The Retry-After, in seconds, of a 503 `busy`. */
export const BUSY_RETRY_AFTER_SECONDS = 1;

/**
 * Runs the work of a job report (progress, key, part, result). A CommitConflictError — every commit lost
 * its race against concurrent writers: transient, and the step that threw wrote nothing — is answered 503
 * `busy` with Retry-After, so the engine sends the report again (newly signed) instead of taking it as
 * final like a 409 (the job is no longer its, or a different result exists). A result re-sent after it was
 * recorded is answered `{ applied: false }` and its outcome applied (idempotent), never applied twice.
 */
async function busyOnCommitConflict<T>(c: Context<AppEnv>, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (!(e instanceof CommitConflictError)) throw e;
    c.get("deps").logger.log("warn", "commit conflict; answered busy", {
      requestId: c.get("requestId"),
      route: c.req.routePath,
      principal: `${c.get("principal")?.kind}:${c.get("principal")?.id}`,
      tries: e.tries,
    });
    c.header("Retry-After", String(BUSY_RETRY_AFTER_SECONDS));
    throw new HttpError(503, "busy", `${e.message} (send the request again, newly signed)`);
  }
}

/** The 503 of a job report whose commit lost every race (see `busyOnCommitConflict`). */
const busy = failure(
  "`busy`: a concurrent change won every commit try (transient; Retry-After says when): send the request again, newly signed — a result already recorded is answered `applied: false`",
);

const ClaimBody = z.object({ max: z.number().int().min(1, "must be 1–50").max(50, "must be 1–50") });
const JobParam = z.object({ id: z.string().regex(/^[0-9A-Z]{26}$/, "must be a job id") });
/** The data tokens of a job (claim and progress replies). */
const DataTokens = {
  dataToken: z.string().nullable().openapi({
    description: "Job-scoped data token for the BES data API (null when the job touches no repository)",
  }),
  dataTokenExpiresAt: z.string().nullable(),
  replicaDataToken: z.string().nullable().openapi({
    description: "replicate to a target on another BES: a write token for that BES's data API",
  }),
};
const ClaimedJob = z.object({
  id: z.string(),
  kind: z.string(),
  priority: z.enum(PRIORITIES),
  payload: z.record(z.string(), z.unknown()).openapi({
    description:
      "Kind-specific; an agent's `bes` carries its BES's `dataUrl` and `certificate` (PEM) to pin, a replicate's `target.bes` the replica BES's",
  }),
  leaseExpiresAt: z.string(),
  ...DataTokens,
}).openapi("ClaimedJob");
const noSuchJob = failure("No such job for this principal");
const KeyRequest = z.object({}).strict().openapi({ description: "An empty JSON object `{}`" });
const JobKeys = z.object({
  jobId: z.string(),
  keySetId: z.string().openapi({ description: "Names the key set (not secret)" }),
  namespace: z.string().openapi({ description: "The host id whose namespace the keys open" }),
  repository: z.object({ target: z.string(), path: z.string(), generation: z.number().int() }),
  dataKey: z.string().openapi({ description: "base64 of the 32-byte data key (blob encryption)" }),
  idKey: z.string().openapi({ description: "base64 of the 32-byte id key (keyed chunk ids)" }),
  recovery: z.object({
    keyId: z.string(),
    algorithm: z.string(),
    additionalData: z.string(),
    encryptedKey: z.string(),
    nonce: z.string(),
    ciphertext: z.string(),
  }).nullable().openapi({
    description:
      "The same keys sealed for the account's recovery public key (base64 parts), for the BES to write into the repository's keys/; null before an administrator created the recovery key",
  }),
  recoveryPublicKey: z.string().nullable().openapi({
    description:
      "The account's recovery public key (SPKI PEM), null before an administrator created it: the engine writes the key object wrapping these keys for it into the repository's keys/ (repository-format.md, Keys)",
  }),
}).openapi("JobKeys");

/** The job routes of a `kind` principal, mounted at `/api/<kind>/v1/jobs`. */
function jobRoutes(kind: "bes" | "agent") {
  const jobs = new OpenAPIHono<AppEnv>(protocolHook);

  jobs.openapi(
    createRoute({
      ...signedRoute(kind),
      path: "/claim",
      summary: `Claim up to max jobs for this ${kind === "bes" ? "BES" : "agent"}, highest priority first`,
      request: { headers: signedHeaders, body: jsonBody(ClaimBody) },
      responses: {
        200: reply("Leased jobs", z.object({ jobs: z.array(ClaimedJob) })),
        ...errorResponses,
      },
    }),
    async (c) => {
      const { kv, owner, now } = await claimed(c);
      const { masterKey, metrics } = c.get("deps");
      const started = performance.now();
      const jobs = await claimJobs(kv, owner, c.req.valid("json").max, now);
      metrics.observeClaim(kind, (performance.now() - started) / 1000, jobs.length);
      const engines = new Map();
      return c.json({
        jobs: await Promise.all(jobs.map(async (j) => ({
          id: j.id,
          kind: j.kind,
          priority: j.priority,
          leaseExpiresAt: j.leaseExpiresAt!,
          ...await handOutJob(kv, masterKey, j, owner, now, engines),
        }))),
      }, 200);
    },
  );

  jobs.openapi(
    createRoute({
      ...signedRoute(kind),
      path: "/{id}/progress",
      summary: "Report progress; renews the lease and says whether to cancel",
      request: { headers: signedHeaders, params: JobParam, body: jsonBody(ProgressInput) },
      responses: {
        200: reply(
          "Lease renewed, with fresh data tokens (none once cancel is true)",
          z.object({ leaseExpiresAt: z.string(), cancel: z.boolean(), ...DataTokens }),
        ),
        404: noSuchJob,
        409: failure("Lease expired or job ended"),
        ...errorResponses,
        503: busy,
      },
    }),
    async (c) => {
      const { kv, owner, now } = await claimed(c);
      const id = c.req.valid("param").id;
      return await busyOnCommitConflict(c, async () => {
        const reply = await reportProgress(kv, owner, id, c.req.valid("json"), now);
        const tokens = await progressDataAccess(kv, c.get("deps").masterKey, owner, id, now);
        return c.json({ ...reply, ...tokens }, 200);
      });
    },
  );

  jobs.openapi(
    createRoute({
      ...signedRoute(kind),
      path: "/{id}/key",
      summary:
        "The keys of the one namespace this job needs, for its holder while it runs (never stored with the job)",
      request: { headers: signedHeaders, params: JobParam, body: jsonBody(KeyRequest) },
      responses: {
        200: reply("The namespace's keys (Cache-Control: no-store)", JobKeys),
        403: failure("`no_keys_for_job`: this kind of job needs no keys (prune, health check)"),
        404: failure("`not_found`: no such job for this principal"),
        409: failure(
          "`job_not_running` (not leased to you, lease expired, ended), `job_cancelled`, or `repository_unknown`",
        ),
        ...errorResponses,
        503: busy,
      },
    }),
    async (c) => {
      const { kv, clock, masterKey } = c.get("deps");
      const principal = c.get("principal")!;
      const keys = await busyOnCommitConflict(c, () =>
        deliverJobKeys(
          kv,
          masterKey,
          `${principal.kind}:${principal.id}`,
          c.req.valid("param").id,
          { key: principal.nonceKey, expireIn: NONCE_TTL_MS },
          clock(),
        ));
      c.header("Cache-Control", "no-store");
      const b64 = (bytes: Uint8Array) => bytes.toBase64();
      const body = {
        jobId: keys.jobId,
        keySetId: keys.keySetId,
        namespace: keys.namespace,
        repository: keys.repository,
        dataKey: b64(keys.dataKey),
        idKey: b64(keys.idKey),
        recovery: keys.recovery && {
          keyId: keys.recovery.keyId,
          algorithm: keys.recovery.algorithm,
          additionalData: keys.recovery.additionalData,
          encryptedKey: b64(keys.recovery.encryptedKey),
          nonce: b64(keys.recovery.nonce),
          ciphertext: b64(keys.recovery.ciphertext),
        },
        recoveryPublicKey: keys.recoveryPublicKey,
      };
      keys.dataKey.fill(0);
      keys.idKey.fill(0);
      return c.json(body, 200);
    },
  );

  jobs.openapi(
    createRoute({
      ...signedRoute(kind),
      path: "/{id}/parts",
      summary: "Upload one part of a long result list (browse entries, search matches, per-file errors) " +
        "before the result; the result names how many parts each list has",
      request: { headers: signedHeaders, params: JobParam, body: jsonBody(PartInput) },
      responses: {
        200: reply(
          "Stored (sending the same part again replaces it)",
          z.object({ list: z.enum(RESULT_LISTS), part: z.number().int(), items: z.number().int() }),
        ),
        404: noSuchJob,
        409: failure("The result is already recorded, or the lease expired"),
        ...errorResponses,
        413: failure("Body larger than 64 KiB, or the part too large to keep once validated"),
        503: busy,
      },
    }),
    async (c) => {
      const { kv, owner, now } = await claimed(c);
      const stored = await busyOnCommitConflict(
        c,
        () => storeResultPart(kv, owner, c.req.valid("param").id, c.req.valid("json"), now),
      );
      return c.json(stored, 200);
    },
  );

  jobs.openapi(
    createRoute({
      ...signedRoute(kind),
      path: "/{id}/result",
      summary: "Post a job's result; applied once (a duplicate is a no-op, a different one is refused)",
      request: { headers: signedHeaders, params: JobParam, body: jsonBody(ResultInput) },
      responses: {
        200: reply("Recorded", z.object({ applied: z.boolean() })),
        404: noSuchJob,
        409: failure("A different result exists, or the lease expired (final: the job is no longer yours)"),
        ...errorResponses,
        422: failure("Invalid fields, or a part named in `parts` is missing (`parts.<list>`)"),
        503: busy,
      },
    }),
    async (c) => {
      const { kv, owner, now } = await claimed(c);
      return await busyOnCommitConflict(c, async () => {
        const { applied, job } = await applyResult(
          kv,
          owner,
          c.req.valid("param").id,
          c.req.valid("json"),
          now,
        );
        // A duplicate post still applies the outcome (idempotent): the process may have stopped after
        // recording the result and before its run, restore point or state caught up — or the outcome's
        // commit lost its races (503 `busy`) after the result was recorded.
        await applyJobOutcome(kv, job, now);
        return c.json({ applied }, 200);
      });
    },
  );
  return jobs;
}

/** `/api/bes/v1/jobs` */
export const besJobs = jobRoutes("bes");
/** `/api/agent/v1/jobs`: the same, and a file restore's path list */
export const agentJobs = jobRoutes("agent");

agentJobs.openapi(
  createRoute({
    ...signedRoute("agent"),
    path: "/{id}/paths",
    summary: "One chunk of a file restore's path list (payloads with pathChunks > 0 carry no paths inline)",
    request: {
      headers: signedHeaders,
      params: JobParam,
      body: jsonBody(z.object({ chunk: z.number().int().min(0, "must be 0 or more") })),
    },
    responses: {
      200: reply(
        "The chunk's paths, in selection order",
        z.object({ chunk: z.number().int(), chunks: z.number().int(), paths: z.array(z.string()) }),
      ),
      404: failure("No such file restore job for this agent, or no such chunk"),
      ...errorResponses,
    },
  }),
  async (c) => {
    const { kv, owner } = await claimed(c);
    const reply = await restorePathsChunk(kv, owner, c.req.valid("param").id, c.req.valid("json").chunk);
    return c.json(reply, 200);
  },
);
