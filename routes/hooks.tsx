/**
 * Changes to one app hook of a policy (mounted at /backup/hooks), and the hook form helpers that the
 * policy's Add Hook form (routes/policy_sections.tsx) shares.
 */
import { type Context, Hono } from "hono";
import { ConfirmForm, PageHeader } from "../components/ui.tsx";
import { ConflictError, ValidationError } from "../domain/errors.ts";
import { deleteHook, HOOK_TYPE_LABELS, HookFields, requireHook, updateHook } from "../domain/hooks.ts";
import { type Policy, requirePolicy } from "../domain/policies.ts";
import { listScripts } from "../domain/scripts.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors, readForm, str } from "./forms.ts";
import { redirectWithNotice } from "./render.tsx";

import type { HookDraft, HookFormValues } from "./policy_sections.tsx";

export const hookRoutes = new Hono<AppEnv>();

/** The hook form as typed, and the domain input (the script picked by name from the library). */
export async function hookInput(c: Context<AppEnv>, accountId: string, orgId: string | null) {
  const form = await readForm(c);
  const values: HookFormValues = {
    type: str(form, "type"),
    template: str(form, "template"),
    scriptName: str(form, "scriptName"),
    timeoutSeconds: str(form, "timeoutSeconds"),
    sequence: str(form, "sequence"),
    failOnError: str(form, "failOnError") === "on",
  };
  let scriptId: string | null = null;
  if (!values.template && values.scriptName.trim()) {
    const name = values.scriptName.trim().toLowerCase();
    const scripts = await listScripts(c.get("deps").kv, c.get("actor")!);
    scriptId = scripts.find((s) =>
      s.name.toLowerCase() === name && s.accountId === accountId && s.orgId === orgId
    )?.id ??
      null;
  }
  const input = {
    type: values.type,
    template: values.template,
    scriptId: scriptId ?? "",
    timeoutSeconds: values.timeoutSeconds || undefined,
    sequence: values.sequence || undefined,
    failOnError: values.failOnError,
  };
  const unknownScript = !values.template && values.scriptName.trim() && !scriptId;
  return { values, input, unknownScript };
}

/** Re-renders the policy's edit page with the refused hook form, its errors and what was typed. */
export async function refusedHook(c: Context<AppEnv>, policy: Policy, draft: HookDraft) {
  const { renderPolicyEdit } = await import("./policies.tsx");
  return await renderPolicyEdit(c, policy, draft);
}

export function errorsOf(e: unknown): Record<string, string> {
  if (e instanceof ValidationError) return Object.keys(e.fields).length ? e.fields : { form: e.message };
  if (e instanceof ConflictError) return { form: e.message };
  throw e;
}

hookRoutes.post("/:hookId", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const hook = await requireHook(kv, actor, c.req.param("hookId"));
  const policy = await requirePolicy(kv, actor, hook.policyId);
  const { values, input, unknownScript } = await hookInput(c, hook.accountId, hook.orgId);
  const parsed = HookFields.safeParse(input);
  if (unknownScript) {
    return await refusedHook(c, policy, {
      hookId: hook.id,
      values,
      errors: { scriptId: "No script of this organization has that name" },
    });
  }
  if (!parsed.success) {
    return await refusedHook(c, policy, { hookId: hook.id, values, errors: fieldErrors(parsed.error) });
  }
  try {
    await updateHook(kv, actor, hook.id, parsed.data, clock());
  } catch (e) {
    return await refusedHook(c, policy, { hookId: hook.id, values, errors: errorsOf(e) });
  }
  return redirectWithNotice(c, `/backup/policies/${hook.policyId}/edit#hooks`, "Hook saved.");
});

hookRoutes.get("/:hookId/delete", requires("backup.manage"), async (c) => {
  const { kv } = c.get("deps");
  const hook = await requireHook(kv, c.get("actor")!, c.req.param("hookId"));
  const { render } = await import("./render.tsx");
  return render(
    c,
    "Delete hook",
    (
      <>
        <PageHeader title={`Delete this ${HOOK_TYPE_LABELS[hook.type]} hook?`} />
        <ConfirmForm
          action={`/backup/hooks/${hook.id}/delete`}
          cancel={`/backup/policies/${hook.policyId}/edit#hooks`}
          csrf={c.get("csrfToken")}
          label="Delete hook"
        />
      </>
    ),
  );
});

hookRoutes.post("/:hookId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const hook = await requireHook(kv, actor, c.req.param("hookId"));
  await deleteHook(kv, actor, hook.id, clock());
  return redirectWithNotice(c, `/backup/policies/${hook.policyId}/edit#hooks`, "Hook deleted.");
});
