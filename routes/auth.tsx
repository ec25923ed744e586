/** Sign-in, sign-out and the first-run setup page (which ends signed in, on the first-run page). */
import { Hono } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { createSession, endSession, login, LoginInput, userActor } from "../domain/auth.ts";
import type { FieldErrors } from "../domain/errors.ts";
import { RateLimitError, UnauthorizedError } from "../domain/errors.ts";
import { completeSetup, needsSetup, SetupInput } from "../domain/setup.ts";
import { Csrf, Field, FormErrors } from "../components/ui.tsx";
import { publicAccess } from "./access.ts";
import { readSetupProgress } from "../domain/getting_started.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, readForm, str } from "./forms.ts";
import { FirstRunPage } from "./getting_started.tsx";
import { SESSION_COOKIE } from "./middleware.ts";
import { noStore, render } from "./render.tsx";

export const authRoutes = new Hono<AppEnv>();

/** Only same-site relative paths are followed after sign-in. */
function safeNext(next: string | undefined): string {
  return next && /^\/(?!\/)[\w\-./?=&%]*$/.test(next) ? next : "/";
}

/** The email and password fields of sign-in and of setup (`newPassword`: a new one, with its rule). */
function CredentialFields(
  props: { emailLabel: string; email?: string; errors?: FieldErrors; newPassword?: boolean },
) {
  return (
    <>
      <Field
        name="email"
        label={props.emailLabel}
        type="email"
        value={props.email}
        errors={props.errors}
        required
        autocomplete="username"
      />
      <Field
        name="password"
        label="Password"
        type="password"
        errors={props.errors}
        required
        hint={props.newPassword ? "At least 12 characters." : undefined}
        autocomplete={props.newPassword ? "new-password" : "current-password"}
      />
    </>
  );
}

function LoginPage(
  props: { csrf: string; email?: string; next: string; error?: string; errors?: FieldErrors },
) {
  return (
    <section class="auth-card">
      <h1>Sign in to Cadres Backup</h1>
      <FormErrors message={props.error} />
      <form method="post" action="/login" class="form">
        <Csrf token={props.csrf} />
        <input type="hidden" name="next" value={props.next} />
        <CredentialFields emailLabel="Email" email={props.email} errors={props.errors} />
        <button type="submit" class="btn btn--primary">Sign in</button>
      </form>
    </section>
  );
}

authRoutes.get("/login", publicAccess(), async (c) => {
  if (c.get("actor")) return c.redirect("/", 302);
  if (await needsSetup(c.get("deps").kv)) {
    return render(
      c,
      "Setup required",
      (
        <section class="auth-card">
          <h1>Welcome to Cadres Backup</h1>
          <p>
            This installation has no administrator yet. Open the one-time setup link that the server printed
            on its console when it started (restart the server to print a new one).
          </p>
        </section>
      ),
    );
  }
  return render(c, "Sign in", <LoginPage csrf={c.get("csrfToken")} next={safeNext(c.req.query("next"))} />);
});

authRoutes.post("/login", publicAccess(), async (c) => {
  const { kv, clock, config } = c.get("deps");
  const form = await readForm(c);
  const next = safeNext(str(form, "next"));
  const parsed = LoginInput.safeParse({ email: str(form, "email"), password: str(form, "password") });
  if (!parsed.success) {
    return render(
      c,
      "Sign in",
      (
        <LoginPage
          csrf={c.get("csrfToken")}
          email={str(form, "email")}
          next={next}
          errors={fieldErrors(parsed.error)}
        />
      ),
      422,
    );
  }
  try {
    const { cookie } = await login(kv, parsed.data, {
      ip: c.env?.remoteAddr?.hostname ?? "unknown",
      now: clock(),
      previousCookie: getCookie(c, SESSION_COOKIE),
      hashing: config.passwordHashing,
    });
    setCookie(c, SESSION_COOKIE, cookie, {
      httpOnly: true,
      sameSite: "Lax",
      secure: config.secureCookies,
      path: "/",
    });
    return c.redirect(next, 303);
  } catch (error) {
    if (error instanceof RateLimitError) {
      c.header("Retry-After", String(error.retryAfterSeconds));
      return render(
        c,
        "Sign in",
        (
          <LoginPage csrf={c.get("csrfToken")} email={parsed.data.email} next={next} error={error.message} />
        ),
        429,
      );
    }
    if (error instanceof UnauthorizedError) {
      return render(
        c,
        "Sign in",
        (
          <LoginPage csrf={c.get("csrfToken")} email={parsed.data.email} next={next} error={error.message} />
        ),
        401,
      );
    }
    throw error;
  }
});

authRoutes.post("/logout", publicAccess(), async (c) => {
  const cookie = getCookie(c, SESSION_COOKIE);
  if (cookie) await endSession(c.get("deps").kv, cookie);
  deleteCookie(c, SESSION_COOKIE, { path: "/" });
  return c.redirect("/login", 303);
});

function SetupPage(
  props: { csrf: string; values: Record<string, string>; errors?: FieldErrors; error?: string },
) {
  const v = props.values;
  return (
    <section class="auth-card auth-card--wide">
      <h1>Set up Cadres Backup</h1>
      <p>Create the account, its first organization and the first administrator.</p>
      <FormErrors message={props.error} />
      <form method="post" action="/setup" class="form">
        <Csrf token={props.csrf} />
        <input type="hidden" name="token" value={v.token} />
        <Field
          name="accountName"
          label="Account (company) name"
          value={v.accountName}
          errors={props.errors}
          required
        />
        <Field name="orgName" label="First organization" value={v.orgName} errors={props.errors} required />
        <Field name="name" label="Your name" value={v.name} errors={props.errors} required />
        <CredentialFields emailLabel="Your email" email={v.email} errors={props.errors} newPassword />
        <button type="submit" class="btn btn--primary">Create administrator</button>
      </form>
    </section>
  );
}

authRoutes.get("/setup", publicAccess(), async (c) => {
  if (!(await needsSetup(c.get("deps").kv))) return c.redirect("/login", 302);
  noStore(c);
  return render(
    c,
    "Setup",
    <SetupPage csrf={c.get("csrfToken")} values={{ token: c.req.query("token") ?? "" }} />,
  );
});

authRoutes.post("/setup", publicAccess(), async (c) => {
  const { kv, clock, config } = c.get("deps");
  if (!(await needsSetup(kv))) return c.redirect("/login", 303);
  noStore(c);
  const form = await readForm(c);
  const values = Object.fromEntries(
    ["token", "accountName", "orgName", "name", "email"].map((k) => [k, str(form, k)]),
  );
  const parsed = SetupInput.safeParse({ ...values, password: str(form, "password") });
  if (!parsed.success) {
    return render(
      c,
      "Setup",
      (
        <SetupPage csrf={c.get("csrfToken")} values={values} errors={fieldErrors(parsed.error)} />
      ),
      422,
    );
  }
  const now = clock();
  let done: Awaited<ReturnType<typeof completeSetup>>;
  try {
    done = await completeSetup(kv, parsed.data, now, config.passwordHashing);
  } catch (error) {
    if (error instanceof UnauthorizedError) {
      return render(
        c,
        "Setup",
        <SetupPage csrf={c.get("csrfToken")} values={values} error={error.message} />,
        401,
      );
    }
    throw error;
  }
  // Setup ends signed in, on the first-run page: the organization's secret exists only in this answer
  // (stored as a hash), so the page is rendered here rather than after a redirect, and never cached.
  const { user, org, orgSecret } = done;
  const { cookie, session } = await createSession(kv, user, now, getCookie(c, SESSION_COOKIE));
  setCookie(c, SESSION_COOKIE, cookie, {
    httpOnly: true,
    sameSite: "Lax",
    secure: config.secureCookies,
    path: "/",
  });
  const actor = userActor(user);
  c.set("actor", actor);
  c.set("csrfToken", session.csrfToken);
  return render(
    c,
    "Welcome",
    <FirstRunPage
      csrf={session.csrfToken}
      baseUrl={config.baseUrl}
      orgs={[{ id: org.id, name: org.name }]}
      secret={{ orgName: org.name, value: orgSecret }}
      recoveryKey={null}
      progress={await readSetupProgress(kv, actor, now)}
      manage
      admin
    />,
  );
});
