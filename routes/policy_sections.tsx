/**
 * The parts of a policy page below its settings: assigned hosts, app hooks (the 7th section of the
 * policy form), replication rules with the 3-2-1 badge; each renders its part of the policy read model
 * (domain/read_models/policy_detail.ts). And the POST routes that add to a policy: a host, a hook, a
 * replica rule (mounted at /backup/policies).
 */
import { HookOutputRow, runDuration, RunStatus } from "../components/runs.tsx";
import { Hono } from "hono";
import { Badge, Csrf, DataTable, formatBytes, formatTime, ShortId } from "../components/ui.tsx";
import type {
  PolicyHooks,
  PolicyHosts,
  PolicyReplicas,
  PolicyRetention,
  PolicyRuns,
} from "../domain/read_models/policy_detail.ts";
import { assignHosts, AssignHostsInput, ASSIGNMENT_STATES } from "../domain/assignments.ts";
import {
  createHook,
  HOOK_TEMPLATES,
  HOOK_TYPE_LABELS,
  HOOK_TYPES,
  HookFields,
  TEMPLATE_NAMES,
} from "../domain/hooks.ts";
import { type Policy, requirePolicy } from "../domain/policies.ts";
import { createReplica, KEK_SOURCE_LABELS, KEK_SOURCES, ReplicaCreateInput } from "../domain/replicas.ts";
import { ReplicaRuleCells, ReplicaRuleHeads, ReplicationTable } from "../components/replication.tsx";
import { replicaFormInput } from "./replicas.tsx";
import { MEDIA_LABELS } from "../domain/three_two_one.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, problem, readForm, str } from "./forms.ts";
import { redirectWithNotice } from "./render.tsx";
import { errorsOf, hookInput, refusedHook } from "./hooks.tsx";

/** The 3-2-1 badge: met, or what is missing. */
export function ThreeTwoOneBadge(props: { result: PolicyReplicas["threeTwoOne"] }) {
  const r = props.result;
  return (
    <span data-testid="badge-321" data-met={String(r.met)}>
      <Badge tone={r.met ? "ok" : "warn"}>3-2-1 {r.met ? "met" : "not met"}</Badge>{" "}
      <span class="hint">
        {r.copies} {r.copies === 1 ? "copy" : "copies"}, {r.mediaTypes.length}{" "}
        media ({r.mediaTypes.map((m) => MEDIA_LABELS[m]).join(", ")}), {r.offsite}{" "}
        offsite{r.met ? "" : ` — needs ${r.missing.join(", ")}`}
      </span>
    </span>
  );
}

/** Hosts assigned to the policy, with state and removal, and the assign form. */
export function HostsSection(props: { data: PolicyHosts; policy: Policy; csrf: string }) {
  const { policy, csrf } = props;
  const { manage, rows, assignable } = props.data;
  return (
    <section class="panel" id="hosts">
      <h2>Hosts ({rows.filter((r) => r.assignment.state !== "archived").length} assigned)</h2>
      {rows.length === 0
        ? <p class="muted">No host is assigned: this policy backs up nothing yet.</p>
        : (
          <div class="table-wrap" tabIndex={0}>
            <table class="table table--compact table--cards">
              <thead>
                <tr>
                  <th>Host</th>
                  <th>State</th>
                  <th>Since</th>
                  {manage && <th>Change</th>}
                </tr>
              </thead>
              <tbody>
                {rows.map(({ assignment, host }) => (
                  <tr key={assignment.id} data-testid="assignment-row">
                    <td data-label="Host">
                      <a href={`/backup/hosts/${host.id}`}>{host.hostname}</a>
                      {host.status === "decommissioned" && (
                        <>
                          {" "}
                          <span class="muted">(decommissioned)</span>
                        </>
                      )}
                    </td>
                    <td data-label="State">{assignment.state}</td>
                    <td data-label="Since">{formatTime(assignment.updatedAt)}</td>
                    {manage && (
                      <td data-label="Change">
                        <div class="actions-cell">
                          <form
                            method="post"
                            action={`/backup/assignments/${assignment.id}/state`}
                            class="inline-form"
                          >
                            <Csrf token={csrf} />
                            <select name="state" aria-label={`State of ${host.hostname}`}>
                              {ASSIGNMENT_STATES.map((s) => (
                                <option key={s} value={s} selected={s === assignment.state}>{s}</option>
                              ))}
                            </select>
                            <button type="submit" class="btn btn--small">Set</button>
                          </form>
                          <a
                            class="btn btn--small btn--danger"
                            href={`/backup/assignments/${assignment.id}/remove`}
                            aria-label={`Remove ${host.hostname} from this policy…`}
                          >
                            Remove…
                          </a>
                        </div>
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      {manage && (
        <form method="post" action={`/backup/policies/${policy.id}/assignments`} class="filters">
          <Csrf token={csrf} />
          <select name="hostId" aria-label="Host to assign">
            <option value="">Assign a host…</option>
            {assignable.map((h) => (
              <option key={h.id} value={h.id}>
                {h.hostname}{" "}
                ({h.ipAddress}){h.status === "decommissioned" ? " — decommissioned, reactivates" : ""}
              </option>
            ))}
          </select>
          <button type="submit" class="btn">Assign</button>
          <span class="hint">
            Removing a host keeps its restore points; archived assignments are reactivated when assigned
            again, and so is a decommissioned host.
          </span>
        </form>
      )}
    </section>
  );
}

/** "7. App Hooks": listed in execution order with type badge, template, script, timeout, fail-on-error. */
/** A hook form that was refused: what was typed, the field errors, and which form (null = "Add"). */
export interface HookDraft {
  hookId: string | null;
  values: HookFormValues;
  errors: Record<string, string>;
}

export interface HookFormValues {
  type: string;
  template: string;
  scriptName: string;
  timeoutSeconds: string;
  sequence: string;
  failOnError: boolean;
}

export function HooksSection(
  props: { data: PolicyHooks; policy: Policy; csrf: string; draft?: HookDraft },
) {
  const { policy, csrf, draft } = props;
  const { manage, hooks, scripts: usable } = props.data;
  const scriptName = (id: string | null) => (id ? usable.find((s) => s.id === id)?.name ?? "" : "");
  const valuesOf = (
    h: {
      type: string;
      template: string | null;
      scriptId: string | null;
      timeoutSeconds: number;
      sequence: number;
      failOnError: boolean;
    },
  ): HookFormValues => ({
    type: h.type,
    template: h.template ?? "",
    scriptName: scriptName(h.scriptId),
    timeoutSeconds: String(h.timeoutSeconds),
    sequence: String(h.sequence),
    failOnError: h.failOnError,
  });
  const blank: HookFormValues = {
    type: "pre_backup",
    template: "",
    scriptName: "",
    timeoutSeconds: "300",
    sequence: "100",
    failOnError: true,
  };
  const hookFields = (v: HookFormValues, errors?: Record<string, string>) => (
    <>
      <select name="type" aria-label="Hook type">
        {HOOK_TYPES.map((t) => (
          <option key={t} value={t} selected={v.type === t}>{HOOK_TYPE_LABELS[t]}</option>
        ))}
      </select>
      <select name="template" aria-label="Template">
        <option value="" selected={!v.template}>Custom script…</option>
        {TEMPLATE_NAMES.map((t) => (
          <option key={t} value={t} selected={v.template === t}>{HOOK_TEMPLATES[t].label}</option>
        ))}
      </select>
      <input
        name="scriptName"
        list={`scripts-${policy.id}`}
        placeholder="Search scripts (custom)"
        aria-label="Script"
        value={v.scriptName}
        aria-invalid={errors?.scriptId ? "true" : undefined}
      />
      <label class="inline">
        Timeout s{" "}
        <input
          name="timeoutSeconds"
          type="number"
          value={v.timeoutSeconds}
          class="num"
          aria-invalid={errors?.timeoutSeconds ? "true" : undefined}
        />
      </label>
      <label class="inline">
        Sequence{" "}
        <input
          name="sequence"
          type="number"
          value={v.sequence}
          class="num"
          aria-invalid={errors?.sequence ? "true" : undefined}
        />
      </label>
      <label class="inline">
        <input type="checkbox" name="failOnError" value="on" checked={v.failOnError} /> Fail on error
      </label>
      {errors && Object.keys(errors).length > 0 && (
        <p class="field-error" role="alert" data-testid="hook-errors">
          {Object.entries(errors).map(([k, m]) =>
            `${k === "scriptId" ? "Script" : k}: ${m}`
          ).join(" · ")}
        </p>
      )}
    </>
  );
  return (
    <details class="form-section" open id="hooks">
      <summary>7. App Hooks ({hooks.length})</summary>
      <div class="form-section-body">
        <datalist id={`scripts-${policy.id}`}>
          {usable.map((s) => <option key={s.id} value={s.name}>{s.interpreter}</option>)}
        </datalist>
        {hooks.length === 0
          ? <p class="muted">No hooks: backups are crash-consistent only.</p>
          : (
            <table class="table table--compact">
              <thead>
                <tr>
                  <th>Type</th>
                  <th>Template</th>
                  <th>Script</th>
                  <th>Timeout</th>
                  <th>Order</th>
                  <th>Fail on error</th>
                  {manage && <th>Action</th>}
                </tr>
              </thead>
              <tbody>
                {hooks.map((h) => (
                  <tr key={h.id} data-testid="hook-row">
                    <td>
                      <Badge tone="info">{HOOK_TYPE_LABELS[h.type]}</Badge>
                    </td>
                    <td>{h.templateLabel ?? "Custom script"}</td>
                    <td>{h.scriptName ?? "—"}</td>
                    <td>{h.timeoutSeconds} s</td>
                    <td>{h.sequence}</td>
                    <td>{h.failOnError ? "yes" : "no"}</td>
                    {manage && (
                      <td>
                        <details>
                          <summary class="btn btn--small">Edit</summary>
                          <form method="post" action={`/backup/hooks/${h.id}`} class="filters">
                            <Csrf token={csrf} />
                            {draft?.hookId === h.id
                              ? hookFields(draft.values, draft.errors)
                              : hookFields(valuesOf(h))}
                            <button type="submit" class="btn btn--small btn--primary">Save</button>
                          </form>
                        </details>
                        <a
                          class="btn btn--small btn--danger"
                          href={`/backup/hooks/${h.id}/delete`}
                          aria-label="Delete hook"
                        >
                          🗑
                        </a>
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        {manage && (
          <details open={draft !== undefined && draft.hookId === null}>
            <summary class="btn">Add Hook</summary>
            <form method="post" action={`/backup/policies/${policy.id}/hooks`} class="filters">
              <Csrf token={csrf} />
              {draft && draft.hookId === null ? hookFields(draft.values, draft.errors) : hookFields(blank)}
              <button type="submit" class="btn btn--primary">Add hook</button>
            </form>
            <p class="hint">
              Templates:{" "}
              {TEMPLATE_NAMES.map((t) => `${HOOK_TEMPLATES[t].label} (${HOOK_TEMPLATES[t].description})`)
                .join(" · ")}. Custom scripts come from the <a href="/backup/scripts">script library</a>.
            </p>
          </details>
        )}
      </div>
    </details>
  );
}

/**
 * Replication rules of the policy with the 3-2-1 badge, each rule's status (points replicated, pending
 * and failed, last copy and last failure), the newest replications per restore point, and an add form.
 */
export function ReplicasSection(props: { data: PolicyReplicas; policy: Policy; csrf: string }) {
  const { policy, csrf } = props;
  const { manage, rules, recent, candidates } = props.data;
  return (
    <section class="panel" id="replicas">
      <h2>Replication (3-2-1)</h2>
      <p>
        <ThreeTwoOneBadge result={props.data.threeTwoOne} />
      </p>
      {rules.length > 0 && (
        <table class="table table--compact">
          <thead>
            <tr>
              <ReplicaRuleHeads kek="KEK" />
              {manage && <th>Action</th>}
            </tr>
          </thead>
          <tbody>
            {rules.map((r) => (
              <tr key={r.id} data-testid="replica-row">
                <ReplicaRuleCells rule={r} />
                {manage && (
                  <td>
                    <form method="post" action={`/backup/replicas/${r.id}/delete`} class="inline-form">
                      <Csrf token={csrf} />
                      <button type="submit" class="btn btn--small btn--danger">Remove</button>
                    </form>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {recent.length > 0 && (
        <>
          <h3>Latest replications</h3>
          <ReplicationTable rows={recent} showPoint />
        </>
      )}
      {manage && candidates.length === 0 && (
        <p class="hint">
          No other storage target of this account is left to replicate to: add one under Backup &gt; Storage.
        </p>
      )}
      {manage && candidates.length > 0 && (
        <form method="post" action={`/backup/policies/${policy.id}/replicas`} class="filters">
          <Csrf token={csrf} />
          <select name="targetId" aria-label="Secondary storage target">
            <option value="">Replicate to…</option>
            {candidates.map((t) => <option key={t.id} value={t.id}>{t.name}</option>)}
          </select>
          <select name="kekSource" aria-label="KEK source">
            {KEK_SOURCES.map((k) => <option key={k} value={k}>{KEK_SOURCE_LABELS[k]}</option>)}
          </select>
          <label class="inline">
            <input type="checkbox" name="replicateAfterFull" value="on" checked /> after full
          </label>
          <label class="inline">
            <input type="checkbox" name="replicateAfterIncremental" value="on" checked /> after incremental
          </label>
          <label class="inline">
            <input type="checkbox" name="isOffsite" value="on" /> offsite copy
          </label>
          <button type="submit" class="btn">Add replica rule</button>
        </form>
      )}
    </section>
  );
}

// ---------------------------------------------------------------------------------------------------
// Changes under a policy (mounted at /backup/policies; each redirects back to the policy with a notice;
// bad input is reported the same way). Changes to one assignment, hook or replica rule are in
// routes/assignments.tsx, hooks.tsx and replicas.tsx.

export const policySectionRoutes = new Hono<AppEnv>();

policySectionRoutes.post("/:policyId/assignments", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const policy = await requirePolicy(kv, actor, c.req.param("policyId"));
  const form = await readForm(c);
  const back = `/backup/policies/${policy.id}#hosts`;
  // The same schema and domain function as POST /api/v1/policies/{id}/assignments, with one host.
  const parsed = AssignHostsInput.safeParse({ hostIds: [str(form, "hostId")] });
  if (!parsed.success) return redirectWithNotice(c, back, "Choose a host to assign.");
  try {
    const [result] = await assignHosts(kv, actor, policy.id, parsed.data, clock());
    if (!result.ok) return redirectWithNotice(c, back, `Not assigned: ${result.error.message}`);
    return redirectWithNotice(
      c,
      back,
      result.created ? "Host assigned." : "Host assigned again (its archived assignment was reactivated).",
    );
  } catch (e) {
    return redirectWithNotice(c, back, `Not assigned: ${problem(e)}`);
  }
});

policySectionRoutes.post("/:policyId/hooks", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const policy = await requirePolicy(kv, actor, c.req.param("policyId"));
  const { values, input, unknownScript } = await hookInput(c, policy.accountId, policy.orgId);
  const parsed = HookFields.safeParse(input);
  if (unknownScript) {
    return await refusedHook(c, policy, {
      hookId: null,
      values,
      errors: { scriptId: "No script of this organization has that name" },
    });
  }
  if (!parsed.success) {
    return await refusedHook(c, policy, { hookId: null, values, errors: fieldErrors(parsed.error) });
  }
  try {
    await createHook(kv, actor, { policyId: policy.id, ...parsed.data }, clock());
  } catch (e) {
    return await refusedHook(c, policy, { hookId: null, values, errors: errorsOf(e) });
  }
  return redirectWithNotice(c, `/backup/policies/${policy.id}/edit#hooks`, "Hook added.");
});

policySectionRoutes.post("/:policyId/replicas", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const policy = await requirePolicy(kv, actor, c.req.param("policyId"));
  const form = await readForm(c);
  const back = `/backup/policies/${policy.id}#replicas`;
  // The same schema as the Replicas page's form and POST /api/v1/replicas.
  const parsed = ReplicaCreateInput.safeParse({ ...replicaFormInput(form), policyId: policy.id });
  if (!parsed.success) {
    return redirectWithNotice(
      c,
      back,
      `Rule not added: ${Object.values(fieldErrors(parsed.error)).join("; ")}`,
    );
  }
  try {
    await createReplica(kv, actor, parsed.data, clock());
  } catch (e) {
    return redirectWithNotice(c, back, `Rule not added: ${problem(e)}`);
  }
  return redirectWithNotice(c, back, "Replica rule added.");
});

/**
 * The policy's recent runs, with Retry on the runs that may be retried. The error, and whether the run is
 * retryable, sit under the status so they stay in view.
 */
export function RunsSection(props: { data: PolicyRuns; csrf: string }) {
  const { csrf } = props;
  const { manage, runs, hostNames: hosts, latest } = props.data;
  return (
    <section class="panel" id="runs">
      <h2>Recent runs</h2>
      {runs.length === 0
        ? <p class="muted">No runs yet: the scheduler dispatches at the next scheduled time.</p>
        : (
          <div class="table-wrap" tabIndex={0}>
            <table class="table table--compact table--cards" data-run-table>
              <thead>
                <tr>
                  <th>Scheduled</th>
                  <th>Host</th>
                  <th>Kind</th>
                  <th>Status</th>
                  <th>Duration</th>
                  <th>Transferred / protected</th>
                  <th>Restore point</th>
                  {manage && <th>Action</th>}
                </tr>
              </thead>
              <tbody>
                {runs.flatMap((r) => [
                  <tr key={r.id} data-testid="run-row">
                    <td data-label="Scheduled">
                      <a href={`/backup/runs/${r.id}`} title="Run details" class="nowrap">
                        {formatTime(r.scheduledFor)}
                      </a>
                    </td>
                    <td data-label="Host">{r.hostId ? hosts.get(r.hostId) ?? "—" : "BES"}</td>
                    <td data-label="Kind">
                      {r.kind}
                      {r.trigger !== "schedule" ? ` (${r.trigger.replace("_", "-")})` : ""}
                    </td>
                    <td class="cell-status" data-label="Status">
                      <RunStatus
                        run={r}
                        label={r.status === "pending" && !r.jobId ? "waiting for agent" : undefined}
                      />
                      {r.retryable && <span class="sub">retryable</span>}
                    </td>
                    <td class="nowrap" data-label="Duration">{runDuration(r)}</td>
                    <td class="nowrap" data-label="Transferred / protected">
                      {formatBytes(r.bytesTransferred)}
                      <span class="sub">{formatBytes(r.protectedBytes)} protected</span>
                    </td>
                    <td data-label="Restore point">
                      {r.restorePointId ? <ShortId id={r.restorePointId} /> : "—"}
                    </td>
                    {manage && (
                      <td data-label="Action">
                        {latest.has(r.id) && r.retryable &&
                          (r.status === "failed" || r.status === "warning") && (
                          <form method="post" action={`/backup/runs/${r.id}/retry`} class="inline-form">
                            <Csrf token={csrf} />
                            <button type="submit" class="btn btn--small">Retry</button>
                          </form>
                        )}
                      </td>
                    )}
                  </tr>,
                  <HookOutputRow key={`${r.id}-hooks`} run={r} colSpan={manage ? 8 : 7} />,
                ])}
              </tbody>
            </table>
          </div>
        )}
    </section>
  );
}

/**
 * Retention preview: what the policy's retention (or the counts in the query, before an edit is saved)
 * keeps and expires for each protected object, with the bytes freed and the reason each point is kept.
 * A GET form, so it works without JavaScript; the same data is at GET /api/v1/policies/:id/retention-preview.
 */
export function RetentionSection(props: { data: PolicyRetention; policy: Policy }) {
  const { policy } = props;
  const { counts, proposed, error, objects, previews, hostNames } = props.data;
  return (
    <section class="panel" id="retention">
      <h2>Retention preview</h2>
      <form method="get" action={`/backup/policies/${policy.id}#retention`} class="filters">
        <label>
          Daily <input type="number" name="daily" min={1} max={365} value={String(counts.daily)} required />
        </label>
        <label>
          Weekly <input type="number" name="weekly" min={0} max={52} value={String(counts.weekly)} required />
        </label>
        <label>
          Monthly{" "}
          <input type="number" name="monthly" min={0} max={120} value={String(counts.monthly)} required />
        </label>
        <button type="submit" class="btn">Preview</button>
        {proposed && <a href={`/backup/policies/${policy.id}#retention`}>Back to the saved counts</a>}
      </form>
      {error && <p class="field-error" role="alert" data-testid="retention-error">{error}</p>}
      <p class="muted">
        {proposed
          ? `Proposed: ${counts.daily} daily · ${counts.weekly} weekly · ${counts.monthly} monthly (not saved; edit the policy to apply).`
          : `Saved: ${counts.daily} daily · ${counts.weekly} weekly · ${counts.monthly} monthly, applied hourly.`}
      </p>
      {objects.length === 0
        ? <p class="muted">No restore points yet: the preview fills in after the first backups.</p>
        : objects.map(([objectId, points]) => {
          const preview = previews[objectId];
          const expire = new Set(preview?.expire ?? []);
          const shown = [...points].sort((a, b) => b.completedAt.localeCompare(a.completedAt)).slice(0, 60);
          return (
            <details key={objectId} data-testid="retention-object" open={preview?.needsConfirmation}>
              <summary>
                <strong>
                  {objectId === "bes" ? "BES (synthetic fulls)" : hostNames.get(objectId) ?? objectId}
                </strong>{" "}
                — keep {preview?.keep.length ?? 0}, expire {preview?.expire.length ?? 0}, frees{" "}
                {formatBytes(preview?.bytesFreed ?? 0)}
                {preview?.needsConfirmation && <Badge tone="warn">needs confirmation</Badge>}
                {preview?.frozen && <Badge tone="bad">prune frozen</Badge>}
              </summary>
              {preview?.warning && <p class="field-error">{preview.warning}</p>}
              {preview?.frozen && (
                <p class="notice notice--warn" data-testid="retention-frozen">{preview.frozen}</p>
              )}
              <DataTable
                class="table table--compact table--cards"
                heads={["Completed", "Type", "Size", "Status", "Retention", "Why kept"]}
              >
                {shown.map((pt) => (
                  <tr key={pt.id} data-testid="retention-point">
                    <td data-label="Completed">{formatTime(pt.completedAt)}</td>
                    <td data-label="Type">{pt.type}</td>
                    <td class="nowrap" data-label="Size">{formatBytes(pt.sizeBytes)}</td>
                    <td data-label="Status">{pt.status}</td>
                    <td class="cell-status" data-label="Retention">
                      {pt.status === "expired"
                        ? <Badge tone="muted">already expired</Badge>
                        : expire.has(pt.id)
                        ? <Badge tone="bad">expire</Badge>
                        : <Badge tone="ok">keep</Badge>}
                    </td>
                    <td data-label="Why kept">{(preview?.reasons[pt.id] ?? []).join(", ") || "—"}</td>
                  </tr>
                ))}
              </DataTable>
              {points.length > shown.length && (
                <p class="muted">Showing the newest {shown.length} of {points.length} restore points.</p>
              )}
            </details>
          );
        })}
    </section>
  );
}
