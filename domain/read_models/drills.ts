/** Read models of Backup > Restore drills: the list, the drill form, a drill's page and one drill run. */
import {
  type DrillPolicy,
  type DrillRun,
  listDrillRuns,
  listDrills,
  requireDrill,
  requireDrillRun,
} from "../drills.ts";
import { listHosts } from "../hosts.ts";
import { listPolicies } from "../policies.ts";
import type { Actor } from "../rbac.ts";

/** Every drill the actor sees, each with its latest run. */
export async function getDrillList(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  const drills = await listDrills(kv, actor);
  const last = new Map<string, DrillRun | undefined>(
    await Promise.all(drills.map(async (d) => [d.id, (await listDrillRuns(kv, actor, d.id, 1))[0]] as const)),
  );
  return { drills, last };
}

/** The drill form's choices: the policies, and the hosts in service. */
export async function getDrillForm(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  const [policies, hosts] = await Promise.all([
    listPolicies(kv, actor),
    listHosts(kv, actor, { limit: 200 }),
  ]);
  return { policies, hosts: hosts.values.filter((h) => h.status !== "decommissioned") };
}

/** A drill's page: the drill, its runs and the names of the policies. */
export async function getDrillDetail(kv: Deno.Kv, actor: Actor, params: { drillId: string }, _now: Date) {
  const drill = await requireDrill(kv, actor, params.drillId);
  const runs = await listDrillRuns(kv, actor, drill.id);
  const policyNames = new Map((await listPolicies(kv, actor)).map((p) => [p.id, p.name]));
  return { drill, runs, policyNames };
}

/** One run of a drill; null when the run belongs to another drill. */
export async function getDrillRun(
  kv: Deno.Kv,
  actor: Actor,
  params: { drillId: string; drillRunId: string },
  _now: Date,
): Promise<{ drill: DrillPolicy; run: DrillRun } | null> {
  const drill = await requireDrill(kv, actor, params.drillId);
  const run = await requireDrillRun(kv, actor, params.drillRunId);
  return run.drillId === drill.id ? { drill, run } : null;
}
