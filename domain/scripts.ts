/**
 * The script library: named scripts of an organization (or of the account, `orgId: null`) that custom
 * application-consistent hooks run. Names are unique per organization, case-insensitively. A script
 * that a hook uses cannot be deleted; hooks.ts touches the script entry whenever a hook starts using
 * it, so a delete that raced with such a hook fails its check and looks again. A new body is checked
 * against the hooks that run it (`checkScriptBodyFitsHooks`, imported from hooks.ts, which imports
 * this module's types only).
 */
import {
  hookKey,
  hooksByScriptKey,
  hooksByScriptPrefix,
  scriptByNameKey,
  scriptKey,
  scriptsByAccountKey,
  scriptsByAccountPrefix,
} from "./keys/policies.ts";
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { checkScriptBodyFitsHooks } from "./hooks.ts";
import { newId } from "./ids.ts";
import { getManyValues, type Page, withRetry } from "./kv.ts";
import { pageOf, PageQuery } from "./paging.ts";
import type { PolicyCore } from "./policies.ts";
import { policyKey } from "./policy_keys.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import { resolveOwner } from "./tenancy.ts";
import { DisplayName } from "./validation.ts";
export { hooksByScriptKey, scriptKey, scriptsByAccountKey };

/** Interpreters an agent can run a script with. */
export const INTERPRETERS = ["bash", "sh", "powershell", "python"] as const;
export type Interpreter = (typeof INTERPRETERS)[number];
export const INTERPRETER_LABELS: Record<Interpreter, string> = {
  bash: "Bash",
  sh: "POSIX sh",
  powershell: "PowerShell",
  python: "Python",
};

/**
 * Longest script body, in UTF-16 code units. KV values are capped at 64 KiB and V8 stores a
 * non-Latin-1 string with 2 bytes per unit, so 32000 leaves room for the other fields.
 */
export const MAX_SCRIPT_CHARS = 32_000;

export interface Script {
  id: string;
  accountId: string;
  /** null: an account-level script, usable by account-level policies (those of account-scoped BES). */
  orgId: string | null;
  name: string;
  interpreter: Interpreter;
  body: string;
  createdAt: string;
  updatedAt: string;
}

/** Every key of a script (primary and indexes), so create, update and delete touch the same set. */
function scriptKeys(s: Pick<Script, "id" | "accountId" | "orgId" | "name">): Deno.KvKey[] {
  return [
    scriptKey(s.id),
    scriptsByAccountKey(s.accountId, s.id),
    scriptByNameKey(s.accountId, s.orgId, s.name),
  ];
}

export function scriptScope(s: Pick<Script, "accountId" | "orgId">) {
  return { accountId: s.accountId, orgId: s.orgId };
}

const ScriptBody = z.string({ error: "is required" })
  .refine((v) => v.trim().length > 0, "is required")
  .refine((v) => v.length <= MAX_SCRIPT_CHARS, `must be at most ${MAX_SCRIPT_CHARS} characters`)
  .refine((v) => !v.includes("\0"), "must not contain NUL characters");

/** The editable fields of a script (its organization is set once, at creation). Strict: unknown fields are refused. */
export const ScriptFields = z.object({
  name: DisplayName,
  interpreter: z.enum(INTERPRETERS, { error: `must be one of ${INTERPRETERS.join(", ")}` }),
  body: ScriptBody,
}).strict();
export type ScriptUpdateInput = z.input<typeof ScriptFields>;

/** A new script as the Scripts page's form and `POST /api/v1/scripts` send it: its fields and its organization. */
export const ScriptCreateFields = ScriptFields.extend({
  /** The owning organization; null (or "") for an account-level script. */
  orgId: z.union([z.literal("").transform(() => null), z.string().max(40)]).nullable().default(null),
});
export type ScriptCreateFields = z.input<typeof ScriptCreateFields>;

/** The input of `createScript`: the create fields, and the account for system actors. */
export const ScriptCreateInput = ScriptCreateFields.extend({
  /** Needed only for system actors (CLI, jobs); users create in their own account. */
  accountId: z.string().max(40).optional(),
});
export type ScriptCreateInput = z.input<typeof ScriptCreateInput>;

export const ScriptFilter = z.object({
  /** Case-insensitive substring of the name. */
  q: z.string().trim().max(200).catch(""),
  /** Only this organization's scripts; "" for all in scope. */
  orgId: z.string().max(40).catch(""),
});
export type ScriptFilter = Partial<z.infer<typeof ScriptFilter>>;

/** The same filters as a strict query with a cursor (`GET /api/v1/scripts`): unknown fields are refused. */
export const ScriptQuery = z.object({
  q: z.string().trim().max(200, "must be at most 200 characters").default(""),
  orgId: z.string().max(40, "must be an organization id").default(""),
}).extend(PageQuery.shape).strict();
export type ScriptQuery = z.input<typeof ScriptQuery>;

export async function getScript(kv: Deno.Kv, id: string): Promise<Script | null> {
  return (await kv.get<Script>(scriptKey(id))).value;
}

/** Returns the script if the actor may see it; throws NotFoundError otherwise. */
export async function requireScript(kv: Deno.Kv, actor: Actor, id: string): Promise<Script> {
  const s = await getScript(kv, id);
  if (!s || !inScope(actor, scriptScope(s))) throw new NotFoundError(`Script ${id} not found`);
  return s;
}

/** Scripts of the actor's account in scope, by name; `q` searches names, `orgId` narrows to one org. */
export async function listScripts(kv: Deno.Kv, actor: Actor, filter: ScriptFilter = {}): Promise<Script[]> {
  if (!actor.accountId) return [];
  const { q, orgId } = ScriptFilter.parse(filter);
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: scriptsByAccountPrefix(actor.accountId) })) {
    keys.push(scriptKey(e.value));
  }
  const needle = q.toLowerCase();
  return (await getManyValues<Script>(kv, keys)).filter((s) =>
    inScope(actor, scriptScope(s)) && (!orgId || s.orgId === orgId) &&
    (!needle || s.name.toLowerCase().includes(needle))
  ).sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * The scripts of `listScripts` (same filters, by name) a page at a time, for the API. Throws ZodError
 * for a bad query, InvalidCursorError for a cursor of another list.
 */
export async function listScriptsPage(kv: Deno.Kv, actor: Actor, query: ScriptQuery): Promise<Page<Script>> {
  const { q, orgId, cursor, limit } = ScriptQuery.parse(query);
  return pageOf(await listScripts(kv, actor, { q, orgId }), {
    list: "scripts",
    key: (s) => [s.name, s.id],
    cursor,
    limit,
  });
}

/** A script with the names of the policies whose hooks run it. Throws NotFoundError like `requireScript`. */
export async function requireScriptDetail(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
): Promise<Script & { usedBy: string[] }> {
  const script = await requireScript(kv, actor, id);
  return { ...script, usedBy: (await scriptUsage(kv, id)).policyNames };
}

function duplicateName(name: string): ValidationError {
  return new ValidationError(`A script named ${name} already exists in this organization`, {
    name: "is already used by another script of this organization",
  });
}

/**
 * Creates a script in an organization (or at the account level). Needs backup.manage there. Throws
 * ValidationError for an unknown organization or a name already used in it.
 */
export async function createScript(
  kv: Deno.Kv,
  actor: Actor,
  input: ScriptCreateInput,
  now: Date,
): Promise<Script> {
  const data = ScriptCreateInput.parse(input);
  const { accountId, orgEntry } = await resolveOwner(kv, actor, data);
  const scope = { accountId, orgId: data.orgId };
  authorize(actor, "backup.manage", scope);
  const at = now.toISOString();
  const script: Script = {
    id: newId(now),
    accountId,
    orgId: data.orgId,
    name: data.name,
    interpreter: data.interpreter,
    body: data.body,
    createdAt: at,
    updatedAt: at,
  };
  const [primary, byAccount, byName] = scriptKeys(script);
  const op = kv.atomic()
    .check({ key: byName, versionstamp: null })
    .set(primary, script)
    .set(byAccount, script.id)
    .set(byName, script.id);
  if (orgEntry) op.check(orgEntry); // the org is not deleted under the new script
  appendAudit(op, actor, {
    ...scope,
    action: "script.create",
    objectType: "script",
    objectId: script.id,
    summary: `Created ${INTERPRETER_LABELS[script.interpreter]} script ${script.name}`,
  }, now);
  if (!(await op.commit()).ok) {
    if ((await kv.get(byName)).value !== null) throw duplicateName(script.name);
    throw new ConflictError("The organization was changed at the same time; try again");
  }
  return script;
}

/** Updates a script's name, interpreter and body. Needs backup.manage. Throws on a duplicate name. */
export async function updateScript(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: ScriptUpdateInput,
  now: Date,
): Promise<Script> {
  const data = ScriptFields.parse(input);
  return await withRetry(async () => {
    const entry = await kv.get<Script>(scriptKey(id));
    const script = entry.value;
    if (!script || !inScope(actor, scriptScope(script))) throw new NotFoundError(`Script ${id} not found`);
    authorize(actor, "backup.manage", scriptScope(script));
    const next: Script = { ...script, ...data, updatedAt: now.toISOString() };
    if (next.body !== script.body) await checkScriptBodyFitsHooks(kv, next);
    const op = kv.atomic().check(entry).set(scriptKey(id), next);
    const oldName = scriptByNameKey(script.accountId, script.orgId, script.name);
    const newName = scriptByNameKey(script.accountId, script.orgId, next.name);
    if (oldName[3] !== newName[3]) {
      const taken = await kv.get<string>(newName);
      if (taken.value !== null && taken.value !== id) throw duplicateName(next.name);
      op.check(taken).delete(oldName).set(newName, id);
    }
    appendAudit(op, actor, {
      ...scriptScope(script),
      action: "script.update",
      objectType: "script",
      objectId: id,
      summary: `Updated script ${next.name}` + (script.name !== next.name ? ` (was ${script.name})` : ""),
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
}

/** A hook as far as the script library cares. */
export interface HookRef {
  id: string;
  policyId: string;
}

/**
 * The hooks that run a script and the names of their policies. Hooks whose policy is gone are
 * returned apart as `stale` (a policy delete removes only the policy's hook index; see hooks.ts);
 * `pointers` are the script's index keys.
 */
export async function scriptUsage(
  kv: Deno.Kv,
  scriptId: string,
): Promise<{ hookIds: string[]; policyNames: string[]; stale: HookRef[]; pointers: Deno.KvKey[] }> {
  const hookKeys: Deno.KvKey[] = [];
  const pointers: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: hooksByScriptPrefix(scriptId) })) {
    pointers.push(e.key);
    hookKeys.push(hookKey(e.value));
  }
  const hooks = await getManyValues<HookRef>(kv, hookKeys);
  const policies = await getManyValues<PolicyCore>(
    kv,
    [...new Set(hooks.map((h) => h.policyId))].map(policyKey),
  );
  const live = new Map(policies.map((p) => [p.id, p.name]));
  const used = hooks.filter((h) => live.has(h.policyId));
  return {
    hookIds: used.map((h) => h.id),
    policyNames: [...new Set(used.map((h) => live.get(h.policyId)!))].sort((a, b) => a.localeCompare(b)),
    stale: hooks.filter((h) => !live.has(h.policyId)),
    pointers,
  };
}

/**
 * Deletes a script. Refused (ConflictError naming the policies) while a hook runs it. Hooks left
 * behind by deleted policies are removed with it.
 */
export async function deleteScript(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<void> {
  await withRetry(async () => {
    const entry = await kv.get<Script>(scriptKey(id));
    const script = entry.value;
    if (!script || !inScope(actor, scriptScope(script))) throw new NotFoundError(`Script ${id} not found`);
    authorize(actor, "backup.manage", scriptScope(script));
    const usage = await scriptUsage(kv, id);
    if (usage.hookIds.length) {
      throw new ConflictError(
        `Script ${script.name} is used by hooks of ${
          usage.policyNames.join(", ")
        }. Remove those hooks first.`,
      );
    }
    // A hook that starts using the script rewrites its entry, so this check fails and we look again.
    const op = kv.atomic().check(entry);
    for (const key of scriptKeys(script)) op.delete(key);
    // Nothing live points here any more: drop the pointers and the hooks of deleted policies (bounded;
    // sweepOrphanHooks in hooks.ts removes any rest).
    for (const key of usage.pointers.slice(0, 400)) op.delete(key);
    for (const hook of usage.stale.slice(0, 400)) op.delete(hookKey(hook.id));
    appendAudit(op, actor, {
      ...scriptScope(script),
      action: "script.delete",
      objectType: "script",
      objectId: id,
      summary: `Deleted script ${script.name}`,
    }, now);
    return (await op.commit()).ok ? { value: undefined } : null;
  });
}
