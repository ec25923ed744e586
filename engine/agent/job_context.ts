/**
 * What every agent job needs (`AgentContext`) and the helpers jobs.ts and drill.ts share: the BES data
 * API and snapshot id of a job's payload, the worker's data, and a result's error list. A module of its
 * own so that drill.ts does not import jobs.ts, which dispatches to it (no import cycle).
 */
import type { ControlPlane, JobKeys, JobResultBody } from "./control.ts";
import { splitErrors } from "./error_list.ts";
import { AgentJobError } from "./failure.ts";
import type { Logger } from "./job_handle.ts";
import type { AgentState } from "./state.ts";
import type { PathError, WorkerData } from "./worker_protocol.ts";

/** What every job needs from the agent. */
export interface AgentContext {
  control: ControlPlane;
  dataDir: string;
  hostname: string;
  /** Backed up when a policy names no include paths. */
  defaultRoots: string[];
  state: AgentState;
  /** The VSS snapshot hook (`--snapshot-hook`), or null. */
  snapshotHook: string | null;
  progressIntervalMs: number;
  /** The local cache of trees and index (cache.ts), or null when it is off. */
  cache: { dir: string; maxBytes: number } | null;
  log: Logger;
}

/**
 * Adds `errors` to `result`: the first ones inline, the rest uploaded first as parts of the list "errors"
 * (error_list.ts), so the run shows every one. A part that cannot be uploaded ends the upload: the result
 * then names the parts that arrived and the total met (`totals.errors`), so a cut list says so.
 */
export async function withErrors(
  ctx: Pick<AgentContext, "control" | "log">,
  jobId: string,
  result: JobResultBody,
  errors: PathError[],
): Promise<JobResultBody> {
  const lists = splitErrors(errors);
  let kept = lists.inline.length;
  let sent = 0;
  for (const items of lists.parts) {
    try {
      await ctx.control.part(jobId, "errors", sent, items);
    } catch (e) {
      ctx.log("warn", `job ${jobId}: ${(e as Error).message}; the result names the ${kept} errors sent`);
      break;
    }
    kept += items.length;
    sent++;
  }
  return {
    ...result,
    errors: lists.inline,
    ...(sent > 0 ? { parts: { errors: sent } } : {}),
    ...(lists.total > kept ? { totals: { errors: lists.total } } : {}),
  };
}

/** The BES data API of an agent job's payload. */
export function dataApiOf(payload: Record<string, unknown>): { dataUrl: string; certificate: string | null } {
  const bes = payload.bes as { id?: string; dataUrl?: unknown; certificate?: unknown } | undefined;
  if (typeof bes?.dataUrl !== "string" || !bes.dataUrl) {
    throw new AgentJobError(
      "ENGINE_OFFLINE",
      `The BES ${
        bes?.id ?? "of this job"
      } has reported no data API address: it cannot store or serve data yet`,
      true,
    );
  }
  return { dataUrl: bes.dataUrl, certificate: typeof bes.certificate === "string" ? bes.certificate : null };
}

export function workerData(
  ctx: AgentContext,
  api: { dataUrl: string; certificate: string | null },
  keys: JobKeys,
): WorkerData {
  return {
    ...api,
    namespace: keys.namespace,
    dataKey: keys.dataKey.toBase64(),
    idKey: keys.idKey.toBase64(),
    cache: ctx.cache,
  };
}

export function snapshotIdOf(payload: Record<string, unknown>): string {
  const id = payload.engineRestorePointId;
  if (typeof id !== "string" || !/^[0-9a-f]{64}$/.test(id)) {
    throw new AgentJobError(
      "RESTORE_POINT_UNKNOWN",
      `The restore point ${String(payload.restorePointId ?? "")} was not made by this engine (its id ${
        String(id)
      } is not a snapshot id)`,
    );
  }
  return id;
}
