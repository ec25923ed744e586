/** Backup > Scripts: the hook script library (list, add, delete). */
import { type Context, Hono } from "hono";
import {
  ConfirmForm,
  Csrf,
  DataTable,
  EmptyState,
  Field,
  formatTime,
  FormErrors,
  PageHeader,
  Select,
} from "../components/ui.tsx";
import { ConflictError, type FieldErrors, ValidationError } from "../domain/errors.ts";
import { can } from "../domain/rbac.ts";
import {
  createScript,
  deleteScript,
  INTERPRETER_LABELS,
  INTERPRETERS,
  requireScript,
  ScriptCreateFields,
} from "../domain/scripts.ts";
import { getScriptDelete, getScriptsPage } from "../domain/read_models/backup_pages.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, readForm, str } from "./forms.ts";
import { redirectWithNotice, render } from "./render.tsx";

export const scriptRoutes = new Hono<AppEnv>();

async function scriptsPage(
  c: Context<AppEnv>,
  values: Record<string, string> = {},
  errors?: FieldErrors,
  error?: string,
) {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const q = (c.req.query("q") ?? "").slice(0, 100);
  const { scripts, orgs, orgName } = await getScriptsPage(kv, actor, { q }, clock());
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
        {scripts.length === 0 ? <EmptyState title={q ? "No scripts match" : "No scripts yet"} /> : (
          <DataTable
            class="table"
            heads={["Name", "Interpreter", "Organization", "Lines", "Updated", "Action"]}
          >
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
          </DataTable>
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

scriptRoutes.get("/", requires("backup.view"), (c) => scriptsPage(c));

scriptRoutes.post("/", requires("backup.manage"), async (c) => {
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

scriptRoutes.get("/:scriptId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const script = await requireScript(kv, actor, c.req.param("scriptId"));
  const { usage } = await getScriptDelete(kv, actor, { script }, clock());
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
            <ConfirmForm
              action={`/backup/scripts/${script.id}/delete`}
              cancel="/backup/scripts"
              csrf={c.get("csrfToken")}
              label="Delete script"
            />
          )}
      </>
    ),
  );
});

scriptRoutes.post("/:scriptId/delete", requires("backup.manage"), async (c) => {
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
