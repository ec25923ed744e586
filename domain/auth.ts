/** Sessions, login with rate limits, and turning a session or API token into an Actor. */
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { RateLimitError, UnauthorizedError } from "./errors.ts";
import { randomToken, sha256Hex } from "./ids.ts";
import { type Argon2Params, DUMMY_HASH, dummyHashFor, verifyPassword } from "./passwords.ts";
import { releaseAttempt, reserveAttempt } from "./rate_limit.ts";
import { type Actor, permissionsOf } from "./rbac.ts";
import type { User } from "./types.ts";
import { findUserByEmail, getUser } from "./users.ts";
import {
  loginFailureKey,
  loginFailuresPrefix,
  sessionKey,
  sessionsByUserKey,
  sessionsPrefix,
} from "./keys/auth.ts";
export { sessionKey, sessionsByUserKey };

/** Absolute lifetime of a session. */
export const SESSION_TTL_MS = 12 * 3600_000;
/** A session unused for this long ends. */
export const SESSION_IDLE_MS = 2 * 3600_000;
/** `lastSeenAt` is written at most this often, to keep reads cheap. */
const TOUCH_EVERY_MS = 5 * 60_000;

/** Login limits: failures per email and per client IP within one window. */
export const LOGIN_WINDOW_MS = 15 * 60_000;
export const LOGIN_MAX_PER_EMAIL = 5;
export const LOGIN_MAX_PER_IP = 30;

export interface Session {
  /** SHA-256 of the cookie value; the cookie value itself is never stored. */
  id: string;
  userId: string;
  accountId: string;
  csrfToken: string;
  createdAt: string;
  expiresAt: string;
  lastSeenAt: string;
}

function loginLimits(email: string, ip: string, window: number) {
  return [
    { key: loginFailureKey("email", email, window), max: LOGIN_MAX_PER_EMAIL },
    { key: loginFailureKey("ip", ip, window), max: LOGIN_MAX_PER_IP },
  ];
}

export const LoginInput = z.object({
  email: z.string().trim().toLowerCase().min(1, "is required").max(254, "must be at most 254 characters"),
  password: z.string().min(1, "is required").max(256, "must be at most 256 characters"),
});
export type LoginInput = z.infer<typeof LoginInput>;

/** The actor of a signed-in user. */
export function userActor(user: User): Actor {
  return {
    kind: "user",
    id: user.id,
    label: user.email,
    accountId: user.accountId,
    role: user.role,
    permissions: permissionsOf(user.role),
    orgScope: user.orgScope,
  };
}

/**
 * Creates a session for the user; returns the cookie value (shown to the browser only).
 * When `previous` is given (the cookie the browser had) that session is ended: ids rotate on login.
 */
export async function createSession(
  kv: Deno.Kv,
  user: User,
  now: Date,
  previous?: string,
): Promise<{ cookie: string; session: Session }> {
  const cookie = randomToken(32);
  const id = sha256Hex(cookie);
  const session: Session = {
    id,
    userId: user.id,
    accountId: user.accountId,
    csrfToken: randomToken(24),
    createdAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + SESSION_TTL_MS).toISOString(),
    lastSeenAt: now.toISOString(),
  };
  const op = kv.atomic()
    .set(sessionKey(id), session, { expireIn: SESSION_TTL_MS })
    .set(sessionsByUserKey(user.id, id), id, { expireIn: SESSION_TTL_MS });
  if (previous) await endSession(kv, previous);
  await op.commit();
  return { cookie, session };
}

/** Ends the session behind a cookie value (no-op when unknown). */
export async function endSession(kv: Deno.Kv, cookie: string): Promise<void> {
  const id = sha256Hex(cookie);
  const session = (await kv.get<Session>(sessionKey(id))).value;
  const op = kv.atomic().delete(sessionKey(id));
  if (session) op.delete(sessionsByUserKey(session.userId, id));
  await op.commit();
}

/**
 * Resolves a session cookie to its session and user, or null when unknown, expired (absolute or
 * idle, judged against `now`, not KV's lazy expiry), or the user is gone or disabled.
 */
export async function resolveSession(
  kv: Deno.Kv,
  cookie: string,
  now: Date,
): Promise<{ session: Session; user: User } | null> {
  if (!cookie || cookie.length > 100) return null;
  const id = sha256Hex(cookie);
  const entry = await kv.get<Session>(sessionKey(id));
  const session = entry.value;
  if (!session) return null;
  const t = now.getTime();
  if (t >= Date.parse(session.expiresAt) || t - Date.parse(session.lastSeenAt) >= SESSION_IDLE_MS) {
    await kv.atomic().delete(sessionKey(id)).delete(sessionsByUserKey(session.userId, id)).commit();
    return null;
  }
  const user = await getUser(kv, session.userId);
  if (!user || user.disabled) return null;
  if (t - Date.parse(session.lastSeenAt) >= TOUCH_EVERY_MS) {
    const touched = { ...session, lastSeenAt: now.toISOString() };
    const left = Math.max(1000, Date.parse(session.expiresAt) - t);
    await kv.atomic().check(entry).set(sessionKey(id), touched, { expireIn: left }).commit();
    return { session: touched, user };
  }
  return { session, user };
}

/**
 * Checks a login. Each attempt is first reserved against the per-email and per-IP limits (so a
 * locked-out guess costs nothing and concurrent guesses cannot overshoot); a successful sign-in gives
 * its reservation back. Throws RateLimitError at the limit and UnauthorizedError on bad credentials.
 * Every outcome is audited (failures against the account of a known email only). `hashing`: the argon2id
 * cost users are hashed with (`Config.passwordHashing`), so an unknown email costs what a known one does.
 */
export async function login(
  kv: Deno.Kv,
  input: LoginInput,
  options: { ip: string; now: Date; previousCookie?: string; hashing?: Argon2Params },
): Promise<{ cookie: string; session: Session; user: User }> {
  const { email, password } = LoginInput.parse(input);
  const { ip, now } = options;
  const window = Math.floor(now.getTime() / LOGIN_WINDOW_MS) * LOGIN_WINDOW_MS;
  const retryAfter = Math.ceil((window + LOGIN_WINDOW_MS - now.getTime()) / 1000);
  const limits = loginLimits(email, ip, window);
  if (!(await reserveAttempt(kv, limits, LOGIN_WINDOW_MS * 2))) {
    throw new RateLimitError("Too many failed sign-in attempts. Try again later.", retryAfter);
  }
  const user = await findUserByEmail(kv, email);
  const dummy = options.hashing ? dummyHashFor(options.hashing) : DUMMY_HASH;
  const ok = await verifyPassword(password, user?.passwordHash ?? dummy);
  if (!user || !ok || user.disabled) {
    const op = kv.atomic();
    if (user) {
      appendAudit(op, { ...userActor(user), label: email }, {
        accountId: user.accountId,
        orgIds: user.orgScope,
        action: "auth.login_failed",
        objectType: "user",
        objectId: user.id,
        summary: `Failed sign-in for ${email} from ${ip}`,
      }, now);
    }
    await op.commit();
    throw new UnauthorizedError("Wrong email or password");
  }
  await releaseAttempt(kv, limits, LOGIN_WINDOW_MS * 2);
  const { cookie, session } = await createSession(kv, user, now, options.previousCookie);
  const op = kv.atomic();
  appendAudit(op, userActor(user), {
    accountId: user.accountId,
    orgIds: user.orgScope,
    action: "auth.login",
    objectType: "user",
    objectId: user.id,
    summary: `Signed in from ${ip}`,
  }, now);
  await op.commit();
  return { cookie, session, user };
}

/** Deletes login-failure counters of windows that ended before `now` (run by the purge job). */
export async function purgeLoginFailures(kv: Deno.Kv, now: Date): Promise<number> {
  const current = Math.floor(now.getTime() / LOGIN_WINDOW_MS) * LOGIN_WINDOW_MS;
  let removed = 0;
  for await (const entry of kv.list({ prefix: loginFailuresPrefix() })) {
    if (Number(entry.key[3]) < current) {
      await kv.delete(entry.key);
      removed++;
    }
  }
  return removed;
}

/** Deletes sessions whose absolute or idle expiry has passed at `now` (KV's own expiry is lazy). */
export async function purgeSessions(kv: Deno.Kv, now: Date): Promise<number> {
  let removed = 0;
  for await (const entry of kv.list<Session>({ prefix: sessionsPrefix() })) {
    const s = entry.value;
    const t = now.getTime();
    if (t >= Date.parse(s.expiresAt) || t - Date.parse(s.lastSeenAt) >= SESSION_IDLE_MS) {
      await kv.atomic().check(entry).delete(entry.key).delete(sessionsByUserKey(s.userId, s.id)).commit();
      removed++;
    }
  }
  return removed;
}
