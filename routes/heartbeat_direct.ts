/**
 * The heartbeats' direct path (issue 20: heartbeats near the KV's ceiling). A well-formed, correctly signed
 * BES or agent heartbeat is answered here, before hono's middleware chain, router and validator: about a
 * fifth of a heartbeat's CPU on the main thread went to that machinery (docs/performance.md).
 *
 * It does exactly what the declared routes do (routes/engine_protocol.ts: `signedBy` then the heartbeat
 * handler), with the same domain functions: the principal header in its one exact form, a known principal
 * (a BES not being deleted), the Ed25519 signature over the canonical string, the timestamp within 300 s,
 * the body validated by the route's own zod schema, then one checked write that claims the nonce (401 on
 * replay) and checks the principal's entry. Request metrics, the span and the log line are those of
 * `requestContext`.
 *
 * Anything else goes to the declared routes, which give the canonical answer: a request that is not a
 * plain JSON POST with a declared length within the limit (413, 400…), and every refusal found before the
 * write — malformed or unknown principal, bad signature, skew, invalid JSON or fields. Nothing is written
 * before them, so the declared route answers exactly as if it had been asked first. A replay and a
 * principal deleted meanwhile are refused here (the declared route's words), as is an error after the
 * write (the nonce is claimed by then, so the request cannot be handed on).
 *
 * The principal's entry may come from `heartbeatEntry` (what this instance's last heartbeat of it wrote),
 * so a heartbeat usually reads one key (its queue counter) instead of two. The write checks that entry's
 * versionstamp and the signature's key, so a stale entry only costs a retry from a fresh read.
 */
import { applyCapacityReports } from "../domain/storage.ts";
import { applyHeartbeat, BesHeartbeat, type Engine } from "../domain/engines.ts";
import { AgentHeartbeat, applyHostHeartbeat, type Host } from "../domain/hosts.ts";
import { NONCE_TTL_MS, principalNonceKey } from "../domain/engine_nonces.ts";
import { NotFoundError, toErrorStatus, ValidationError } from "../domain/errors.ts";
import { forgetHeartbeat, heartbeatEntry, rememberHeartbeat } from "../domain/heartbeat_entries.ts";
import { queuedCount } from "../domain/job_queue.ts";
import { SIGNATURE_HEADERS, verifySignedRequest } from "../domain/signing.ts";
import { cachedKey, pathAndQuery, PRINCIPAL_HEADER } from "./engine_protocol.ts";
import type { AppEnv, Deps } from "./env.ts";
import { annotateRequestSpan, requestIdFrom } from "./middleware.ts";

type Kind = "bes" | "agent";
type Bindings = AppEnv["Bindings"] | undefined;
type Fetch = (request: Request, env: Bindings) => Response | Promise<Response>;

/** The routes answered here, by exact path (a query string or a trailing slash goes to hono). */
const ROUTES: Record<string, Kind | undefined> = {
  "/api/bes/v1/heartbeat": "bes",
  "/api/agent/v1/heartbeat": "agent",
};

const decoder = new TextDecoder();

/**
 * Returns a fetch handler that answers heartbeats directly and hands every other request (and every
 * heartbeat it does not answer, see above) to `declared`, the app's own fetch.
 */
export function heartbeatDirect(deps: Deps, maxBodyBytes: number, declared: Fetch): Fetch {
  return (request, env) => {
    if (request.method !== "POST") return declared(request, env);
    const path = pathAndQuery(request.url);
    const kind = ROUTES[path];
    if (kind === undefined) return declared(request, env);
    return answer(deps, maxBodyBytes, declared, kind, path, request, env);
  };
}

async function answer(
  deps: Deps,
  maxBodyBytes: number,
  declared: Fetch,
  kind: Kind,
  path: string,
  request: Request,
  env: Bindings,
): Promise<Response> {
  const started = performance.now();
  const headers = request.headers;
  const length = headers.get("content-length");
  // Only a plain JSON body of a declared length within the limit (what hono's bodyLimit and the JSON
  // validator accept without further ado); the declared route answers the rest (413, 400, 422…).
  if (
    headers.get("content-type") !== "application/json" || length === null ||
    headers.has("transfer-encoding") ||
    !(parseInt(length, 10) <= maxBodyBytes)
  ) {
    return declared(request, env);
  }
  const match = PRINCIPAL_HEADER.exec(headers.get(SIGNATURE_HEADERS.principal) ?? "");
  if (!match || match[1] !== kind) return declared(request, env);
  const id = match[2];
  const { kv, clock } = deps;
  const { entry } = await heartbeatEntry<Engine | Host>(kv, kind, id);
  const record = entry.value;
  if (!record || (kind === "bes" && (record as Engine).status === "deleting")) {
    forgetHeartbeat(kv, kind, id);
    return declared(request, env);
  }
  const body = new Uint8Array(await request.arrayBuffer());
  // Refused before any write: the declared route reads everything again and gives its own answer.
  const handOn = () => declared(new Request(request.url, { method: "POST", headers, body }), env);
  if (body.length > maxBodyBytes) return handOn();
  const nonce = headers.get(SIGNATURE_HEADERS.nonce) ?? "";
  const now = clock();
  const check = verifySignedRequest(
    cachedKey(record.publicKey),
    {
      method: "POST",
      pathAndQuery: path,
      timestamp: headers.get(SIGNATURE_HEADERS.timestamp) ?? "",
      nonce,
      signature: headers.get(SIGNATURE_HEADERS.signature) ?? "",
    },
    body,
    now,
  );
  if (!check.ok) return handOn();
  let input: unknown;
  try {
    input = JSON.parse(decoder.decode(body));
  } catch {
    return handOn();
  }
  const parsed = (kind === "bes" ? BesHeartbeat : AgentHeartbeat).safeParse(input);
  if (!parsed.success) return handOn();

  const requestId = requestIdFrom(headers.get("x-request-id"));
  const finish = (status: number, reply: unknown) => {
    const seconds = (performance.now() - started) / 1000;
    deps.metrics.observeRequest("POST", path, status, seconds);
    annotateRequestSpan("POST", request.url, path, kind, requestId);
    deps.logger.log(status >= 500 ? "error" : "info", "request", {
      requestId,
      principal: "anonymous",
      method: "POST",
      route: path,
      status,
      durationMs: Math.round(seconds * 100_000) / 100,
    });
    return new Response(JSON.stringify(reply), {
      status,
      headers: { "content-type": "application/json", "x-request-id": requestId },
    });
  };
  const refuse = (message: string) => finish(401, { error: { code: "unauthorized", message } });
  const failed = (error: unknown) => {
    const { status, code } = toErrorStatus(error);
    const fields = error instanceof ValidationError ? error.fields : undefined;
    let message = error instanceof Error ? error.message : String(error);
    if (status === 500) {
      deps.logger.log("error", "unhandled error", {
        requestId,
        route: path,
        error: String((error as Error)?.stack ?? error),
      });
      message = "Something went wrong on our side. The error was logged with request id " + requestId;
    }
    return finish(status, { error: { code, message, ...(fields ? { fields } : {}) } });
  };

  const nonceKey = { key: principalNonceKey(kind, id, nonce), expireIn: NONCE_TTL_MS };
  let written: { status: string; value: Engine | Host; replayed: boolean; versionstamp?: string };
  try {
    if (kind === "bes") {
      const { engine, replayed, versionstamp } = await applyHeartbeat(
        kv,
        id,
        parsed.data as BesHeartbeat,
        now,
        {
          nonce: nonceKey,
          entry: entry as Deno.KvEntryMaybe<Engine>,
          parsed: true,
          signedWith: record.publicKey,
        },
      );
      written = { status: engine.status, value: engine, replayed, versionstamp };
    } else {
      const { host, replayed, versionstamp } = await applyHostHeartbeat(
        kv,
        id,
        parsed.data as Parameters<typeof applyHostHeartbeat>[2],
        now,
        nonceKey,
        { entry: entry as Deno.KvEntryMaybe<Host>, parsed: true, signedWith: record.publicKey },
      );
      written = { status: host.status, value: host, replayed, versionstamp };
    }
  } catch (error) {
    forgetHeartbeat(kv, kind, id);
    // Gone or being deleted by the time of the write: refused like one gone before (nothing written).
    if (error instanceof NotFoundError) return refuse("Unknown or deleted principal");
    // A field the write refuses (a renewed certificate without a data URL): nothing written either.
    if (error instanceof ValidationError) return handOn();
    return failed(error);
  }
  if (written.replayed) return refuse("Replayed nonce");
  rememberHeartbeat(kv, kind, id, written.value, written.versionstamp!);
  try {
    const storage = kind === "bes" ? (parsed.data as BesHeartbeat).storage : undefined;
    // Capacity goes in its own bounded writes after the heartbeat claimed the nonce (up to 200 reports).
    if (storage?.length) await applyCapacityReports(kv, id, storage, now);
    const pendingJobs = await queuedCount(kv, `${kind}:${id}`);
    return finish(
      200,
      kind === "bes"
        ? {
          status: written.status,
          serverTime: now.toISOString(),
          pendingJobs,
          storageTargetIds: (written.value as Engine).storageTargetIds,
        }
        : { status: written.status, serverTime: now.toISOString(), pendingJobs },
    );
  } catch (error) {
    return failed(error);
  }
}
