/** The KV keys of auth (no imports). */

export function sessionKey(idHash: string) {
  return ["sessions", idHash] as const;
}

export function sessionsByUserKey(userId: string, idHash: string) {
  return ["sessions_by_user", userId, idHash] as const;
}

/** Every session (the purge job), a user's sessions (`sessionsByUserKey`). */
export function sessionsPrefix(): Deno.KvKey {
  return ["sessions"];
}
export function sessionsByUserPrefix(userId: string): Deno.KvKey {
  return ["sessions_by_user", userId];
}

/** Failed logins of one email or client IP in one rate-limit window (its start, ms). */
export function loginFailureKey(kind: "email" | "ip", subject: string, windowStart: number) {
  return ["login_failures", kind, subject, windowStart] as const;
}
/** Every login-failure counter (the purge job). */
export function loginFailuresPrefix(): Deno.KvKey {
  return ["login_failures"];
}

/** Failed registrations and enrollments of one client address in one fixed window. */
export function registrationFailuresKey(ip: string, window: number) {
  return ["registration_failures", ip, window] as const;
}
