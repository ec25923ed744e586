/** Rendering helpers: one `render()` wraps a page in the layout; flash notices via a short cookie. */
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { ComponentChildren } from "preact";
import { renderToString } from "preact-render-to-string";
import { Layout } from "../components/Layout.tsx";
import { ConfirmForm, PageHeader } from "../components/ui.tsx";
import { NowContext } from "../components/time.tsx";
import { countOpenAlerts } from "../domain/alerts.ts";
import { authorizePlatformAdmin } from "../domain/self_backup_runs.ts";
import type { AppEnv } from "./env.ts";

const FLASH_COOKIE = "cadres_flash";

/** Renders `body` inside the layout with the given status. */
export async function render(
  c: Context<AppEnv>,
  title: string,
  body: ComponentChildren,
  status: 200 | 400 | 401 | 403 | 404 | 409 | 413 | 422 | 429 | 500 | 503 = 200,
) {
  const notice = getCookie(c, FLASH_COOKIE);
  if (notice) deleteCookie(c, FLASH_COOKIE, { path: "/" });
  const actor = c.get("actor");
  const kv = c.get("deps").kv;
  const openAlerts = actor?.accountId ? await countOpenAlerts(kv, actor) : 0;
  const platformAdmin = actor?.permissions.has("admin")
    ? await authorizePlatformAdmin(kv, actor).then(() => true, () => false)
    : false;
  // Every <Time> of the page reads the request's clock (a test's fixed clock renders fixed text).
  const html = renderToString(
    <NowContext.Provider value={c.get("deps").clock()}>
      <Layout
        openAlerts={openAlerts}
        platformAdmin={platformAdmin}
        title={title}
        path={c.req.path}
        actor={c.get("actor")}
        csrfToken={c.get("csrfToken") ?? ""}
        notice={notice ? decodeURIComponent(notice) : undefined}
      >
        {body}
      </Layout>
    </NowContext.Provider>,
  );
  return c.html("<!doctype html>" + html, status);
}

/** Redirects with 303 after a successful POST, carrying a one-shot notice. */
export function redirectWithNotice(c: Context<AppEnv>, location: string, notice: string) {
  setCookie(c, FLASH_COOKIE, encodeURIComponent(notice.slice(0, 300)), {
    path: "/",
    httpOnly: true,
    sameSite: "Lax",
    secure: c.get("deps").config.secureCookies,
    maxAge: 60,
  });
  return c.redirect(location, 303);
}

/** Marks a response that shows a secret as never cacheable. */
export function noStore(c: Context<AppEnv>) {
  c.header("Cache-Control", "no-store");
}

/**
 * The confirmation page of a destructive action (a delete, a secret replaced): the question as the header,
 * what the action does (`explain` above the form, or `inForm` inside it), and the `ConfirmForm` (CSRF field,
 * the danger button `label` that POSTs to `action`, Cancel back to `cancel`).
 */
export function confirmPage(
  c: Context<AppEnv>,
  page: {
    title: string;
    question: string;
    subtitle?: string;
    action: string;
    cancel: string;
    label: string;
    explain?: ComponentChildren;
    inForm?: ComponentChildren;
  },
) {
  return render(
    c,
    page.title,
    <>
      <PageHeader title={page.question} subtitle={page.subtitle} />
      {page.explain}
      <ConfirmForm action={page.action} cancel={page.cancel} csrf={c.get("csrfToken")} label={page.label}>
        {page.inForm}
      </ConfirmForm>
    </>,
  );
}
