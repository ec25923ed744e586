/**
 * The first run: the page setup ends on (signed in, the first organization's registration secret shown
 * once, the account recovery key, the commands that start a BES and an agent on this machine, live ticks
 * as they connect, then on to the dashboard's checklist) and its GET twin at /backup/getting-started,
 * which shows the same steps without the secret (it exists only in the setup answer) and works without
 * JavaScript through its Refresh link.
 */
import { Hono } from "hono";
import { GETTING_STARTED_PATH, startCommands } from "../components/getting_started.tsx";
import { Island } from "../components/Island.tsx";
import { Csrf, formatTime, PageHeader } from "../components/ui.tsx";
import { type SetupProgress } from "../domain/getting_started.ts";
import { can } from "../domain/rbac.ts";
import { type AccountRecoveryKey } from "../domain/recovery_keys.ts";
import CopySecret from "../islands/CopySecret.tsx";
import SetupTicks from "../islands/SetupTicks.tsx";
import { getGettingStarted } from "../domain/read_models/backup_pages.ts";
import { requires } from "./access.ts";
import { RECOVERY_KEY_PATH } from "./admin_recovery_key.tsx";
import type { AppEnv } from "./env.ts";
import { noStore, render } from "./render.tsx";

export const gettingStartedRoutes = new Hono<AppEnv>();

/** The placeholder the commands carry when the secret is not on the page. */
const SECRET_PLACEHOLDER = "<ORG-SECRET>";

export interface FirstRunProps {
  csrf: string;
  baseUrl: string;
  /** The organizations whose secret an engine may register with (links to rotate one). */
  orgs: Array<{ id: string; name: string }>;
  /** The first organization's secret: only in the answer to setup, shown this once. */
  secret?: { orgName: string; value: string };
  /** Null when not created yet; undefined when the viewer may not manage it (not an all-scope admin). */
  recoveryKey: AccountRecoveryKey | null | undefined;
  progress: SetupProgress;
  manage: boolean;
  admin: boolean;
}

function Command(props: { label: string; command: string; testId: string }) {
  return (
    <div data-testid={props.testId}>
      <Island
        name="CopySecret"
        component={CopySecret}
        props={{ label: props.label, secret: props.command }}
      />
    </div>
  );
}

function RecoveryKeyStep(props: { csrf: string; recoveryKey: AccountRecoveryKey | null }) {
  const key = props.recoveryKey;
  return (
    <li class="panel" id="recovery-key" data-testid="first-run-recovery-key">
      <h2>Save the account recovery key</h2>
      <p>
        The private half of this key pair opens every repository of the account without the control plane, for
        the day the control plane is lost. It is downloaded once and Cadres never keeps it: store it offline,
        in two places.
      </p>
      {key
        ? (
          <p>
            <span aria-hidden="true">✓</span> Created {formatTime(key.createdAt)} (key id{" "}
            <code>{key.id}</code>). <a href={RECOVERY_KEY_PATH}>Details</a>
          </p>
        )
        : (
          <form method="post" action={RECOVERY_KEY_PATH} class="form">
            <Csrf token={props.csrf} />
            <button type="submit" class="btn btn--primary">Create and download the recovery key</button>
            <p class="hint">
              The file <code>cadres-recovery-key-&lt;id&gt;.pem</code> downloads; this page stays.{" "}
              <a href={RECOVERY_KEY_PATH}>More about the recovery key</a>
            </p>
          </form>
        )}
    </li>
  );
}

/** The first-run steps: recovery key, secret, the two commands, the live ticks, then the checklist. */
export function FirstRunPage(props: FirstRunProps) {
  const secret = props.secret?.value ?? SECRET_PLACEHOLDER;
  const commands = startCommands(props.baseUrl, secret);
  const p = props.progress;
  return (
    <>
      <PageHeader
        title={props.secret ? "Cadres Backup is set up" : "Getting started"}
        subtitle="Connect a backup engine (BES) and an agent, then follow the checklist to the first backup."
      />
      <ol class="first-run">
        {props.recoveryKey !== undefined && (
          <RecoveryKeyStep csrf={props.csrf} recoveryKey={props.recoveryKey} />
        )}
        <li class="panel" id="secret" data-testid="first-run-secret">
          <h2>Copy the registration secret</h2>
          {props.secret
            ? (
              <>
                <p class="notice notice--warn">
                  This is the registration secret of{" "}
                  <strong>{props.secret.orgName}</strong>. It is shown only this once: copy it now. Cadres
                  stores only its hash; engines and agents use it once, to register.
                </p>
                <Island
                  name="CopySecret"
                  component={CopySecret}
                  props={{ label: "Registration secret", secret: props.secret.value }}
                />
              </>
            )
            : (
              <p>
                Engines and agents register with their organization's secret, shown only when it is issued (at
                setup, when an organization is created, or when it is rotated). The commands below carry the
                placeholder <code>{SECRET_PLACEHOLDER}</code>. {props.admin && props.orgs.length > 0
                  ? (
                    <>
                      Without the secret at hand, issue a new one: {props.orgs.map((o, i) => (
                        <span key={o.id}>
                          {i > 0 && ", "}
                          <a href={`/admin/orgs/${o.id}/rotate`}>{o.name}</a>
                        </span>
                      ))} (engines and agents already registered keep working).
                    </>
                  )
                  : "An administrator can issue a new one."}
              </p>
            )}
        </li>
        <li class="panel" id="start-bes">
          <h2>Start a backup engine (BES) on this machine</h2>
          <p>In a terminal, from the Cadres folder:</p>
          <Command label="BES" command={commands.bes} testId="command-bes" />
          <p class="hint">
            <code>--data</code> is the folder where the BES keeps its identity and certificate. Add{" "}
            <code>--listen HOST:PORT</code> to choose the address agents reach it on.
          </p>
        </li>
        <li class="panel" id="start-agent">
          <h2>Start an agent on a machine to back up</h2>
          <p>On this machine too, for a first try:</p>
          <Command label="Agent" command={commands.agent} testId="command-agent" />
          <p class="hint">
            Add <code>--include-root PATH</code>{" "}
            (repeatable) to choose the folders the agent offers for backup.
          </p>
        </li>
        <li class="panel" id="ticks" data-testid="first-run-ticks">
          <h2>Wait for them to connect</h2>
          <Island
            name="SetupTicks"
            component={SetupTicks}
            props={{
              url: "/api/v1/dashboard/getting-started",
              initial: {
                besRegistered: p.engines.registered > 0,
                besOnline: p.engines.online > 0,
                agentEnrolled: p.hosts.enrolled,
              },
            }}
          />
          <p class="hint">
            This list updates by itself. <a href={GETTING_STARTED_PATH}>Refresh</a>
          </p>
        </li>
      </ol>
      <p>
        Then the dashboard's getting-started checklist leads on: a storage target, a policy, the host assigned
        to it, and the first backup.
      </p>
      <p>
        <a class="btn btn--primary" href="/backup/dashboard">Continue on the dashboard</a>
      </p>
    </>
  );
}

gettingStartedRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock, config } = c.get("deps");
  const actor = c.get("actor")!;
  const { progress, orgs, recoveryKey } = await getGettingStarted(kv, actor, {}, clock());
  noStore(c);
  return render(
    c,
    "Getting started",
    <FirstRunPage
      csrf={c.get("csrfToken") ?? ""}
      baseUrl={config.baseUrl}
      orgs={orgs.map((o) => ({ id: o.id, name: o.name }))}
      recoveryKey={recoveryKey}
      progress={progress}
      manage={can(actor, "backup.manage")}
      admin={can(actor, "admin")}
    />,
  );
});
