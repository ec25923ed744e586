/** Admin > Users: list, create, edit (role, scope, disabled), reset password, delete. */
import type { Context } from "hono";
import { Hono } from "hono";
import { z } from "zod";
import { Island } from "../components/Island.tsx";
import {
  Badge,
  Csrf,
  Field,
  FormActions,
  formatTime,
  FormErrors,
  PageHeader,
  Select,
} from "../components/ui.tsx";
import type { FieldErrors } from "../domain/errors.ts";
import { listOrgs } from "../domain/tenancy.ts";
import { type Org, ROLE_LABELS, ROLES, type User } from "../domain/types.ts";
import {
  createUser,
  deleteUser,
  requireUser,
  resetPassword,
  updateUser,
  UserCreateInput,
  UserUpdateInput,
} from "../domain/users.ts";
import OrgScopePicker from "../islands/OrgScopePicker.tsx";
import { getUserList } from "../domain/read_models/admin.ts";
import { requires } from "./access.ts";
import { FilteredList, listQuery } from "./list_page.tsx";
import { compareAsText, offsetPage } from "../domain/list_filters.ts";
import type { AppEnv } from "./env.ts";
import { type FormFields, list, readForm, saveForm, str } from "./forms.ts";
import { confirmPage, noStore, redirectWithNotice, render } from "./render.tsx";

export const adminUserRoutes = new Hono<AppEnv>();

const ListQuery = z.object({
  q: z.string().trim().max(200).catch(""),
  role: z.enum(["", ...ROLES]).catch(""),
  sort: z.enum(["email", "-email", "name", "-name", "role", "-role", "createdAt", "-createdAt"]).catch(
    "email",
  ),
  offset: z.coerce.number().int().min(0).catch(0),
  limit: z.coerce.number().int().min(1).max(200).catch(50),
});

function scopeLabel(user: User, orgs: Map<string, Org>) {
  if (user.orgScope === "all") return "All organizations";
  return user.orgScope.map((id) => orgs.get(id)?.name ?? "unknown").join(", ");
}

adminUserRoutes.get("/", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const list = listQuery(ListQuery, c.req.query(), ["role"]);
  const query = list.filter;
  const { users, orgs: orgList } = await getUserList(kv, actor, {}, clock());
  const orgs = new Map(orgList.map((o) => [o.id, o]));
  const needle = query.q.toLowerCase();
  const filtered = users.filter((u) =>
    (!needle || u.email.includes(needle) || u.name.toLowerCase().includes(needle)) &&
    (!query.role || u.role === query.role)
  );
  const { values: pageRows, total } = offsetPage(filtered, query, compareAsText);
  return render(
    c,
    "Users",
    (
      <>
        <PageHeader
          title="Users"
          subtitle="People who can sign in, their role and which organizations they see."
          actions={<a class="btn btn--primary" href="/admin/users/new">Add user</a>}
        />
        <FilteredList
          list={list}
          path="/admin/users"
          searchPlaceholder="Search email or name"
          clear={false}
          filters={
            <select name="role" aria-label="Role">
              <option value="">All roles</option>
              {ROLES.map((r) => (
                <option key={r} value={r} selected={query.role === r}>{ROLE_LABELS[r]}</option>
              ))}
            </select>
          }
          empty={{
            title: users.length ? "No users match these filters" : "No users yet",
            children: users.length
              ? <a href="/admin/users">Clear filters</a>
              : <a href="/admin/users/new">Add the first user</a>,
          }}
          columns={[
            { label: "Email", sort: "email" },
            { label: "Name", sort: "name" },
            { label: "Role", sort: "role" },
            { label: "Organization scope" },
            { label: "Status" },
            { label: "Created", sort: "createdAt" },
          ]}
          rows={pageRows.map((u) => (
            <tr key={u.id}>
              <td data-label="Email">
                <a href={`/admin/users/${u.id}`}>{u.email}</a>
              </td>
              <td data-label="Name">{u.name}</td>
              <td data-label="Role">{ROLE_LABELS[u.role]}</td>
              <td data-label="Organization scope">{scopeLabel(u, orgs)}</td>
              <td class="cell-status" data-label="Status">
                {u.disabled ? <Badge tone="muted">Disabled</Badge> : <Badge tone="ok">Active</Badge>}
              </td>
              <td data-label="Created" class="nowrap">{formatTime(u.createdAt)}</td>
            </tr>
          ))}
          count={pageRows.length}
          total={total}
        />
      </>
    ),
  );
});

interface FormValues {
  email: string;
  name: string;
  role: string;
  scopeMode: "all" | "selected";
  orgIds: string[];
  disabled?: boolean;
}

function UserForm(props: {
  csrf: string;
  action: string;
  values: FormValues;
  orgs: Org[];
  errors?: FieldErrors;
  error?: string;
  isNew: boolean;
}) {
  const v = props.values;
  return (
    <form method="post" action={props.action} class="form">
      <Csrf token={props.csrf} />
      <FormErrors message={props.error} />
      {props.isNew
        ? <Field name="email" label="Email" type="email" value={v.email} errors={props.errors} required />
        : (
          <div class="field">
            <label>Email</label>
            <p class="readonly">{v.email}</p>
          </div>
        )}
      <Field name="name" label="Name" value={v.name} errors={props.errors} required />
      <Select
        name="role"
        label="Role"
        value={v.role}
        errors={props.errors}
        options={ROLES.map((r) => ({ value: r, label: ROLE_LABELS[r] }))}
      />
      <Island
        name="OrgScopePicker"
        component={OrgScopePicker}
        props={{
          orgs: props.orgs.map((o) => ({ id: o.id, name: o.name })),
          mode: v.scopeMode,
          selected: v.orgIds,
          error: props.errors?.orgScope,
        }}
      />
      {props.isNew && (
        <Field
          name="password"
          label="Initial password"
          type="password"
          errors={props.errors}
          required
          hint="At least 12 characters. Share it with the user through a safe channel."
          autocomplete="new-password"
        />
      )}
      {!props.isNew && (
        <label class="choice">
          <input type="checkbox" name="disabled" value="on" checked={v.disabled} /> Disabled (cannot sign in)
        </label>
      )}
      <FormActions submit={props.isNew ? "Create user" : "Save changes"} cancel="/admin/users" />
    </form>
  );
}

function valuesFrom(form: FormFields): FormValues {
  return {
    email: str(form, "email"),
    name: str(form, "name"),
    role: str(form, "role"),
    scopeMode: str(form, "scopeMode") === "selected" ? "selected" : "all",
    orgIds: list(form, "orgIds"),
    disabled: str(form, "disabled") === "on",
  };
}

async function orgsFor(c: Context<AppEnv>) {
  const actor = c.get("actor")!;
  return await listOrgs(c.get("deps").kv, actor, actor.accountId!);
}

/** The Add user page; 422 when it shows a refused form. */
async function newUserPage(c: Context<AppEnv>, values: FormValues, errors?: FieldErrors, error?: string) {
  return render(
    c,
    "Add user",
    (
      <>
        <PageHeader title="Add user" />
        <UserForm
          csrf={c.get("csrfToken")}
          action="/admin/users/new"
          isNew
          orgs={await orgsFor(c)}
          values={values}
          errors={errors}
          error={error}
        />
      </>
    ),
    errors || error ? 422 : 200,
  );
}

adminUserRoutes.get("/new", requires("admin"), async (c) => {
  return await newUserPage(c, { email: "", name: "", role: "viewer", scopeMode: "all", orgIds: [] });
});

adminUserRoutes.post("/new", requires("admin"), async (c) => {
  const { kv, clock, config } = c.get("deps");
  const actor = c.get("actor")!;
  const form = await readForm(c);
  const values = valuesFrom(form);
  const input = {
    email: values.email,
    name: values.name,
    role: values.role,
    orgScope: values.scopeMode === "all" ? "all" : values.orgIds,
    password: str(form, "password"),
  };
  return await saveForm(
    UserCreateInput.safeParse(input),
    async (data) => {
      const user = await createUser(
        kv,
        actor,
        { ...data, accountId: actor.accountId! },
        clock(),
        config.passwordHashing,
      );
      return redirectWithNotice(c, `/admin/users/${user.id}`, `User ${user.email} created.`);
    },
    (errors, error) => newUserPage(c, values, errors, error),
    { validationOnly: true },
  );
});

function EditPage(props: {
  csrf: string;
  user: User;
  orgs: Org[];
  values: FormValues;
  errors?: FieldErrors;
  error?: string;
}) {
  const { user } = props;
  return (
    <>
      <PageHeader title={user.name} subtitle={<>{user.email} · created {formatTime(user.createdAt)}</>} />
      <UserForm
        csrf={props.csrf}
        action={`/admin/users/${user.id}`}
        isNew={false}
        orgs={props.orgs}
        values={props.values}
        errors={props.errors}
        error={props.error}
      />
      <section class="panel">
        <h2>Password</h2>
        <p>Generates a new password, shows it once, and signs the user out everywhere.</p>
        <form method="post" action={`/admin/users/${user.id}/password`}>
          <Csrf token={props.csrf} />
          <button type="submit" class="btn">Reset password</button>
        </form>
      </section>
      <section class="panel panel--danger">
        <h2>Delete user</h2>
        <p>Removes the user, their sessions and their API tokens. Audit entries stay.</p>
        <a class="btn btn--danger" href={`/admin/users/${user.id}/delete`}>Delete user…</a>
      </section>
    </>
  );
}

function userValues(user: User): FormValues {
  return {
    email: user.email,
    name: user.name,
    role: user.role,
    scopeMode: user.orgScope === "all" ? "all" : "selected",
    orgIds: user.orgScope === "all" ? [] : user.orgScope,
    disabled: user.disabled,
  };
}

adminUserRoutes.get("/:userId", requires("admin"), async (c) => {
  const user = await requireUser(c.get("deps").kv, c.get("actor")!, c.req.param("userId"));
  return render(
    c,
    user.email,
    (
      <EditPage csrf={c.get("csrfToken")} user={user} orgs={await orgsFor(c)} values={userValues(user)} />
    ),
  );
});

adminUserRoutes.post("/:userId", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const user = await requireUser(kv, actor, c.req.param("userId"));
  const form = await readForm(c);
  const values = { ...valuesFrom(form), email: user.email };
  const parsed = UserUpdateInput.safeParse({
    name: values.name,
    role: values.role,
    orgScope: values.scopeMode === "all" ? "all" : values.orgIds,
    disabled: values.disabled,
  });
  return await saveForm(
    parsed,
    async (data) => {
      await updateUser(kv, actor, user.id, data, clock());
      return redirectWithNotice(c, `/admin/users/${user.id}`, `Saved ${user.email}.`);
    },
    async (errors, error) =>
      render(
        c,
        user.email,
        (
          <EditPage
            csrf={c.get("csrfToken")}
            user={user}
            orgs={await orgsFor(c)}
            values={values}
            errors={errors}
            error={error}
          />
        ),
        422,
      ),
    { validationOnly: true },
  );
});

adminUserRoutes.post("/:userId/password", requires("admin"), async (c) => {
  const { kv, clock, config } = c.get("deps");
  const { user, password } = await resetPassword(
    kv,
    c.get("actor")!,
    c.req.param("userId"),
    {},
    clock(),
    config.passwordHashing,
  );
  noStore(c);
  return render(
    c,
    "Password reset",
    (
      <>
        <PageHeader title="Password reset" subtitle={user.email} />
        <p>
          This password is shown once. Give it to the user through a safe channel; they are signed out
          everywhere.
        </p>
        <div class="secret-box">
          <code class="secret" data-testid="secret">{password}</code>
        </div>
        <p>
          <a href={`/admin/users/${user.id}`}>Back to the user</a>
        </p>
      </>
    ),
  );
});

adminUserRoutes.get("/:userId/delete", requires("admin"), async (c) => {
  const user = await requireUser(c.get("deps").kv, c.get("actor")!, c.req.param("userId"));
  return confirmPage(c, {
    title: "Delete user",
    question: `Delete ${user.email}?`,
    explain: <p>This removes the user, signs them out, and revokes their API tokens. It cannot be undone.</p>,
    action: `/admin/users/${user.id}/delete`,
    cancel: `/admin/users/${user.id}`,
    label: "Delete user",
  });
});

adminUserRoutes.post("/:userId/delete", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const user = await requireUser(kv, actor, c.req.param("userId"));
  await deleteUser(kv, actor, user.id, clock());
  return redirectWithNotice(c, "/admin/users", `Deleted ${user.email}.`);
});
