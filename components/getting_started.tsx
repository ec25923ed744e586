/**
 * The getting-started checklist (engine → storage → policy → host → first backup), ticked from real
 * data (domain/getting_started.ts), and the commands that start a BES and an agent on this machine.
 */
import type { SetupProgress, SetupStep } from "../domain/getting_started.ts";
import { SETUP_STEPS } from "../domain/getting_started.ts";

/** Where the first-run page lives once setup is over (commands, live ticks, the checklist). */
export const GETTING_STARTED_PATH = "/backup/getting-started";

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Each step's words and link; `manage` picks the "add" pages over the lists. */
function stepView(step: SetupStep, p: SetupProgress, manage: boolean) {
  switch (step) {
    case "engine":
      return {
        title: "Start a backup engine (BES)",
        href: p.done.engine ? "/backup/engines" : GETTING_STARTED_PATH,
        detail: p.done.engine
          ? `${plural(p.engines.registered, "engine")} registered, ${p.engines.online} online`
          : "Run the BES on a machine with storage; it registers with the organization's secret.",
      };
    case "storage":
      return {
        title: "Add a storage target",
        href: manage && !p.done.storage ? "/backup/storage/new" : "/backup/storage",
        detail: p.done.storage
          ? plural(p.targets, "target")
          : "Where the BES keeps the backups: a folder or a bucket.",
      };
    case "policy":
      return {
        title: "Create a backup policy",
        href: manage && !p.done.policy ? "/backup/policies/new" : "/backup/policies",
        detail: p.done.policy
          ? plural(p.policies, "policy", "policies")
          : "What to back up, when, and for how long.",
      };
    case "host":
      return {
        title: "Enroll an agent and assign its host to a policy",
        href: p.hosts.unassigned > 0 || p.done.host ? "/backup/hosts" : GETTING_STARTED_PATH,
        detail: p.done.host
          ? "A host is assigned to a policy"
          : p.hosts.unassigned > 0
          ? `${plural(p.hosts.unassigned, "host")} enrolled, not yet assigned to a policy`
          : "Run the agent on the machine to back up; then assign it on the policy's page.",
      };
    case "backup":
      return {
        title: "Run the first backup",
        href: "/backup/jobs",
        detail: p.done.backup
          ? "A restore point exists"
          : "Wait for the schedule, or use Run now on the policy's page.",
      };
  }
}

/** The checklist: one item per step, each a link, ticked from real data (text says done, not colour alone). */
export function SetupChecklist(props: { progress: SetupProgress; manage: boolean; title?: string }) {
  const p = props.progress;
  const left = SETUP_STEPS.filter((s) => !p.done[s]).length;
  return (
    <section class="panel checklist-panel" data-testid="getting-started">
      <h2>{props.title ?? "Getting started"}</h2>
      <p class="hint">
        {left === 0 ? "Every step is done." : `${left} of ${SETUP_STEPS.length} steps to go.`}
      </p>
      <ol class="checklist">
        {SETUP_STEPS.map((step) => {
          const v = stepView(step, p, props.manage);
          const done = p.done[step];
          return (
            <li key={step} class={done ? "done" : "todo"} data-step={step} data-done={String(done)}>
              <span class="check" aria-hidden="true">{done ? "✓" : "○"}</span>
              <span>
                <a href={v.href}>{v.title}</a>{" "}
                <span class="visually-hidden">{done ? "(done)" : "(to do)"}</span>
                <span class="hint">{v.detail}</span>
              </span>
            </li>
          );
        })}
      </ol>
    </section>
  );
}

/** The two commands that start a BES and an agent against this control plane. */
export function startCommands(baseUrl: string, secret: string): { bes: string; agent: string } {
  return {
    bes: `deno task bes --control-plane ${baseUrl} --secret ${secret} --data ./bes-data`,
    agent: `deno task agent --control-plane ${baseUrl} --secret ${secret} --data ./agent-data`,
  };
}
