/** Backup > Replicas (every replication rule) and Backup > Scripts (the hook script library). */
import { type Context, Hono } from "hono";
import {
  Badge,
  Csrf,
  EmptyState,
  Field,
  formatTime,
  FormErrors,
  PageHeader,
  Select,
} from "../components/ui.tsx";
import { replicaCounts, ReplicaLastCell } from "../components/replication.tsx";
import { EngineFilter, listEngines } from "../domain/engines.ts";
import { ConflictError, type FieldErrors, NotFoundError, ValidationError } from "../domain/errors.ts";
import { listPolicies } from "../domain/policies.ts";
import {
  createReplica,
  KEK_SOURCE_LABELS,
  KEK_SOURCES,
  listReplicas,
  ReplicaCreateInput,
} from "../domain/replicas.ts";
import { listTargets, TARGET_TYPE_LABELS, TargetFilter } from "../domain/storage.ts";
import { can } from "../domain/rbac.ts";
import {
  createScript,
  deleteScript,
  INTERPRETER_LABELS,
  INTERPRETERS,
  listScripts,
  requireScript,
  ScriptCreateFields,
  scriptUsage,
} from "../domain/scripts.ts";
import { listOrgs } from "../domain/tenancy.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, readForm, str } from "./forms.ts";
import { redirectWithNotice, render } from "./render.tsx";

export const replicaScriptRoutes = new Hono<AppEnv>();

/**
 * A replica rule form (the Replicas page's and the policy page's) as the input of `ReplicaCreateInput`,
 * the schema they share with POST /api/v1/replicas. An unticked checkbox is false.
 */
export function replicaFormInput(form: Record<string, string | string[]>) {
  return {
    policyId: str(form, "policyId"),
    targetId: str(form, "targetId"),
    kekSource: str(form, "kekSource") || undefined,
    replicateAfterFull: str(form, "replicateAfterFull") === "on",
    replicateAfterIncremental: str(form, "replicateAfterIncremental") === "on",
    isOffsite: str(form, "isOffsite") === "on",
  };
}

type ReplicaFormValues = ReturnType<typeof replicaFormInput>;

/** Defaults of a new rule (the guide's: after full and after incremental, KEK from the account). */
const NEW_RULE: ReplicaFormValues = {
  policyId: "",
  targetId: "",
  kekSource: "account",
  replicateAfterFull: true,
  replicateAfterIncremental: true,
  isOffsite: false,
};

async function replicasPage(
  c: Context<AppEnv>,
  form: { values: ReplicaFormValues; errors?: FieldErrors; error?: string; status?: 409 | 422 } = {
    values: NEW_RULE,
  },
) {
  const { kv } = c.get("deps");
  const actor = c.get("actor")!;
  const [rows, policies, targets, engines] = await Promise.all([
    listReplicas(kv, actor),
    listPolicies(kv, actor),
    listTargets(kv, actor, TargetFilter.parse({ limit: 200 })),
    listEngines(kv, actor, EngineFilter.parse({ limit: 200 })),
  ]);
  const manageable = policies.filter((p) =>
    can(actor, "backup.manage", { accountId: p.accountId, orgId: p.orgId })
  );
  const besName = new Map(engines.values.map((e) => [e.id, e.name]));
  const { values, errors, error } = form;
  return render(
    c,
    "Replicas",
    (
      <>
        <PageHeader
          title="Replicas"
          subtitle="Replication rules copy a policy's backups to secondary targets (3-2-1). Add them here or from a policy's page."
        />
        {rows.length === 0
          ? (
            <EmptyState title="No replication rules yet">
              Add a rule below, or from a policy's Replication section.
            </EmptyState>
          )
          : (
            <div class="table-wrap" tabIndex={0}>
              <table class="table">
                <thead>
                  <tr>
                    <th>Policy</th>
                    <th>Secondary target</th>
                    <th>BES</th>
                    <th>KEK source</th>
                    <th>After full</th>
                    <th>After incremental</th>
                    <th>Offsite</th>
                    <th>Points</th>
                    <th>Last copy / failure</th>
                    <th>Created</th>
                  </tr>
                </thead>
                <tbody>
                  {rows.map((r) => (
                    <tr key={r.id} data-testid="replica-row">
                      <td>
                        <a href={`/backup/policies/${r.policyId}#replicas`}>{r.policyName}</a>
                      </td>
                      <td>
                        {r.targetName ?? "—"}{" "}
                        {r.targetTypeLabel && <span class="muted">({r.targetTypeLabel})</span>}
                      </td>
                      <td>{r.targetBesName ?? "—"}</td>
                      <td>{KEK_SOURCE_LABELS[r.kekSource]}</td>
                      <td>{r.replicateAfterFull ? "yes" : "no"}</td>
                      <td>{r.replicateAfterIncremental ? "yes" : "no"}</td>
                      <td>{r.isOffsite ? <Badge tone="info">offsite</Badge> : "—"}</td>
                      <td class="nowrap" data-testid="replica-counts">{replicaCounts(r.stats)}</td>
                      <td>
                        <ReplicaLastCell stats={r.stats} />
                      </td>
                      <td class="nowrap">{formatTime(r.createdAt)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        {manageable.length > 0 && (
          <section class="panel" id="new-replica">
            <h2>Add a replica rule</h2>
            <form method="post" action="/backup/replicas" class="form">
              <Csrf token={c.get("csrfToken")} />
              <FormErrors message={error} />
              <Select
                name="policyId"
                label="Policy"
                value={values.policyId}
                errors={errors}
                options={[
                  { value: "", label: "Choose a policy…" },
                  ...manageable.map((p) => ({ value: p.id, label: p.name })),
                ]}
              />
              <Select
                name="targetId"
                label="Secondary storage target (any BES of the account)"
                value={values.targetId}
                errors={errors}
                options={[
                  { value: "", label: "Replicate to…" },
                  ...targets.values.map((t) => ({
                    value: t.id,
                    label: `${t.name} (${TARGET_TYPE_LABELS[t.type]}, BES ${
                      besName.get(t.besId) ?? t.besId
                    })`,
                  })),
                ]}
              />
              <Select
                name="kekSource"
                label="KEK source"
                value={values.kekSource}
                errors={errors}
                options={KEK_SOURCES.map((k) => ({ value: k, label: KEK_SOURCE_LABELS[k] }))}
              />
              <fieldset class={errors?.replicateAfterFull ? "field field--error" : "field"}>
                <legend>When</legend>
                <label class="choice">
                  <input
                    type="checkbox"
                    name="replicateAfterFull"
                    value="on"
                    checked={values.replicateAfterFull}
                  />{" "}
                  Replicate after full backups
                </label>
                <label class="choice">
                  <input
                    type="checkbox"
                    name="replicateAfterIncremental"
                    value="on"
                    checked={values.replicateAfterIncremental}
                  />{" "}
                  Replicate after incremental backups
                </label>
                {errors?.replicateAfterFull && <p class="field-error">{errors.replicateAfterFull}</p>}
              </fieldset>
              <label class="choice">
                <input type="checkbox" name="isOffsite" value="on" checked={values.isOffsite} />{" "}
                Offsite copy (counts for the 3-2-1 rule's offsite copy)
              </label>
              <div class="form-actions">
                <button type="submit" class="btn btn--primary">Add replica rule</button>
              </div>
            </form>
          </section>
        )}
      </>
    ),
    form.status ?? (errors || error ? 422 : 200),
  );
}

replicaScriptRoutes.get("/replicas", requires("backup.view"), (c) => replicasPage(c));

replicaScriptRoutes.post("/replicas", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const values = replicaFormInput(await readForm(c));
  // The same schema as the policy page's form and POST /api/v1/replicas.
  const parsed = ReplicaCreateInput.safeParse(values);
  if (!parsed.success) return await replicasPage(c, { values, errors: fieldErrors(parsed.error) });
  try {
    const rule = await createReplica(kv, c.get("actor")!, parsed.data, clock());
    return redirectWithNotice(c, "/backup/replicas", `Replica rule added (rule ${rule.id}).`);
  } catch (e) {
    if (e instanceof NotFoundError) {
      return await replicasPage(c, { values, errors: { policyId: "Choose a policy you can manage" } });
    }
    if (!(e instanceof ValidationError) && !(e instanceof ConflictError)) throw e;
    // As the API: 422 for invalid fields, 409 for a conflict (a BES being deleted).
    return await replicasPage(c, {
      values,
      errors: e instanceof ValidationError ? e.fields : undefined,
      error: e.message,
      status: e instanceof ConflictError ? 409 : 422,
    });
  }
});

async function scriptsPage(
  c: Context<AppEnv>,
  values: Record<string, string> = {},
  errors?: FieldErrors,
  error?: string,
) {
  const { kv } = c.get("deps");
  const actor = c.get("actor")!;
  const q = (c.req.query("q") ?? "").slice(0, 100);
  const [scripts, orgs] = await Promise.all([
    listScripts(kv, actor, { q }),
    listOrgs(kv, actor, actor.accountId!),
  ]);
  const orgName = new Map(orgs.map((o) => [o.id, o.name]));
  return render(
    c,
    "Scripts",
    (
      <>
        <PageHeader title="Scripts" subtitle="The library of custom scripts that app hooks can run." />
        <form method="get" class="filters">
          <input type="search" name="q" value={q} placeholder="Search name" aria-label="Search" />
          <button type="submit" class="btn">Search</button>
        </form>
        {scripts.length === 0
          ? <EmptyState title={q ? "No scripts match" : "No scripts yet"} />
          : (
            <div class="table-wrap" tabIndex={0}>
              <table class="table">
                <thead>
                  <tr>
                    <th>Name</th>
                    <th>Interpreter</th>
                    <th>Organization</th>
                    <th>Lines</th>
                    <th>Updated</th>
                    <th>Action</th>
                  </tr>
                </thead>
                <tbody>
                  {scripts.map((s) => (
                    <tr key={s.id}>
                      <td>
                        <details>
                          <summary>{s.name}</summary>
                          <pre>{s.body}</pre>
                        </details>
                      </td>
                      <td>{INTERPRETER_LABELS[s.interpreter]}</td>
                      <td>{s.orgId ? orgName.get(s.orgId) ?? "—" : "Account"}</td>
                      <td>{s.body.split("\n").length}</td>
                      <td class="nowrap">{formatTime(s.updatedAt)}</td>
                      <td>
                        {can(actor, "backup.manage", { accountId: s.accountId, orgId: s.orgId }) && (
                          <a class="btn btn--small btn--danger" href={`/backup/scripts/${s.id}/delete`}>
                            Delete…
                          </a>
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        {can(actor, "backup.manage") && (
          <section class="panel">
            <h2>Add a script</h2>
            <form method="post" action="/backup/scripts" class="form">
              <Csrf token={c.get("csrfToken")} />
              <FormErrors message={error} />
              <Field name="name" label="Name" value={values.name} errors={errors} required />
              <Select
                name="orgId"
                label="Organization"
                value={values.orgId}
                errors={errors}
                options={[
                  ...(actor.orgScope === "all" ? [{ value: "", label: "Account (all organizations)" }] : []),
                  ...orgs.map((o) => ({ value: o.id, label: o.name })),
                ]}
              />
              <Select
                name="interpreter"
                label="Interpreter"
                value={values.interpreter ?? "bash"}
                errors={errors}
                options={INTERPRETERS.map((i) => ({ value: i, label: INTERPRETER_LABELS[i] }))}
              />
              <div class={errors?.body ? "field field--error" : "field"}>
                <label for="f-body">Script</label>
                <textarea id="f-body" name="body">{values.body ?? ""}</textarea>
                {errors?.body && <p class="field-error">{errors.body}</p>}
              </div>
              <button type="submit" class="btn btn--primary">Add script</button>
            </form>
          </section>
        )}
      </>
    ),
    errors || error ? 422 : 200,
  );
}

replicaScriptRoutes.get("/scripts", requires("backup.view"), (c) => scriptsPage(c));

replicaScriptRoutes.post("/scripts", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const form = await readForm(c);
  const values = {
    name: str(form, "name"),
    orgId: str(form, "orgId"),
    interpreter: str(form, "interpreter"),
    body: str(form, "body"),
  };
  const parsed = ScriptCreateFields.safeParse(values); // the schema of POST /api/v1/scripts
  if (!parsed.success) return await scriptsPage(c, values, fieldErrors(parsed.error));
  try {
    const s = await createScript(kv, c.get("actor")!, parsed.data, clock());
    return redirectWithNotice(c, "/backup/scripts", `Script ${s.name} added.`);
  } catch (e) {
    if (!(e instanceof ValidationError) && !(e instanceof ConflictError)) throw e;
    return await scriptsPage(c, values, e instanceof ValidationError ? e.fields : undefined, e.message);
  }
});

replicaScriptRoutes.get("/scripts/:scriptId/delete", requires("backup.manage"), async (c) => {
  const { kv } = c.get("deps");
  const script = await requireScript(kv, c.get("actor")!, c.req.param("scriptId"));
  const usage = await scriptUsage(kv, script.id);
  return render(
    c,
    "Delete script",
    (
      <>
        <PageHeader title={`Delete ${script.name}?`} />
        {usage.policyNames.length
          ? (
            <p class="form-error">
              Used by hooks of {usage.policyNames.join(", ")}: remove those hooks first.
            </p>
          )
          : (
            <form method="post" action={`/backup/scripts/${script.id}/delete`} class="form">
              <Csrf token={c.get("csrfToken")} />
              <div class="form-actions">
                <button type="submit" class="btn btn--danger">Delete script</button>
                <a class="btn btn--ghost" href="/backup/scripts">Cancel</a>
              </div>
            </form>
          )}
      </>
    ),
  );
});

replicaScriptRoutes.post("/scripts/:scriptId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const script = await requireScript(kv, actor, c.req.param("scriptId"));
  try {
    await deleteScript(kv, actor, script.id, clock());
  } catch (e) {
    if (!(e instanceof ConflictError)) throw e;
    return redirectWithNotice(c, "/backup/scripts", e.message);
  }
  return redirectWithNotice(c, "/backup/scripts", `Deleted script ${script.name}.`);
});
