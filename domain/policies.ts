/**
 * Backup policies: every field of the guide, creation on a BES and one of its storage targets, edits
 * (the BES never changes), and the policy's own keys on delete (the storage-critical auto-pause and
 * auto-resume, DESIGN.md invariant 8, is storage_auto_pause.ts); what a delete or a save does to assignments, hooks, replica rules and
 * protected objects is the policy cascade's (policy_cascade.ts).
 */
import { engineKey } from "./keys/engines.ts";
import {
  policiesByAccountKey,
  policiesByAccountPrefix,
  policiesByBesKey,
  policiesByTargetKey,
  policiesByTargetPrefix,
  policiesPrefix,
  policyKey,
  retiredPoliciesByAccountKey,
  retiredPolicyKey,
} from "./keys/policies.ts";
import { replicaKey, replicasByPolicyPrefix } from "./keys/replicas.ts";
import { restorePointsByPolicyPrefix } from "./keys/restore.ts";
import { runsByPolicyPrefix } from "./keys/runs.ts";
import { z } from "zod";
import { getPolicy, policyScope, requirePolicy } from "./policy_reads.ts";
import { applyPolicySave, deletePolicyChildren } from "./policy_cascade.ts";
import { targetKey } from "./storage_keys.ts";
import { addTargetReference, releaseTargetReference } from "./target_references.ts";
import { appendAudit, auditTarget } from "./audit.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { newId } from "./ids.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { type Actor, authorize, inScope, systemActor } from "./rbac.ts";
import { CronExpression, deriveRpoHours, OptionalCronExpression, RPO_GRACE_HOURS } from "./schedules.ts";
import { DisplayName } from "./validation.ts";
import { generationChanges, repositoryOf } from "./repositories.ts";
import { countPolicy, deletePolicyName, setPolicyName } from "./policy_names.ts";
import { dataFixKey } from "./keys/data_fixes.ts";

export interface PolicyCore {
  id: string;
  accountId: string;
  orgId: string | null;
  besId: string;
  targetId: string;
  name: string;
  /** The operator's switch. Auto-pause never changes it. */
  enabled: boolean;
  /** Set by the system; a paused policy dispatches nothing until the reason clears. */
  pausedReason: "storage_critical" | null;
  updatedAt: string;
}

export {
  policiesByAccountKey,
  policiesByBesKey,
  policiesByTargetKey,
  policyKey,
  retiredPoliciesByAccountKey,
  retiredPolicyKey,
};

/** A deleted policy kept for its restore points. */
export type RetiredPolicy = Policy & { deletedAt: string };

/** The policies writing to a target. */
export async function listPoliciesByTarget(kv: Deno.Kv, targetId: string): Promise<PolicyCore[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: policiesByTargetPrefix(targetId) })) {
    keys.push(policyKey(e.value));
  }
  return await getManyValues<PolicyCore>(kv, keys);
}

/** Deletes a policy with its children and indexes (used by the engine cascade). */
export async function deletePolicyCascade(kv: Deno.Kv, policy: PolicyCore, now: Date): Promise<void> {
  await deletePolicyChildren(kv, policy, now); // the policy cascade (policy_cascade.ts)
  // The name index entry under the name given and under the current one (renamed since it was read);
  // the policy is counted down only by the write that removes it (checked: once, even when resumed).
  const attempt = async (): Promise<{ value: void } | null> => {
    const current = await kv.get<PolicyCore>(policyKey(policy.id));
    const op = kv.atomic().check(current)
      .delete(policyKey(policy.id))
      .delete(policiesByTargetKey(policy.targetId, policy.id))
      .delete(policiesByBesKey(policy.besId, policy.id))
      .delete(policiesByAccountKey(policy.accountId, policy.id));
    deletePolicyName(op, policy);
    if (current.value) {
      deletePolicyName(op, current.value);
      countPolicy(op, current.value, "down");
    }
    return (await op.commit()).ok ? { value: undefined } : null;
  };
  await withRetry(attempt, 10, `Policy ${policy.id} kept changing while it was deleted; it will be resumed`);
}

// ---------------------------------------------------------------------------------------------------
// The policy aggregate: every field of the guide, with its ranges and defaults.

export const BACKUP_TYPES = ["file", "image"] as const;
export const COMPRESSIONS = ["lz4", "zstd", "none"] as const;
export const ENCRYPTIONS = ["AES-256-GCM", "AES-256-CBC", "none"] as const;
export const IO_PRIORITIES = ["normal", "low", "high"] as const;

/** Built-in exclusion templates; their expanded patterns are shown to operators. */
export const EXCLUSION_TEMPLATES: Record<string, { label: string; patterns: string[] }> = {
  "windows-system": {
    label: "Windows system files",
    patterns: [
      "pagefile.sys",
      "hiberfil.sys",
      "swapfile.sys",
      "$Recycle.Bin/",
      "System Volume Information/",
      "*.tmp",
    ],
  },
  "linux-system": {
    label: "Linux virtual and temporary filesystems",
    patterns: ["/proc/", "/sys/", "/dev/", "/run/", "/tmp/", "/var/tmp/", "*.swp"],
  },
  "developer": {
    label: "Build outputs and dependency caches",
    patterns: ["node_modules/", ".git/objects/", "target/", "build/", "dist/", "__pycache__/", "*.pyc"],
  },
  "caches": {
    label: "Caches and thumbnails",
    patterns: ["*.cache", ".cache/", "Thumbs.db", ".DS_Store", "*.log"],
  },
};

const TimeZone = z.string().trim().max(64).refine((tz) => {
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}, "must be an IANA time zone such as UTC or Europe/Berlin");

/** Most characters in one exclude list: the policy (and every job it sends) must fit in one KV value. */
export const MAX_PATH_LIST_CHARS = 8_000;

const PathList = z.array(
  z.string().trim().min(1).max(1024, "each entry must be at most 1024 characters")
    .refine((v) => !/\p{Cc}/u.test(v), "must not contain control characters"),
).max(500, "at most 500 entries")
  .refine(
    (list) => list.reduce((n, v) => n + v.length, 0) <= MAX_PATH_LIST_CHARS,
    `at most ${MAX_PATH_LIST_CHARS.toLocaleString("en-US")} characters in all`,
  )
  .default([]);

/** Most include paths one policy may list. */
export const MAX_INCLUDE_PATHS = 100;
/** Longest include path accepted. */
export const MAX_INCLUDE_PATH_LENGTH = 1024;

const WINDOWS_DRIVE = /^[A-Za-z]:[\\/]/;

/** An include path normalized (trailing separators dropped), or why it is refused. */
export function normalizeIncludePath(
  raw: string,
): { ok: true; path: string } | { ok: false; message: string } {
  const v = raw.trim();
  if (!v) return { ok: false, message: "must not be empty" };
  if (v.length > MAX_INCLUDE_PATH_LENGTH) {
    return { ok: false, message: `must be at most ${MAX_INCLUDE_PATH_LENGTH} characters` };
  }
  if (/\p{Cc}/u.test(v)) return { ok: false, message: "must not contain control characters" };
  const windows = WINDOWS_DRIVE.test(v);
  if (!windows && !v.startsWith("/")) return { ok: false, message: "must be an absolute path (/… or C:\\…)" };
  const segments = (windows ? v.slice(3) : v).split(windows ? /[\\/]+/ : /\/+/);
  if (segments.some((s) => s === ".." || (windows && /^[. ]+$/.test(s) && s !== "."))) {
    return { ok: false, message: 'must not contain ".." segments' };
  }
  const kept = segments.filter((s) => s !== "" && s !== ".");
  return {
    ok: true,
    path: windows ? `${v[0].toUpperCase()}:\\${kept.join("\\")}` : `/${kept.join("/")}`,
  };
}

/**
 * What a backup reads: absolute paths on the host (POSIX or Windows), one per entry, at most
 * MAX_INCLUDE_PATHS; empty means the agent's default roots (which it reports when it enrolls).
 * Duplicates are dropped; errors name the entry (its line in the form) under the field `includePaths`.
 */
export const IncludePaths = z.array(z.string({ error: "must be a list of paths" }), {
  error: "must be a list of absolute paths",
}).transform((raw, ctx) => {
  const out: string[] = [];
  for (const [i, value] of raw.entries()) {
    const r = normalizeIncludePath(value);
    if (!r.ok) {
      const shown = value.length > 60 ? `${value.slice(0, 57)}...` : value;
      ctx.addIssue({
        code: "custom",
        message: `line ${i + 1} (${shown.replace(/\p{Cc}/gu, "?")}) ${r.message}`,
      });
      return z.NEVER;
    }
    if (!out.includes(r.path)) out.push(r.path);
  }
  if (out.length > MAX_INCLUDE_PATHS) {
    ctx.addIssue({ code: "custom", message: `at most ${MAX_INCLUDE_PATHS} include paths` });
    return z.NEVER;
  }
  return out;
}).default([]);

/** The editable fields of a policy (the BES is set once, at creation). */
export const PolicyFields = z.object({
  name: DisplayName,
  targetId: z.string().min(1, "is required").max(40),
  backupType: z.enum(BACKUP_TYPES, { error: "must be file or image" }),
  timeZone: TimeZone.default("UTC"),
  fullSchedule: CronExpression(),
  incrementalSchedule: OptionalCronExpression(),
  syntheticFullSchedule: OptionalCronExpression(),
  includePaths: IncludePaths,
  excludePaths: PathList,
  excludePatterns: PathList,
  exclusionTemplate: z.union([
    z.literal(""),
    z.enum(Object.keys(EXCLUSION_TEMPLATES) as [string, ...string[]]),
  ], {
    error: `must be one of ${Object.keys(EXCLUSION_TEMPLATES).join(", ")}`,
  }).default(""),
  retentionDaily: z.coerce.number().int("must be a whole number").min(1, "must be 1–365").max(
    365,
    "must be 1–365",
  )
    .default(7),
  retentionWeekly: z.coerce.number().int("must be a whole number").min(0, "must be 0–52").max(
    52,
    "must be 0–52",
  )
    .default(4),
  retentionMonthly: z.coerce.number().int("must be a whole number").min(0, "must be 0–120").max(
    120,
    "must be 0–120",
  )
    .default(12),
  compression: z.enum(COMPRESSIONS, { error: "must be lz4, zstd or none" }).default("lz4"),
  encryption: z.enum(ENCRYPTIONS, { error: "must be AES-256-GCM, AES-256-CBC or none" }).default(
    "AES-256-GCM",
  ),
  deduplication: z.boolean().default(true),
  maxTransferMbps: z.coerce.number().int("must be a whole number").min(1, "must be at least 1 MBps")
    .max(100_000, "must be at most 100000 MBps").nullable().default(null),
  ioPriority: z.enum(IO_PRIORITIES, { error: "must be normal, low or high" }).default("normal"),
  throttleSchedule: OptionalCronExpression(),
  vssEnabled: z.boolean().default(true),
  catchUpOnReconnect: z.boolean().default(true),
  verifyAfterBackup: z.boolean().default(true),
  verifySampleCount: z.coerce.number().int("must be a whole number").min(1, "must be 1–10000")
    .max(10_000, "must be 1–10000").default(50),
  prePatchBackup: z.boolean().default(false),
  archiveOnHostDeactivation: z.boolean().default(true),
  enabled: z.boolean().default(true),
  /** Hours; null derives it from the schedules (see `deriveRpoHours`). */
  rpoHours: z.coerce.number().int("must be a whole number of hours").min(1, "must be 1–8760")
    .max(8760, "must be 1–8760").nullable().default(null),
});

export const PolicyCreateInput = PolicyFields.extend({ besId: z.string().min(1, "is required").max(40) });
export type PolicyCreateInput = z.input<typeof PolicyCreateInput>;

/**
 * An edit: the editable fields and, optionally, the BES — accepted only when it is the policy's own
 * (DESIGN.md invariant 2), so a client that sends another one is told so instead of being ignored.
 */
export const PolicyUpdateInput = PolicyFields.extend({ besId: z.string().max(40).optional() });
export type PolicyUpdateInput = z.input<typeof PolicyUpdateInput>;

/**
 * A partial update (`PATCH`): any field of the edit, with the same rules, none required and none defaulted —
 * a field left out keeps the stored value. An unknown field is refused (naming it), not ignored.
 */
export const PolicyPatchInput = z.strictObject(
  Object.fromEntries(
    Object.entries(PolicyUpdateInput.shape).map(([key, field]) => {
      const schema = field as z.ZodType;
      const bare = schema._zod.def.type === "default" ? (schema as z.ZodDefault<z.ZodType>).unwrap() : schema;
      return [key, bare.optional()];
    }),
  ) as { [K in keyof typeof PolicyUpdateInput.shape]: z.ZodOptional<z.ZodType> },
);
export type PolicyPatchInput = Partial<PolicyUpdateInput>;

/**
 * A stored policy as an edit: every editable field it has (a field it predates takes the schema's default),
 * and `rpoHours` null while the RPO is derived from the schedules, so it stays derived.
 */
export function policyAsInput(policy: Policy): PolicyUpdateInput {
  const input: Record<string, unknown> = {};
  for (const key of Object.keys(PolicyUpdateInput.shape)) {
    const value = (policy as unknown as Record<string, unknown>)[key];
    if (key !== "besId" && value !== undefined) input[key] = value;
  }
  if (policy.rpoDerived) input.rpoHours = null;
  return input as PolicyUpdateInput;
}

export type Policy =
  & PolicyCore
  & Omit<z.infer<typeof PolicyFields>, "name" | "targetId" | "enabled" | "rpoHours">
  & {
    rpoHours: number;
    rpoDerived: boolean;
    createdAt: string;
    /**
     * The repository generation (repositories.ts): 1 at creation, +1 whenever the storage target,
     * encryption or deduplication changes. Absent on policies stored before generations: 1.
     */
    generation?: number;
  };

/** The expanded exclusion patterns (template first, then the policy's own). */
export function effectiveExcludes(p: Pick<Policy, "exclusionTemplate" | "excludePatterns">): string[] {
  return [
    ...(p.exclusionTemplate ? EXCLUSION_TEMPLATES[p.exclusionTemplate]?.patterns ?? [] : []),
    ...p.excludePatterns,
  ];
}

export { getPolicy, requirePolicy };

/** Policies of the actor's account in scope, by name. */
export async function listPolicies(kv: Deno.Kv, actor: Actor): Promise<Policy[]> {
  if (!actor.accountId) return [];
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: policiesByAccountPrefix(actor.accountId) })) {
    keys.push(policyKey(e.value));
  }
  return (await getManyValues<Policy>(kv, keys)).filter((p) => inScope(actor, policyScope(p)))
    .sort((a, b) => a.name.localeCompare(b.name));
}

interface EngineLike {
  id: string;
  accountId: string;
  orgId: string | null;
  status: string;
  name: string;
}
interface TargetLike {
  id: string;
  besId: string;
  name: string;
  policyCount: number;
  health: string;
}

function rpoOf(data: z.infer<typeof PolicyFields>, now: Date): { rpoHours: number; rpoDerived: boolean } {
  if (data.rpoHours) return { rpoHours: data.rpoHours, rpoDerived: false };
  const schedules = [data.fullSchedule, data.incrementalSchedule].filter((s): s is string => Boolean(s));
  return { rpoHours: deriveRpoHours(schedules, now, data.timeZone), rpoDerived: true };
}

/** Set once every schedule-derived RPO has been re-derived with the exact longest gap. */
export const EXACT_RPO_FIX_KEY = dataFixKey("exact_rpo_v1");

/**
 * Data fix run on start: the RPO of policies that derive it from their schedules is re-derived with the
 * exact longest gap (before it, a bounded sample of runs could see only the weekly full: 174 h for a
 * weekly full with an incremental every 2 minutes), each change audited with the policy write, and their
 * protected objects follow (the policy cascade's `applyPolicySave`). Idempotent: a policy already right is not written, objects
 * already right are not written, and once it completed a marker makes later starts skip it. A crash part-way
 * leaves no marker, so the next start finishes the job. Returns what it changed.
 */
export async function rederiveScheduleRpos(
  kv: Deno.Kv,
  now: Date,
): Promise<{ policies: number; objects: number; skipped: boolean }> {
  if ((await kv.get(EXACT_RPO_FIX_KEY)).value) return { policies: 0, objects: 0, skipped: true };
  const actor = systemActor("rpo-fix");
  const derived = new Map<string, number>();
  const rpoFor = (p: Policy) => {
    const key = [p.timeZone, p.fullSchedule, p.incrementalSchedule ?? ""].join("\u0000");
    let hours = derived.get(key);
    if (hours === undefined) {
      hours = rpoOf({ ...p, rpoHours: null }, now).rpoHours;
      derived.set(key, hours);
    }
    return hours;
  };
  let policies = 0;
  let objects = 0;
  for await (const listed of kv.list<Policy>({ prefix: policiesPrefix() })) {
    if (!listed.value?.rpoDerived) continue;
    const policy = await withRetry<Policy | null>(async () => {
      const entry = await kv.get<Policy>(listed.key);
      const p = entry.value;
      if (!p?.rpoDerived) return { value: null };
      const rpoHours = rpoFor(p);
      if (rpoHours === p.rpoHours) return { value: p };
      const next: Policy = { ...p, rpoHours, updatedAt: now.toISOString() };
      const op = kv.atomic().check(entry).set(policyKey(p.id), next);
      appendAudit(op, actor, {
        ...auditTarget("policy", p),
        action: "policy.update",
        summary: `RPO of policy ${p.name} re-derived from its schedules: ${p.rpoHours} h → ${rpoHours} h ` +
          `(the longest gap between runs, now exact, plus ${RPO_GRACE_HOURS} h)`,
      }, now);
      if (!(await op.commit()).ok) return null;
      policies++;
      return { value: next };
    });
    if (policy) objects += await applyPolicySave(kv, policy, now);
  }
  await kv.set(EXACT_RPO_FIX_KEY, { at: now.toISOString(), policies, objects });
  return { policies, objects, skipped: false };
}

/**
 * Creates a policy on a BES and one of its storage targets. In one atomic operation: the engine must
 * exist and not be deleting (its entry is checked), the target must be on that BES (DESIGN invariant 2)
 * and its `policyCount` is bumped (so a concurrent target delete fails: invariant 1).
 */
export async function createPolicy(
  kv: Deno.Kv,
  actor: Actor,
  input: PolicyCreateInput,
  now: Date,
): Promise<Policy> {
  const data = PolicyCreateInput.parse(input);
  return await withRetry(async () => {
    const [engineEntry, targetEntry] = await kv.getMany<[EngineLike, TargetLike]>([
      engineKey(data.besId),
      targetKey(data.targetId),
    ]);
    const engine = engineEntry.value;
    if (!engine || !inScope(actor, { accountId: engine.accountId, orgId: engine.orgId })) {
      throw new ValidationError("Unknown BES", { besId: "Choose a BES you can see" });
    }
    authorize(actor, "backup.manage", { accountId: engine.accountId, orgId: engine.orgId });
    if (engine.status === "deleting") throw new ConflictError("This BES is being deleted");
    const target = targetEntry.value;
    if (!target || target.besId !== engine.id) {
      // The other target is not named: it may belong to an engine outside the actor's scope.
      throw new ValidationError("The storage target must be on the policy's BES", {
        targetId: `That storage target is not on ${engine.name}: choose one of ${engine.name}'s targets`,
      });
    }
    const at = now.toISOString();
    const { besId: _b, ...fields } = data;
    const policy: Policy = {
      ...fields,
      ...rpoOf(data, now),
      generation: 1,
      id: newId(now),
      accountId: engine.accountId,
      orgId: engine.orgId,
      besId: engine.id,
      pausedReason: target.health === "critical" ? "storage_critical" : null,
      createdAt: at,
      updatedAt: at,
    };
    const op = addTargetReference(kv.atomic().check(engineEntry, targetEntry), target)
      .set(policyKey(policy.id), policy)
      .set(policiesByTargetKey(target.id, policy.id), policy.id)
      .set(policiesByBesKey(engine.id, policy.id), policy.id)
      .set(policiesByAccountKey(policy.accountId, policy.id), policy.id);
    setPolicyName(op, policy);
    countPolicy(op, policy, "up");
    appendAudit(op, actor, {
      ...auditTarget("policy", policy),
      action: "policy.create",
      summary: `Created ${policy.backupType} policy ${policy.name} on ${engine.name} → ${target.name}`,
    }, now);
    return (await op.commit()).ok ? { value: policy } : null;
  });
}

/**
 * Updates every field but the BES (which never changes). A new storage target must be on the same
 * BES; the old and new targets' `policyCount` move in the same atomic operation. `pausedReason` is the
 * system's and is kept (invariant 8); `enabled` is the operator's.
 * Throws ValidationError (field `besId`) when the input names another BES than the policy's.
 */
export async function updatePolicy(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: PolicyUpdateInput,
  now: Date,
): Promise<Policy> {
  const data = PolicyUpdateInput.parse(input);
  return await writePolicyEdit(kv, actor, id, () => data, now);
}

/**
 * Changes only the fields `patch` names (`PATCH`): they are merged onto the policy as it is read inside the
 * update's read-check-commit loop, so two patches of different fields that race both land (the loser of the
 * commit reads the winner's policy and merges onto it). The merged policy is validated and saved exactly as
 * `updatePolicy` saves an edit, with its audit entry. Throws ValidationError naming a bad or unknown field.
 */
export async function patchPolicy(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  patch: PolicyPatchInput,
  now: Date,
): Promise<Policy> {
  const parsed = PolicyPatchInput.parse(patch) as Record<string, unknown>;
  // Only the fields the patch names: a schema may give an absent optional field a value (null).
  const fields = Object.fromEntries(Object.entries(parsed).filter(([key]) => Object.hasOwn(patch, key)));
  return await writePolicyEdit(
    kv,
    actor,
    id,
    (stored) => PolicyUpdateInput.parse({ ...policyAsInput(stored), ...fields }),
    now,
  );
}

/**
 * The write of an edit: reads the policy, asks `edit` for the validated fields given the policy as read (so a
 * partial edit merges onto this very version), and commits them checked against that version — a concurrent
 * change makes the commit fail and the loop read, merge and check again.
 */
async function writePolicyEdit(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  edit: (stored: Policy) => z.output<typeof PolicyUpdateInput>,
  now: Date,
): Promise<Policy> {
  const updated = await withRetry<Policy>(async () => {
    const entry = await kv.get<Policy>(policyKey(id));
    const policy = entry.value;
    if (!policy || !inScope(actor, policyScope(policy))) throw new NotFoundError(`Policy ${id} not found`);
    authorize(actor, "backup.manage", policyScope(policy));
    const { besId, ...data } = edit(policy);
    if (besId !== undefined && besId !== policy.besId) {
      throw new ValidationError("The BES of a policy cannot change", {
        besId: "Cannot change after creation: this policy stays on its BES",
      });
    }
    const op = kv.atomic().check(entry);
    if (data.targetId !== policy.targetId) {
      const [oldEntry, newEntry] = await kv.getMany<[TargetLike, TargetLike]>([
        targetKey(policy.targetId),
        targetKey(data.targetId),
      ]);
      const next = newEntry.value;
      for await (const r of kv.list<string>({ prefix: replicasByPolicyPrefix(id) })) {
        const rule = (await kv.get<{ targetId: string }>(replicaKey(r.value))).value;
        if (rule?.targetId === data.targetId) {
          throw new ValidationError("This policy already replicates to that target", {
            targetId: "This policy already replicates to this target; remove that replica rule first",
          });
        }
      }
      if (!next || next.besId !== policy.besId) {
        throw new ValidationError("The new storage target must be on the policy's BES", {
          targetId: "Choose a storage target of this policy's BES",
        });
      }
      op.check(oldEntry, newEntry)
        .delete(policiesByTargetKey(policy.targetId, id))
        .set(policiesByTargetKey(next.id, id), id);
      addTargetReference(op, next);
      releaseTargetReference(op, oldEntry);
    }
    // A new repository when the target, encryption or dedup changes (ENGINE.md §3): the next backup
    // of every host is a full, and the older generations stay until their points expire.
    const changes = generationChanges(policy, data);
    const generation = (policy.generation ?? 1) + (changes.length ? 1 : 0);
    const next: Policy = {
      ...policy,
      ...data,
      ...rpoOf(data, now),
      generation,
      updatedAt: now.toISOString(),
    };
    op.set(policyKey(id), next);
    setPolicyName(op, next, policy);
    appendAudit(op, actor, {
      accountId: policy.accountId,
      orgId: policy.orgId,
      action: "policy.update",
      objectType: "policy",
      objectId: id,
      summary:
        `Updated policy ${next.name}${
          policy.enabled !== next.enabled ? (next.enabled ? " (enabled)" : " (disabled)") : ""
        }` +
        (data.targetId !== policy.targetId ? "; moved to another storage target" : "") +
        (changes.length
          ? `; ${changes.join(", ")} changed: repository generation ${generation} starts ` +
            `(${repositoryOf(next).path}), its next backups are fulls`
          : ""),
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
  // Every save goes through the policy cascade (the RPO to the protected objects; idempotent), so saving
  // again finishes what a crash or a lost race left on the old RPO.
  await applyPolicySave(kv, updated, now);
  return updated;
}

/** True when a policy has a run or a restore point (then deleting it keeps it retired). */
async function hasRunsOrPoints(kv: Deno.Kv, policyId: string): Promise<boolean> {
  for (const prefix of [restorePointsByPolicyPrefix(policyId), runsByPolicyPrefix(policyId)]) {
    for await (const _ of kv.list({ prefix }, { limit: 1 })) return true;
  }
  return false;
}

/**
 * Deletes a policy and its assignments, hooks and replica rules; the target's `policyCount` drops. Its
 * restore points and repositories stay: the policy is kept retired (`retiredPolicyKey`) so that retention
 * expires them under its last settings, and its storage targets stay undeletable while they hold them.
 */
export async function deletePolicy(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<void> {
  const policy = await requirePolicy(kv, actor, id);
  authorize(actor, "backup.manage", policyScope(policy));
  await withRetry(async () => {
    const [entry, targetEntry] = await kv.getMany<[Policy, TargetLike]>([
      policyKey(id),
      targetKey(policy.targetId),
    ]);
    if (!entry.value) return { value: undefined };
    const op = releaseTargetReference(kv.atomic().check(entry, targetEntry), targetEntry);
    appendAudit(op, actor, {
      accountId: policy.accountId,
      orgId: policy.orgId,
      action: "policy.delete",
      objectType: "policy",
      objectId: id,
      summary: `Deleted policy ${policy.name} with its assignments, hooks and replica rules; ` +
        "its restore points stay until they expire under its last retention",
    }, now);
    // Its repositories stay until their restore points expire under its last retention (ENGINE.md §3):
    // retention goes on over the retired policy, which goes once no point of it is left. A policy that
    // never ran has nothing to keep (a run still in flight may yet bring a point: it counts).
    if (await hasRunsOrPoints(kv, id)) {
      op.set(retiredPolicyKey(id), { ...entry.value, deletedAt: now.toISOString() })
        .set(retiredPoliciesByAccountKey(policy.accountId, id), id);
    }
    // The policy's own keys go in this operation; its children (possibly many) are batched after.
    op.delete(policyKey(id))
      .delete(policiesByTargetKey(entry.value.targetId, id))
      .delete(policiesByBesKey(policy.besId, id))
      .delete(policiesByAccountKey(policy.accountId, id));
    deletePolicyName(op, entry.value);
    countPolicy(op, entry.value, "down");
    return (await op.commit()).ok ? { value: undefined } : null;
  });
  await deletePolicyCascade(kv, policy, now);
}
