/** Backup > Replicas: every replication rule, the add form, and removing a rule (also from the policy page). */
import { type Context, Hono } from "hono";
import {
  Checkbox,
  Csrf,
  EmptyState,
  FormActions,
  formatTime,
  FormErrors,
  PageHeader,
  Select,
} from "../components/ui.tsx";
import { ReplicaRuleCells, ReplicaRuleHeads } from "../components/replication.tsx";
import { ConflictError, type FieldErrors, NotFoundError, ValidationError } from "../domain/errors.ts";
import { createReplica, KEK_SOURCE_LABELS, KEK_SOURCES, ReplicaCreateInput } from "../domain/replicas.ts";
import { TARGET_TYPE_LABELS } from "../domain/storage.ts";
import { deleteReplica, requireReplica } from "../domain/replicas.ts";
import { getReplicasPage } from "../domain/read_models/backup_pages.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, type FormFields, readForm, str } from "./forms.ts";
import { redirectWithNotice, render } from "./render.tsx";

export const replicaRoutes = new Hono<AppEnv>();

/**
 * A replica rule form (the Replicas page's and the policy page's) as the input of `ReplicaCreateInput`,
 * the schema they share with POST /api/v1/replicas. An unticked checkbox is false.
 */
export function replicaFormInput(form: FormFields) {
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
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { rows, targets, manageable, besName } = await getReplicasPage(kv, actor, {}, clock());
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
                    <ReplicaRuleHeads kek="KEK source" />
                    <th>Created</th>
                  </tr>
                </thead>
                <tbody>
                  {rows.map((r) => (
                    <tr key={r.id} data-testid="replica-row">
                      <td>
                        <a href={`/backup/policies/${r.policyId}#replicas`}>{r.policyName}</a>
                      </td>
                      <ReplicaRuleCells rule={r} />
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
                blank="Choose a policy…"
                options={manageable.map((p) => ({ value: p.id, label: p.name }))}
              />
              <Select
                name="targetId"
                label="Secondary storage target (any BES of the account)"
                value={values.targetId}
                errors={errors}
                blank="Replicate to…"
                options={targets.values.map((t) => ({
                  value: t.id,
                  label: `${t.name} (${TARGET_TYPE_LABELS[t.type]}, BES ${besName.get(t.besId) ?? t.besId})`,
                }))}
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
                <Checkbox
                  name="replicateAfterFull"
                  checked={values.replicateAfterFull}
                  label="Replicate after full backups"
                />
                <Checkbox
                  name="replicateAfterIncremental"
                  checked={values.replicateAfterIncremental}
                  label="Replicate after incremental backups"
                />
                {errors?.replicateAfterFull && <p class="field-error">{errors.replicateAfterFull}</p>}
              </fieldset>
              <label class="choice">
                <input type="checkbox" name="isOffsite" value="on" checked={values.isOffsite} />{" "}
                Offsite copy (counts for the 3-2-1 rule's offsite copy)
              </label>
              <FormActions submit="Add replica rule" />
            </form>
          </section>
        )}
      </>
    ),
    form.status ?? (errors || error ? 422 : 200),
  );
}

replicaRoutes.get("/", requires("backup.view"), (c) => replicasPage(c));

replicaRoutes.post("/", requires("backup.manage"), async (c) => {
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

replicaRoutes.post("/:replicaId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const rule = await requireReplica(kv, actor, c.req.param("replicaId"));
  await deleteReplica(kv, actor, rule.id, clock());
  return redirectWithNotice(c, `/backup/policies/${rule.policyId}#replicas`, "Replica rule removed.");
});
