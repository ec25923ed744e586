/**
 * Changes to one host assignment of a policy (mounted at /backup/assignments): its state, and removing
 * it (asked first).
 */
import { Hono } from "hono";
import { ConfirmForm, PageHeader } from "../components/ui.tsx";
import {
  AssignmentStateInput,
  removeAssignment,
  requireAssignment,
  setAssignmentState,
} from "../domain/assignments.ts";
import { getAssignmentRemove } from "../domain/read_models/policy_detail.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { readForm, str } from "./forms.ts";
import { redirectWithNotice } from "./render.tsx";

export const assignmentRoutes = new Hono<AppEnv>();

assignmentRoutes.post("/:assignmentId/state", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { assignment } = await requireAssignment(kv, actor, c.req.param("assignmentId"));
  const form = await readForm(c);
  // The body schema of PATCH /api/v1/assignments/{id}.
  const parsed = AssignmentStateInput.safeParse({ state: str(form, "state") });
  if (!parsed.success) {
    return redirectWithNotice(
      c,
      `/backup/policies/${assignment.policyId}#hosts`,
      "Choose active, paused or archived.",
    );
  }
  await setAssignmentState(kv, actor, assignment.id, parsed.data.state, clock());
  return redirectWithNotice(
    c,
    `/backup/policies/${assignment.policyId}#hosts`,
    `Assignment set to ${parsed.data.state}.`,
  );
});

/** Removing a host from a policy asks first: what stops, what is kept, and the pause alternative. */
assignmentRoutes.get("/:assignmentId/remove", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const { assignment, host, policy } = await getAssignmentRemove(
    kv,
    c.get("actor")!,
    { assignmentId: c.req.param("assignmentId") },
    clock(),
  );
  const back = `/backup/policies/${policy.id}#hosts`;
  const { render } = await import("./render.tsx");
  return render(
    c,
    "Remove host from policy",
    <>
      <PageHeader title={`Remove ${host.hostname} from ${policy.name}?`} />
      <section class="panel" data-testid="remove-assignment">
        <p>
          The scheduler stops backing up {host.hostname} under{" "}
          {policy.name}. Its restore points are kept, browsable and restorable, until the policy's retention
          expires them; assigning the host again later continues its protected object.
        </p>
        {assignment.state === "active" && (
          <p class="hint">
            To stop backups for a while instead, set the assignment to <strong>paused</strong>{" "}
            on the policy page.
          </p>
        )}
        <ConfirmForm
          action={`/backup/assignments/${assignment.id}/remove`}
          cancel={back}
          csrf={c.get("csrfToken")}
          label={`Remove ${host.hostname}`}
        />
      </section>
    </>,
  );
});

assignmentRoutes.post("/:assignmentId/remove", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const { assignment, host } = await requireAssignment(kv, actor, c.req.param("assignmentId"));
  await removeAssignment(kv, actor, assignment.id, clock());
  return redirectWithNotice(
    c,
    `/backup/policies/${assignment.policyId}#hosts`,
    `${host.hostname} removed; its restore points are kept.`,
  );
});
