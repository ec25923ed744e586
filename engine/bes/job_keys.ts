/**
 * Just-in-time keys of a BES job (ENGINE.md §5): `POST /api/bes/v1/jobs/{id}/key`, signed by the BES that
 * holds the job, answers the keys of the one namespace the job needs (docs/engine-protocol.md, "Data tokens
 * and keys"): `{"jobId", "keySetId", "namespace", "repository": {target, path, generation}, "dataKey",
 * "idKey", "recovery"}`, the keys base64 of 32 bytes each. The keys live in memory for the job only: never
 * logged, never written. `repository` is the one the control plane gave the keys for, which the BES checks
 * against the repository it opens; `recoveryPublicKey` (the account's recovery public key, SPKI PEM), when
 * a control plane sends it, lets the BES write a copy of the keys wrapped for it into a repository it
 * creates (a replica).
 */
import type { EngineClient, EngineIdentity, PostRetryOptions, RetryInfo } from "../protocol/client.ts";
import { KEY_RETRY_BUDGET_MS } from "../protocol/retry.ts";
import { KEY_BYTES, type NamespaceKeys } from "../repo/keys.ts";
import { JobFailure } from "./jobs.ts";

/** The keys of a job's namespace and what the key endpoint says of them. */
export interface JobKeys extends NamespaceKeys {
  /** The repository the keys were delivered for (null when the reply names none). */
  repository: { target: string; path: string; generation: number } | null;
  /** The account's recovery public key (SPKI PEM), when the control plane sends it. */
  recoveryPublicKey: string | null;
}

/** Gets the namespace keys of a job. */
export type JobKeyProvider = (jobId: string) => Promise<JobKeys>;

function decodeKey(text: unknown, field: string): Uint8Array {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) {
    throw new JobFailure("KEY_UNAVAILABLE", `The key endpoint's ${field} is not base64`);
  }
  const normal = text.replaceAll("-", "+").replaceAll("_", "/").replace(/=+$/, "");
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(normal + "=".repeat((4 - (normal.length % 4)) % 4));
  } catch {
    throw new JobFailure("KEY_UNAVAILABLE", `The key endpoint's ${field} is not base64`);
  }
  if (bytes.length !== KEY_BYTES) {
    throw new JobFailure(
      "KEY_UNAVAILABLE",
      `The key endpoint's ${field} is ${bytes.length} bytes, not ${KEY_BYTES}`,
    );
  }
  return bytes;
}

/**
 * The provider that asks the control plane. A retryable answer — 503 `busy` (the delivery's commit lost its
 * races), another 5xx, a 429 — or a network failure is asked again, newly signed, with the results' jittered
 * backoff (`EngineClient.postRetrying`) for up to KEY_RETRY_BUDGET_MS (`retry` overrides it, and passes
 * `onRetry` to log each retry); only then does the job fail. Failures are `JobFailure`s: `KEY_UNAVAILABLE`
 * or `KEY_REFUSED`.
 */
export function controlPlaneKeys(
  client: EngineClient,
  identity: () => EngineIdentity,
  retry: Partial<Omit<PostRetryOptions, "onRetry">> & { onRetry?: (jobId: string, info: RetryInfo) => void } =
    {},
): JobKeyProvider {
  return async (jobId) => {
    let res: Response;
    try {
      const { onRetry, ...timing } = retry;
      res = await client.postRetrying(identity, `/api/bes/v1/jobs/${jobId}/key`, {}, {
        budgetMs: KEY_RETRY_BUDGET_MS,
        ...timing,
        onRetry: onRetry && ((info) => onRetry(jobId, info)),
      });
    } catch (e) {
      throw new JobFailure(
        "KEY_UNAVAILABLE",
        `Could not ask the control plane for the job's key: ${(e as Error).message}`,
        true,
      );
    }
    const text = await res.text();
    if (res.status !== 200) {
      // An error body carries no key; it is quoted (short) so the operator sees the control plane's reason.
      let reason = text.slice(0, 200);
      try {
        reason = JSON.parse(text)?.error?.message ?? reason;
      } catch {
        // not JSON
      }
      throw new JobFailure(
        res.status === 403 ? "KEY_REFUSED" : "KEY_UNAVAILABLE",
        `The control plane did not give the job's key (${res.status}): ${reason}`,
        res.status >= 500 || res.status === 429,
      );
    }
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text);
    } catch {
      throw new JobFailure("KEY_UNAVAILABLE", "The key endpoint's reply is not JSON");
    }
    if (typeof body.namespace !== "string" || body.namespace === "") {
      throw new JobFailure("KEY_UNAVAILABLE", "The key endpoint's reply names no namespace");
    }
    const r = body.repository as Record<string, unknown> | null | undefined;
    const repository = r && typeof r.target === "string" && typeof r.path === "string" &&
        typeof r.generation === "number"
      ? { target: r.target, path: r.path, generation: r.generation }
      : null;
    const dataKey = decodeKey(body.dataKey, "dataKey");
    const idKey = decodeKey(body.idKey, "idKey");
    return {
      namespace: body.namespace,
      dataKey,
      idKey,
      repository,
      recoveryPublicKey: typeof body.recoveryPublicKey === "string" ? body.recoveryPublicKey : null,
    };
  };
}

/** Overwrites the key bytes once a job is done with them. */
export function wipeKeys(keys: NamespaceKeys): void {
  keys.dataKey.fill(0);
  keys.idKey.fill(0);
}
