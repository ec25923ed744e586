/**
 * The policy page's Run now panel (guide, backup.manage "run-now") and its form POST: a kind, optional
 * hosts (none ticked = every active host), then a redirect back with what was started — or, refused, the
 * policy page again with the reason and the kind and hosts as submitted (an unticked form would mean
 * every active host).
 */
import type { Context } from "hono";
import { Csrf } from "../components/ui.tsx";
import { ConflictError, ValidationError } from "../domain/errors.ts";
import { type Policy, requirePolicy } from "../domain/policies.ts";
import type { RunNowData } from "../domain/read_models/policy_detail.ts";
import {
  RUN_NOW_KIND_LABELS,
  RUN_NOW_KINDS,
  RUN_NOW_MAX_HOSTS,
  RunNowInput,
  type RunNowRun,
  runPolicyNow,
} from "../domain/run_now.ts";
import type { AppEnv } from "./env.ts";
import { list, readForm, str } from "./forms.ts";
import { redirectWithNotice } from "./render.tsx";

/** A refused run now carried back to its form: what was submitted, why not, and the page's status. */
export interface RunNowRefusal {
  kind: string;
  hostIds: string[];
  error: string;
  status: 409 | 422;
}

/** The Run now panel: the form for backup.manage, why it cannot run when it cannot, a note otherwise. */
export function RunNowSection(
  props: {
    /** Null when the actor may not run the policy (getPolicyDetail reads nothing then). */
    data: RunNowData;
    policy: Policy;
    csrf: string;
    refused?: RunNowRefusal | null;
  },
) {
  const { data, policy, csrf, refused } = props;
  const ticked = new Set(refused?.hostIds ?? []);
  if (data === null) {
    return (
      <section class="panel" id="run-now">
        <h2>Run now</h2>
        <p class="muted" data-testid="run-now-denied">
          Running a policy outside its schedules needs the backup.manage permission, which your role does not
          have here.
        </p>
      </section>
    );
  }
  const { blockedReason, hosts, moreHosts } = data;
  return (
    <section class="panel" id="run-now">
      <h2>Run now</h2>
      {blockedReason && <p class="notice notice--warn" data-testid="run-now-blocked">{blockedReason}</p>}
      {refused && <p class="form-error" role="alert" data-testid="run-now-refused">{refused.error}</p>}
      <form
        method="post"
        action={`/backup/policies/${policy.id}/run`}
        class="form"
        data-testid="run-now-form"
      >
        <Csrf token={csrf} />
        <div class="field">
          <label for="run-now-kind">Kind</label>
          <select id="run-now-kind" name="kind">
            {RUN_NOW_KINDS.map((k) => (
              <option key={k} value={k} selected={refused?.kind === k}>{RUN_NOW_KIND_LABELS[k]}</option>
            ))}
          </select>
        </div>
        {hosts.length > 0 && (
          <fieldset class="field">
            <legend>Hosts (none ticked: all {moreHosts ? "" : `${hosts.length} `}active hosts)</legend>
            {hosts.map((h) => (
              <label class="choice" key={h.id}>
                <input type="checkbox" name="hostIds" value={h.id} checked={ticked.has(h.id)} /> {h.hostname}
                {h.status === "offline" ? " (agent offline)" : ""}
              </label>
            ))}
            {moreHosts && <p class="hint">More active hosts than shown; the first 200 are listed.</p>}
          </fieldset>
        )}
        <p class="hint">
          Starts the same jobs a schedule would (trigger “manual”): on every active host, or on up to{" "}
          {RUN_NOW_MAX_HOSTS}{" "}
          ticked hosts. A synthetic full runs on the BES, one per active host (the agents need not be online),
          and takes no host choice. A host with a run of this policy still pending or running is refused.
        </p>
        <div class="form-actions">
          <button
            type="submit"
            class="btn btn--primary"
            disabled={blockedReason !== null}
            title={blockedReason ?? undefined}
          >
            Run now
          </button>
        </div>
      </form>
    </section>
  );
}

/** What the notice says about the runs started. */
function startedNotice(created: RunNowRun[]): string {
  const kind = created[0].run.kind.replace("_", " ");
  if (!created[0].run.hostId) return `Started a ${kind} on the BES (run ${created[0].run.id}).`;
  const queued = created.filter((c) => c.run.jobId).length;
  const waiting = created.filter((c) => !c.run.jobId && c.run.status === "pending").length;
  const skipped = created.filter((c) => c.run.status === "skipped").length;
  const names = created.slice(0, 5).map((c) => c.hostname).join(", ") +
    (created.length > 5 ? ` and ${created.length - 5} more` : "");
  const parts = [`${queued} queued${created[0].run.kind === "synthetic_full" ? " on the BES" : ""}`];
  if (waiting) parts.push(`${waiting} waiting for an offline agent`);
  if (skipped) parts.push(`${skipped} skipped (agent offline)`);
  return `Started ${created.length} ${kind} run${created.length === 1 ? "" : "s"} on ${names}: ${
    parts.join(", ")
  }.`;
}

/**
 * The Run now form's POST (`POST /backup/policies/:policyId/run`, registered with the policy routes):
 * validated with the domain's schema; started, a redirect to the runs; refused (422 invalid, 409 a
 * conflict), `page` renders the policy page again with the refusal and what was submitted.
 */
export async function postRunNow(
  c: Context<AppEnv>,
  page: (c: Context<AppEnv>, policy: Policy, refused: RunNowRefusal) => Promise<Response>,
): Promise<Response> {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const policy = await requirePolicy(kv, actor, c.req.param("policyId")!);
  const form = await readForm(c);
  const kind = str(form, "kind");
  const hostIds = list(form, "hostIds");
  const refuse = (error: string, status: 409 | 422) => page(c, policy, { kind, hostIds, error, status });
  const parsed = RunNowInput.safeParse({ kind, hostIds: hostIds.length ? hostIds : undefined });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return await refuse(`Not run: ${String(issue.path[0] ?? "the form")} ${issue.message}`, 422);
  }
  try {
    const created = await runPolicyNow(kv, actor, policy.id, parsed.data, clock());
    return redirectWithNotice(c, `/backup/policies/${policy.id}#runs`, startedNotice(created));
  } catch (e) {
    // Refusals change nothing: nothing was started.
    if (e instanceof ValidationError) return await refuse(`Not run: ${e.message}`, 422);
    if (e instanceof ConflictError) return await refuse(`Not run: ${e.message}`, 409);
    throw e;
  }
}
