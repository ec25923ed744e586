/**
 * The on-demand storage checks' URL segments and form handler, shared by the target's page
 * (routes/storage.tsx), the dashboard's storage alert cards (routes/dashboard.tsx) and the JSON API
 * (routes/api_v1_storage.ts): one spelling of each check in every URL, one handler for both pages.
 */
import type { Context } from "hono";
import { ConflictError } from "../domain/errors.ts";
import { requestStorageCheck, STORAGE_CHECKS, type StorageCheck } from "../domain/storage.ts";
import type { AppEnv } from "./env.ts";
import { redirectWithNotice } from "./render.tsx";

/** The URL segment of each check: `…/storage/:targetId/health-check`, `…/verify`. */
export const STORAGE_CHECK_SEGMENTS: Record<StorageCheck, string> = {
  health_check: "health-check",
  verify: "verify",
};

/**
 * The form POST of a check of the target `:targetId`: queued, a redirect to `back(targetId)` with the job
 * and where it runs; refused (no eligible host online, BES offline), the same redirect with the reason —
 * nothing was queued.
 */
export function storageCheckHandler(check: StorageCheck, back: (targetId: string) => string) {
  return async (c: Context<AppEnv>): Promise<Response> => {
    const { kv, clock } = c.get("deps");
    const targetId = c.req.param("targetId") ?? "";
    try {
      const { jobId, runsOn } = await requestStorageCheck(kv, c.get("actor")!, targetId, check, clock());
      return redirectWithNotice(
        c,
        back(targetId),
        `Queued the ${STORAGE_CHECKS[check]} on ${runsOn} (job ${jobId}).`,
      );
    } catch (e) {
      if (e instanceof ConflictError) {
        return redirectWithNotice(c, back(targetId), `Not queued: ${e.message}`);
      }
      throw e;
    }
  };
}
