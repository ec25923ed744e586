/** Admin > Organizations: list, create (secret shown once), rename, rotate the registration secret. */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { redirectToApproval } from "./approvals.tsx";
import { type Context, Hono } from "hono";
import { z } from "zod";
import { Island } from "../components/Island.tsx";
import { startCommands } from "../components/getting_started.tsx";
import { Csrf, Field, FormActions, formatTime, FormErrors, PageHeader } from "../components/ui.tsx";
import type { FieldErrors } from "../domain/errors.ts";
import {
  createOrg,
  getAccount,
  OrgInput,
  renameOrg,
  requireOrg,
  rotateAccountSecret,
  rotateOrgSecret,
} from "../domain/tenancy.ts";
import type { Org } from "../domain/types.ts";
import CopySecret from "../islands/CopySecret.tsx";
import { getOrgList } from "../domain/read_models/admin.ts";
import { requires } from "./access.ts";
import { FilteredList, listQuery } from "./list_page.tsx";
import { compareAsText, sortBy } from "../domain/list_filters.ts";
import { RECOVERY_KEY_PATH } from "./admin_recovery_key.tsx";
import type { AppEnv } from "./env.ts";
import { readForm, saveForm, str } from "./forms.ts";
import { confirmPage, noStore, redirectWithNotice, render } from "./render.tsx";

export const adminOrgRoutes = new Hono<AppEnv>();

const ListQuery = z.object({
  q: z.string().trim().max(200).catch(""),
  sort: z.enum(["name", "-name", "createdAt", "-createdAt"]).catch("name"),
  offset: z.coerce.number().int().min(0).catch(0),
  limit: z.coerce.number().int().min(1).max(200).catch(50),
});

adminOrgRoutes.get("/", requires("admin"), async (c) => {
  const actor = c.get("actor")!;
  const list = listQuery(ListQuery, c.req.query(), []);
  const query = list.filter;
  const { kv, clock } = c.get("deps");
  const { orgs, account } = await getOrgList(kv, actor, {}, clock());
  const needle = query.q.toLowerCase();
  const rows = orgs.filter((o) => !needle || o.name.toLowerCase().includes(needle));
  sortBy(rows, query.sort, compareAsText);
  return render(
    c,
    "Organizations",
    (
      <>
        <PageHeader
          title="Organizations"
          subtitle="Each organization has a registration secret that its backup engines and agents enroll with."
          actions={actor.orgScope === "all" && (
            <a class="btn btn--primary" href="/admin/orgs/new">Add organization</a>
          )}
        />
        <FilteredList
          list={list}
          path="/admin/orgs"
          searchPlaceholder="Search name"
          clear={false}
          empty={{
            title: orgs.length ? "No organizations match" : "No organizations yet",
            children: orgs.length === 0 && actor.orgScope === "all" && (
              <a href="/admin/orgs/new">Create the first organization</a>
            ),
          }}
          columns={[
            { label: "Name", sort: "name" },
            { label: "Secret last rotated" },
            { label: "Created", sort: "createdAt" },
          ]}
          rows={rows.slice(query.offset, query.offset + query.limit).map((o) => (
            <tr key={o.id}>
              <td data-label="Name">
                <a href={`/admin/orgs/${o.id}`}>{o.name}</a>
              </td>
              <td data-label="Secret last rotated" class="nowrap">{formatTime(o.secretRotatedAt)}</td>
              <td data-label="Created" class="nowrap">{formatTime(o.createdAt)}</td>
            </tr>
          ))}
          count={rows.length}
          total={rows.length}
        />
        {actor.orgScope === "all" && <AccountSecretPanel issuedAt={account?.secretRotatedAt} />}
        {actor.orgScope === "all" && <RecoveryKeyPanel />}
      </>
    ),
  );
});

function RecoveryKeyPanel() {
  return (
    <section class="panel">
      <h2>Account recovery key</h2>
      <p>
        The key pair whose private half opens every repository of the account without the control plane.
      </p>
      <a class="btn" href={RECOVERY_KEY_PATH}>Account recovery key…</a>
    </section>
  );
}

function AccountSecretPanel(props: { issuedAt?: string }) {
  return (
    <section class="panel">
      <h2>Account registration secret</h2>
      <p>
        Engines registered with the account secret are{" "}
        <strong>account-scoped</strong>: they serve every organization, but cannot hold credentialed storage
        targets. {props.issuedAt
          ? <>Issued {formatTime(props.issuedAt)}; it is stored only as a hash.</>
          : "No account secret has been issued."}
      </p>
      <a class="btn" href="/admin/orgs/account-secret">
        {props.issuedAt ? "Rotate account secret…" : "Issue account secret…"}
      </a>
    </section>
  );
}

adminOrgRoutes.get("/account-secret", requires("admin"), async (c) => {
  const actor = c.get("actor")!;
  const account = await getAccount(c.get("deps").kv, actor.accountId!);
  return render(
    c,
    "Account secret",
    (
      <>
        <PageHeader
          title={account?.secretHash
            ? "Rotate the account registration secret?"
            : "Issue an account registration secret?"}
        />
        <p>
          {account?.secretHash
            ? "The current account secret stops working immediately; registered engines keep working."
            : "The secret is shown once. Engines that register with it are account-scoped."}
        </p>
        <form method="post" action="/admin/orgs/account-secret" class="form">
          <Csrf token={c.get("csrfToken")} />
          <div class="form-actions">
            <button type="submit" class="btn btn--danger">
              {account?.secretHash ? "Rotate" : "Issue"} secret
            </button>
            <a class="btn btn--ghost" href="/admin/orgs">Cancel</a>
          </div>
        </form>
      </>
    ),
  );
});

adminOrgRoutes.post("/account-secret", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const request = await requestIfFourEyes(
    kv,
    actor,
    { kind: "account_secret.rotate", input: { accountId: actor.accountId ?? "" } },
    clock(),
  );
  if (request) return redirectToApproval(c, request);
  const { secret } = await rotateAccountSecret(kv, actor, actor.accountId!, clock());
  noStore(c);
  return render(
    c,
    "Account secret",
    (
      <>
        <PageHeader title="Account registration secret" />
        <p class="notice notice--warn">
          Copy it now: it is shown only this once. Engines send it as{" "}
          <code>Authorization: Bearer &lt;secret&gt;</code> to <code>/api/bes/v1/register</code>.
        </p>
        <Island name="CopySecret" component={CopySecret} props={{ label: "Account secret", secret }} />
        <p>
          <a class="btn" href="/admin/orgs">Done</a>
        </p>
      </>
    ),
  );
});

function OrgForm(
  props: { csrf: string; action: string; name: string; errors?: FieldErrors; error?: string },
) {
  return (
    <form method="post" action={props.action} class="form">
      <Csrf token={props.csrf} />
      <FormErrors message={props.error} />
      <Field name="name" label="Name" value={props.name} errors={props.errors} required />
      <FormActions submit="Save" cancel="/admin/orgs" />
    </form>
  );
}

function SecretOnce(props: { org: Org; secret: string; rotated: boolean; baseUrl: string }) {
  const commands = startCommands(props.baseUrl, props.secret);
  return (
    <>
      <PageHeader
        title={props.rotated ? `New secret for ${props.org.name}` : `Organization ${props.org.name} created`}
      />
      <p class="notice notice--warn">
        Copy the registration secret now: it is shown only this once and cannot be retrieved later. Engines
        and agents send it as <code>Authorization: Bearer &lt;secret&gt;</code> when they register.
        {props.rotated && " The previous secret no longer works."}
      </p>
      <Island
        name="CopySecret"
        component={CopySecret}
        props={{ label: "Registration secret", secret: props.secret }}
      />
      <p>It goes into the commands that start a backup engine (BES) or an agent of {props.org.name}:</p>
      <pre class="command" data-testid="command-bes"><code>{commands.bes}</code></pre>
      <pre class="command" data-testid="command-agent"><code>{commands.agent}</code></pre>
      <p>
        <a class="btn" href={`/admin/orgs/${props.org.id}`}>Done</a>
      </p>
    </>
  );
}

/** The Add organization page; 422 when it shows a refused form. */
function newOrgPage(c: Context<AppEnv>, name: string, errors?: FieldErrors, error?: string) {
  return render(
    c,
    "Add organization",
    (
      <>
        <PageHeader title="Add organization" />
        <OrgForm
          csrf={c.get("csrfToken")}
          action="/admin/orgs/new"
          name={name}
          errors={errors}
          error={error}
        />
      </>
    ),
    errors || error ? 422 : 200,
  );
}

adminOrgRoutes.get("/new", requires("admin"), (c) => newOrgPage(c, ""));

adminOrgRoutes.post("/new", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const form = await readForm(c);
  return await saveForm(
    OrgInput.safeParse({ name: str(form, "name") }),
    async (data) => {
      const { org, secret } = await createOrg(kv, actor, { ...data, accountId: actor.accountId! }, clock());
      noStore(c);
      return render(
        c,
        "Organization created",
        <SecretOnce org={org} secret={secret} rotated={false} baseUrl={c.get("deps").config.baseUrl} />,
        200,
      );
    },
    (errors, error) => newOrgPage(c, str(form, "name"), errors, error),
    { validationOnly: true },
  );
});

function OrgPage(props: { csrf: string; org: Org; name: string; errors?: FieldErrors; error?: string }) {
  const { org } = props;
  return (
    <>
      <PageHeader title={org.name} subtitle={<>Created {formatTime(org.createdAt)} · id {org.id}</>} />
      <OrgForm
        csrf={props.csrf}
        action={`/admin/orgs/${org.id}`}
        name={props.name}
        errors={props.errors}
        error={props.error}
      />
      <section class="panel">
        <h2>Registration secret</h2>
        <p>
          Backup engines and agents of this organization register with its secret. It is shown only when it is
          issued — at setup, when the organization is created, or here — and stored only as a hash. Current
          secret issued {formatTime(org.secretRotatedAt)}.
        </p>
        <p class="hint">
          Don't have it at hand (for a new engine or agent)? Issue a new one: it is shown once, and engines
          and agents already registered keep working.
        </p>
        <a class="btn" href={`/admin/orgs/${org.id}/rotate`}>Issue a new secret…</a>
      </section>
    </>
  );
}

adminOrgRoutes.get("/:orgId", requires("admin"), async (c) => {
  const org = await requireOrg(c.get("deps").kv, c.get("actor")!, c.req.param("orgId"));
  return render(c, org.name, <OrgPage csrf={c.get("csrfToken")} org={org} name={org.name} />);
});

adminOrgRoutes.post("/:orgId", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const org = await requireOrg(kv, actor, c.req.param("orgId"));
  const form = await readForm(c);
  return await saveForm(
    OrgInput.safeParse({ name: str(form, "name") }),
    async (data) => {
      await renameOrg(kv, actor, org.id, data, clock());
      return redirectWithNotice(c, `/admin/orgs/${org.id}`, "Organization saved.");
    },
    (errors, error) =>
      render(
        c,
        org.name,
        <OrgPage
          csrf={c.get("csrfToken")}
          org={org}
          name={str(form, "name")}
          errors={errors}
          error={error}
        />,
        422,
      ),
    { validationOnly: true },
  );
});

adminOrgRoutes.get("/:orgId/rotate", requires("admin"), async (c) => {
  const org = await requireOrg(c.get("deps").kv, c.get("actor")!, c.req.param("orgId"));
  return confirmPage(c, {
    title: "Issue a new secret",
    question: `Issue a new registration secret for ${org.name}?`,
    explain: (
      <>
        <p>
          The new secret is shown once, on the next page, for you to copy into the <code>deno task bes</code>
          {" "}
          or <code>deno task agent</code> command of a new engine or agent.
        </p>
        <p>
          Engines and agents that are already registered keep working: they sign their requests with their own
          keys and never use the secret again. The secret issued {formatTime(org.secretRotatedAt)}{" "}
          (wherever it was copied to) stops working for new registrations.
        </p>
      </>
    ),
    action: `/admin/orgs/${org.id}/rotate`,
    cancel: `/admin/orgs/${org.id}`,
    label: "Issue a new secret",
  });
});

adminOrgRoutes.post("/:orgId/rotate", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const orgId = c.req.param("orgId");
  const request = await requestIfFourEyes(kv, c.get("actor")!, {
    kind: "org_secret.rotate",
    input: { orgId },
  }, clock());
  if (request) return redirectToApproval(c, request);
  const { org, secret } = await rotateOrgSecret(kv, c.get("actor")!, orgId, clock());
  noStore(c);
  return render(
    c,
    "Secret rotated",
    <SecretOnce org={org} secret={secret} rotated baseUrl={c.get("deps").config.baseUrl} />,
  );
});
