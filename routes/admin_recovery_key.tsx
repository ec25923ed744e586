/**
 * Admin > Account recovery key (ENGINE.md §3 "Keys"): the page that asks the administrator to create
 * the account's recovery key pair, and the POST that creates it and answers with the private half as a
 * download — the only time it exists outside the administrator's hands (never stored, never shown
 * again). The first-run page (routes/getting_started.tsx) offers the same form right after setup.
 */
import { Hono } from "hono";
import { Csrf, FormActions, formatTime, FormErrors, PageHeader } from "../components/ui.tsx";
import { ConflictError } from "../domain/errors.ts";
import { type AccountRecoveryKey, createRecoveryKey, getRecoveryKey } from "../domain/recovery_keys.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { render } from "./render.tsx";

export const adminRecoveryKeyRoutes = new Hono<AppEnv>();

/** The recovery key page; its POST answers with the private half as a download. */
export const RECOVERY_KEY_PATH = "/admin/recovery-key";

function RecoveryKeyPage(
  props: { csrf: string; recoveryKey: AccountRecoveryKey | null; canCreate: boolean; error?: string },
) {
  const key = props.recoveryKey;
  return (
    <>
      <PageHeader
        title="Account recovery key"
        subtitle="Opens every repository of this account without the control plane."
      />
      <FormErrors message={props.error} />
      <p>
        Every backup is encrypted with keys the control plane keeps in its vault. Each repository also holds a
        copy of its keys sealed for this account's{" "}
        <strong>recovery public key</strong>, so that if the control plane is lost,{" "}
        <code>deno task repo --recovery-key FILE</code>{" "}
        still opens the backups with the private half. Keep that file offline (a safe, a password manager, two
        copies in two places): Cadres does not keep it and cannot show it again.
      </p>
      {key
        ? (
          <section class="panel" data-testid="recovery-key">
            <h2>Created</h2>
            <dl class="facts">
              <dt>Key id</dt>
              <dd>
                <code data-testid="recovery-key-id">{key.id}</code>
              </dd>
              <dt>Algorithm</dt>
              <dd>{key.algorithm}</dd>
              <dt>Created</dt>
              <dd>{formatTime(key.createdAt)} by {key.createdBy.label}</dd>
            </dl>
            <p>The private half was downloaded when it was created; it cannot be downloaded again.</p>
            <details>
              <summary>Public key (PEM)</summary>
              <pre>{key.publicPem}</pre>
            </details>
          </section>
        )
        : props.canCreate
        ? (
          <form method="post" action={RECOVERY_KEY_PATH} class="form">
            <Csrf token={props.csrf} />
            <p class="notice notice--warn">
              The private key is downloaded once, now, as{" "}
              <code>cadres-recovery-key-&lt;id&gt;.pem</code>. Store it safely before you leave this page.
            </p>
            <FormActions submit="Create and download the recovery key" />
          </form>
        )
        : (
          <p class="notice notice--warn">
            No recovery key has been created yet. An administrator of every organization of the account
            creates it here.
          </p>
        )}
    </>
  );
}

adminRecoveryKeyRoutes.get("/", requires("admin"), async (c) => {
  const actor = c.get("actor")!;
  const key = await getRecoveryKey(c.get("deps").kv, actor.accountId!);
  return render(
    c,
    "Account recovery key",
    <RecoveryKeyPage csrf={c.get("csrfToken")} recoveryKey={key} canCreate={actor.orgScope === "all"} />,
  );
});

adminRecoveryKeyRoutes.post("/", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  try {
    const { key, privatePem } = await createRecoveryKey(kv, actor, actor.accountId!, clock());
    c.header("Cache-Control", "no-store");
    c.header("Content-Type", "application/x-pem-file");
    c.header("Content-Disposition", `attachment; filename="cadres-recovery-key-${key.id}.pem"`);
    return c.body(privatePem, 200);
  } catch (error) {
    if (!(error instanceof ConflictError)) throw error;
    const key = await getRecoveryKey(kv, actor.accountId!);
    return render(
      c,
      "Account recovery key",
      <RecoveryKeyPage csrf={c.get("csrfToken")} recoveryKey={key} canCreate={false} error={error.message} />,
      409,
    );
  }
});
