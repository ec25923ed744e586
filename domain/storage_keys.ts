/**
 * A storage target's scope, and its keys re-exported from keys/storage.ts, so that policies, runs, restore
 * and the dashboard can read a target without importing storage.ts and closing an import cycle.
 */
import type { StorageTarget } from "./storage.ts";
export * from "./keys/storage.ts";

export function targetScope(t: Pick<StorageTarget, "accountId" | "orgId">) {
  return { accountId: t.accountId, orgId: t.orgId };
}
