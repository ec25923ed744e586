/** Admin > API tokens: a user's own tokens (admins see those of users in their scope). */
import { Hono } from "hono";
import { z } from "zod";
import { Island } from "../components/Island.tsx";
import {
  Badge,
  Csrf,
  DataTable,
  EmptyState,
  Field,
  formatTime,
  FormErrors,
  PageHeader,
  Pager,
} from "../components/ui.tsx";
import { ApiTokenInput, createApiToken, listApiTokens, revokeApiToken } from "../domain/api_tokens.ts";
import { type FieldErrors, ValidationError } from "../domain/errors.ts";
import type { Actor } from "../domain/rbac.ts";
import { PERMISSIONS } from "../domain/types.ts";
import CopySecret from "../islands/CopySecret.tsx";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, list, readForm, str } from "./forms.ts";
import { noStore, redirectWithNotice, render } from "./render.tsx";

export const adminTokenRoutes = new Hono<AppEnv>();

type TokenRow = Awaited<ReturnType<typeof listApiTokens>>[number];

function tokenStatus(t: TokenRow, now: Date) {
  if (t.revokedAt) return <Badge tone="muted">Revoked</Badge>;
  if (t.expiresAt && Date.parse(t.expiresAt) <= now.getTime()) return <Badge tone="warn">Expired</Badge>;
  return <Badge tone="ok">Active</Badge>;
}

function TokensPage(props: {
  csrf: string;
  actor: Actor;
  tokens: TokenRow[];
  now: Date;
  offset: number;
  values: { name: string; permissions: string[]; expiresInDays: string };
  errors?: FieldErrors;
  error?: string;
}) {
  const own = [...props.actor.permissions];
  const rows = props.tokens.slice(props.offset, props.offset + 50);
  return (
    <>
      <PageHeader
        title="API tokens"
        subtitle="Bearer tokens for automation against /api/v1. A token never has more permissions than its owner."
      />
      {rows.length === 0
        ? <EmptyState title="No API tokens yet">Create one below for scripts and monitoring.</EmptyState>
        : (
          <DataTable
            class="table"
            heads={["Name", "Owner", "Permissions", "Status", "Created", "Expires", "Last used", "Action"]}
          >
            {rows.map((t) => (
              <tr key={t.id}>
                <td>{t.name}</td>
                <td>{t.ownerEmail}</td>
                <td>{t.permissions.join(", ")}</td>
                <td>{tokenStatus(t, props.now)}</td>
                <td class="nowrap">{formatTime(t.createdAt)}</td>
                <td class="nowrap">{t.expiresAt ? formatTime(t.expiresAt) : "Never"}</td>
                <td class="nowrap">{formatTime(t.lastUsedAt)}</td>
                <td>
                  {!t.revokedAt && (
                    <form method="post" action={`/admin/tokens/${t.id}/revoke`}>
                      <Csrf token={props.csrf} />
                      <button type="submit" class="btn btn--small btn--danger">Revoke</button>
                    </form>
                  )}
                </td>
              </tr>
            ))}
          </DataTable>
        )}
      <Pager total={props.tokens.length} offset={props.offset} limit={50} query={{}} />
      <section class="panel">
        <h2>Create a token</h2>
        <form method="post" action="/admin/tokens" class="form">
          <Csrf token={props.csrf} />
          <FormErrors message={props.error} />
          <Field
            name="name"
            label="Name"
            value={props.values.name}
            errors={props.errors}
            required
            hint="What uses it, e.g. “monitoring”."
          />
          <fieldset class={props.errors?.permissions ? "field field--error" : "field"}>
            <legend>Permissions</legend>
            {PERMISSIONS.filter((p) => own.includes(p)).map((p) => (
              <label class="choice" key={p}>
                <input
                  type="checkbox"
                  name="permissions"
                  value={p}
                  checked={props.values.permissions.includes(p)}
                />{" "}
                {p}
                {p === "metrics" && (
                  <span class="muted">
                    {" "}— scrape /metrics (Prometheus); give a monitoring token only this
                  </span>
                )}
              </label>
            ))}
            {props.errors?.permissions && <p class="field-error">{props.errors.permissions}</p>}
          </fieldset>
          <Field
            name="expiresInDays"
            label="Expires after (days, 0 = never)"
            type="number"
            value={props.values.expiresInDays}
            errors={props.errors}
          />
          <button type="submit" class="btn btn--primary">Create token</button>
        </form>
      </section>
    </>
  );
}

const Offset = z.coerce.number().int().min(0).catch(0);

adminTokenRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  return render(
    c,
    "API tokens",
    (
      <TokensPage
        csrf={c.get("csrfToken")}
        actor={actor}
        tokens={await listApiTokens(kv, actor)}
        now={clock()}
        offset={Offset.parse(c.req.query("offset"))}
        values={{ name: "", permissions: ["backup.view"], expiresInDays: "90" }}
      />
    ),
  );
});

adminTokenRoutes.post("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const form = await readForm(c);
  const values = {
    name: str(form, "name"),
    permissions: list(form, "permissions"),
    expiresInDays: str(form, "expiresInDays") || "90",
  };
  const parsed = ApiTokenInput.safeParse(values);
  let errors: FieldErrors | undefined;
  let error: string | undefined;
  if (!parsed.success) errors = fieldErrors(parsed.error);
  else {
    try {
      const { token, secret } = await createApiToken(kv, actor, parsed.data, clock());
      noStore(c);
      return render(
        c,
        "Token created",
        (
          <>
            <PageHeader title={`Token “${token.name}” created`} />
            <p class="notice notice--warn">
              Copy the token now: it is shown only this once. Send it as{" "}
              <code>Authorization: Bearer &lt;token&gt;</code>.
            </p>
            <Island name="CopySecret" component={CopySecret} props={{ label: "API token", secret }} />
            <p>
              <a class="btn" href="/admin/tokens">Done</a>
            </p>
          </>
        ),
      );
    } catch (e) {
      if (!(e instanceof ValidationError)) throw e;
      errors = e.fields;
      error = e.message;
    }
  }
  return render(
    c,
    "API tokens",
    (
      <TokensPage
        csrf={c.get("csrfToken")}
        actor={actor}
        tokens={await listApiTokens(kv, actor)}
        now={clock()}
        offset={0}
        values={values}
        errors={errors}
        error={error}
      />
    ),
    422,
  );
});

adminTokenRoutes.post("/:tokenId/revoke", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const token = await revokeApiToken(kv, c.get("actor")!, c.req.param("tokenId"), clock());
  return redirectWithNotice(c, "/admin/tokens", `Revoked token “${token.name}”.`);
});
