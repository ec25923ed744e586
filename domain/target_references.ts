/**
 * A storage target's reference count, `policyCount`: the policies and the replica rules writing to it.
 * Each reference is counted in the same atomic operation that checks the target's entry, so
 * `deleteTarget` (refused while the count is above 0) never removes a target under one (DESIGN.md
 * invariant 1). Used by policies.ts and replicas.ts.
 */
import { targetKey } from "./storage_keys.ts";

/** What these helpers need of a target record (the rest of it is written back unchanged). */
interface Counted {
  id: string;
  policyCount: number;
}

/** Adds one reference to `target` (read, and its entry checked in `op`, by the caller). */
export function addTargetReference<T extends Counted>(
  op: Deno.AtomicOperation,
  target: T,
): Deno.AtomicOperation {
  return op.set(targetKey(target.id), { ...target, policyCount: target.policyCount + 1 });
}

/** Removes one reference from the target of `entry` (never below 0); nothing when the target is gone. */
export function releaseTargetReference<T extends Counted>(
  op: Deno.AtomicOperation,
  entry: Deno.KvEntryMaybe<T>,
): Deno.AtomicOperation {
  if (entry.value) {
    op.set(entry.key, { ...entry.value, policyCount: Math.max(0, entry.value.policyCount - 1) });
  }
  return op;
}
