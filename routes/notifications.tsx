/**
 * Backup > Notifications: channels (webhook, email) with a "Send test" button, routing rules, and the
 * delivery log. Viewing needs backup.view; every change needs backup.manage on the object. Secrets are
 * write-only: a generated webhook secret is shown once, nothing stored is ever rendered back.
 */
import { type Context, Hono } from "hono";
import { z } from "zod";
import { Island } from "../components/Island.tsx";
import {
  Badge,
  Csrf,
  DataTable,
  EmptyState,
  Field,
  FormActions,
  formatTime,
  FormErrors,
  PageHeader,
  Select,
  type Tone,
} from "../components/ui.tsx";
import { ALERT_SEVERITIES } from "../domain/alerts.ts";
import { SEVERITY_TONE } from "./alerts.tsx";
import type { FieldErrors } from "../domain/errors.ts";
import {
  CHANNEL_TYPE_LABELS,
  CHANNEL_TYPES,
  ChannelCreateInput,
  channelScope,
  type ChannelType,
  ChannelUpdateInput,
  createChannel,
  deleteChannel,
  displayUrl,
  type NotificationChannel,
  requireChannel,
  setChannelEnabled,
  SMTP_TLS_LABELS,
  updateChannel,
} from "../domain/notification_channels.ts";
import {
  createRule,
  deleteRule,
  NOTIFICATION_EVENTS,
  type NotificationRule,
  requireRule,
  RuleInput,
  ruleScope,
  setRuleEnabled,
  updateRule,
} from "../domain/notification_rules.ts";
import {
  DELIVERY_STATUSES,
  DeliveryFilter,
  type DeliveryStatus,
  type NotificationDelivery,
  sendTestNotification,
} from "../domain/notification_delivery.ts";
import { SMTP_TLS_MODES } from "../domain/smtp.ts";
import { type Actor, authorize, can } from "../domain/rbac.ts";
import type { Org } from "../domain/types.ts";
import CopySecret from "../islands/CopySecret.tsx";
import {
  getChannelDetail,
  getChannelUsers,
  getNotificationOrgs,
  getNotificationsOverview,
  getRuleForm,
} from "../domain/read_models/notifications.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";
import { type FormFields, list, readForm, saveForm, str } from "./forms.ts";
import { StaleCursorNotice } from "./paging.tsx";
import { confirmPage, noStore, redirectWithNotice, render } from "./render.tsx";

export const notificationRoutes = new Hono<AppEnv>();

const BASE = "/backup/notifications";
const STATUS_TONE: Record<DeliveryStatus, Tone> = { pending: "warn", delivered: "ok", failed: "bad" };

function EnabledBadge(props: { enabled: boolean }) {
  return props.enabled ? <Badge tone="ok">enabled</Badge> : <Badge tone="muted">disabled</Badge>;
}

function orgLabel(orgId: string | null, orgs: Map<string, string>): string {
  return orgId ? orgs.get(orgId) ?? "—" : "Account";
}

function destination(c: NotificationChannel): string {
  return c.type === "webhook"
    ? displayUrl(c.url)
    : `${c.host}:${c.port} (${SMTP_TLS_LABELS[c.tlsMode]}) → ${c.to.join(", ")}`;
}

async function orgMap(c: Context<AppEnv>): Promise<{ orgs: Org[]; names: Map<string, string> }> {
  const { kv, clock } = c.get("deps");
  return await getNotificationOrgs(kv, c.get("actor")!, {}, clock());
}

/** The orgs an actor may own a new channel in ("" = account-level, for all-scope managers only). */
function ownerOptions(actor: Actor, orgs: Org[]) {
  return [
    ...(actor.orgScope === "all" ? [{ value: "", label: "Account (all organizations)" }] : []),
    ...orgs.filter((o) => can(actor, "backup.manage", { accountId: o.accountId, orgId: o.id }))
      .map((o) => ({ value: o.id, label: o.name })),
  ];
}

/** One attempt's outcome in a line: HTTP status or SMTP reply, then the error. */
function attemptLine(a: NotificationDelivery["attempts"][number]): string {
  const parts = [a.ok ? "ok" : "failed"];
  if (a.httpStatus !== null) parts.push(`HTTP ${a.httpStatus}`);
  if (a.smtpReply) parts.push(`SMTP ${a.smtpReply}`);
  if (a.error) parts.push(a.error);
  return parts.join(" · ");
}

/** The confirmation page of a delete: what goes, a danger button, and the way back. */
function confirmDelete(
  c: Context<AppEnv>,
  props: { what: "channel" | "rule"; name: string; action: string; children: string },
) {
  return confirmPage(c, {
    title: `Delete ${props.what}`,
    question: `Delete ${props.name}?`,
    action: `${props.action}/delete`,
    cancel: props.action,
    label: `Delete ${props.what}`,
    inForm: <p>{props.children}</p>,
  });
}

/** Where the test button sends the user back to. */
const TestBack = z.enum(["list", "channel"]).catch("channel");

function TestButton(props: { csrf: string; channel: NotificationChannel; back: "list" | "channel" }) {
  return (
    <form method="post" action={`${BASE}/channels/${props.channel.id}/test`} class="inline">
      <Csrf token={props.csrf} />
      <input type="hidden" name="back" value={props.back} />
      <button type="submit" class="btn btn--small">Send test</button>
    </form>
  );
}

function ToggleButton(props: { csrf: string; action: string; enabled: boolean }) {
  return (
    <form method="post" action={`${props.action}/${props.enabled ? "disable" : "enable"}`} class="inline">
      <Csrf token={props.csrf} />
      <button type="submit" class="btn btn--small btn--ghost">{props.enabled ? "Disable" : "Enable"}</button>
    </form>
  );
}

function DeliveryLog(props: {
  deliveries: NotificationDelivery[];
  cursor: string;
  /** The link's cursor was refused: this is the first page. */
  staleCursor: boolean;
  filter: DeliveryFilter;
  channels: NotificationChannel[];
  action: string;
}) {
  const { filter } = props;
  const keep = Object.fromEntries(
    Object.entries({
      channelId: filter.channelId,
      status: filter.status,
      cursor: props.cursor,
      limit: filter.limit === 50 ? "" : String(filter.limit),
    }).filter(([, v]) => v !== ""),
  );
  const filtered = Boolean(filter.channelId || filter.status);
  return (
    <section class="panel" id="log">
      <h2>Delivery log</h2>
      <StaleCursorNotice show={props.staleCursor} />
      <form method="get" action={`${props.action}#log`} class="filters">
        <select name="channelId" aria-label="Channel">
          <option value="">All channels</option>
          {props.channels.map((ch) => (
            <option key={ch.id} value={ch.id} selected={filter.channelId === ch.id}>{ch.name}</option>
          ))}
        </select>
        <select name="status" aria-label="Status">
          <option value="">Any status</option>
          {DELIVERY_STATUSES.map((s) => <option key={s} value={s} selected={filter.status === s}>{s}
          </option>)}
        </select>
        <button type="submit" class="btn">Filter</button>
        {filtered && <a href={`${props.action}#log`}>Clear</a>}
      </form>
      {props.deliveries.length === 0
        ? (
          <EmptyState title={filtered ? "No deliveries match" : "Nothing sent yet"}>
            {!filtered && "Deliveries appear here when an alert opens or resolves and a rule routes it."}
          </EmptyState>
        )
        : (
          <div class="table-wrap" tabIndex={0}>
            <table class="table table--compact table--cards" data-testid="delivery-log" data-run-table>
              <thead>
                <tr>
                  <th>Created</th>
                  <th>Channel</th>
                  <th>Event</th>
                  <th>Alert</th>
                  <th>Status</th>
                  <th>Attempts</th>
                  <th>Next attempt</th>
                </tr>
              </thead>
              <tbody>
                {props.deliveries.map((d) => {
                  const last = d.attempts.at(-1);
                  return (
                    <tr key={d.id}>
                      <td data-label="Created">{formatTime(d.createdAt)}</td>
                      <td data-label="Channel">{d.channelName}</td>
                      <td data-label="Event">
                        {d.payload.event}{" "}
                        <Badge
                          tone={SEVERITY_TONE[d.payload.severity as keyof typeof SEVERITY_TONE] ?? "muted"}
                        >
                          {d.payload.severity}
                        </Badge>
                      </td>
                      <td data-label="Alert">
                        {d.payload.subject && <strong>{d.payload.subject.name}:</strong>} {d.payload.message}
                      </td>
                      <td class="cell-status" data-label="Status">
                        <div class="run-status">
                          <Badge tone={STATUS_TONE[d.status]}>{d.status}</Badge>
                          {last && !last.ok && (
                            <span class="run-error" data-testid="run-error">{attemptLine(last)}</span>
                          )}
                        </div>
                      </td>
                      <td data-label="Attempts">
                        {last
                          ? (
                            <details>
                              <summary>
                                {d.attempts.length} · {attemptLine(last)}
                              </summary>
                              <ol>
                                {d.attempts.map((a) => (
                                  <li key={a.number}>
                                    {formatTime(a.at)} ({a.durationMs} ms): {attemptLine(a)}
                                  </li>
                                ))}
                              </ol>
                            </details>
                          )
                          : "none yet"}
                      </td>
                      <td data-label="Next attempt">
                        {d.status === "pending" ? formatTime(d.nextAttemptAt) : "—"}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        )}
      {props.cursor && (
        <nav class="pager">
          <a href={"?" + new URLSearchParams(keep).toString() + "#log"}>Older deliveries →</a>
        </nav>
      )}
    </section>
  );
}

notificationRoutes.get("/", requires("backup.view"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const filter = DeliveryFilter.parse(c.req.query());
  const { channels, rules, page, staleCursor, orgNames: names } = await getNotificationsOverview(
    kv,
    actor,
    { filter },
    clock(),
  );
  const channelName = new Map(channels.map((ch) => [ch.id, ch.name]));
  const csrf = c.get("csrfToken");
  const manage = can(actor, "backup.manage");
  return render(
    c,
    "Notifications",
    (
      <>
        <PageHeader
          title="Notifications"
          subtitle="Where alerts are sent when they open and when they resolve: channels, the rules that route alerts to them, and every delivery attempt."
          actions={manage && (
            <>
              <a class="btn btn--primary" href={`${BASE}/channels/new?type=webhook`}>Add webhook</a>
              <a class="btn" href={`${BASE}/channels/new?type=email`}>Add email channel</a>
              <a class="btn" href={`${BASE}/rules/new`}>Add rule</a>
            </>
          )}
        />
        <section class="panel">
          <h2>Channels</h2>
          {channels.length === 0
            ? (
              <EmptyState title="No channels yet">
                {manage
                  ? (
                    <>
                      Add a <a href={`${BASE}/channels/new?type=webhook`}>webhook</a> or an{" "}
                      <a href={`${BASE}/channels/new?type=email`}>email channel</a>, then a rule that routes
                      alerts to it.
                    </>
                  )
                  : "Channels deliver alerts to a webhook or by email."}
              </EmptyState>
            )
            : (
              <DataTable
                class="table table--cards"
                testid="channels"
                heads={["Name", "Type", "Owner", "Destination", "Status", "Test"]}
              >
                {channels.map((ch) => (
                  <tr key={ch.id}>
                    <td data-label="Name">
                      <a href={`${BASE}/channels/${ch.id}`}>{ch.name}</a>
                    </td>
                    <td data-label="Type">{CHANNEL_TYPE_LABELS[ch.type]}</td>
                    <td data-label="Owner">{orgLabel(ch.orgId, names)}</td>
                    <td data-label="Destination">{destination(ch)}</td>
                    <td class="cell-status" data-label="Status">
                      <EnabledBadge enabled={ch.enabled} />
                    </td>
                    <td class="nowrap" data-label="Test">
                      {can(actor, "backup.manage", channelScope(ch)) && (
                        <TestButton csrf={csrf} channel={ch} back="list" />
                      )}
                    </td>
                  </tr>
                ))}
              </DataTable>
            )}
        </section>
        <section class="panel">
          <h2>Routing rules</h2>
          {rules.length === 0
            ? (
              <EmptyState title="No rules yet">
                {manage && channels.length > 0
                  ? <a href={`${BASE}/rules/new`}>Add a rule</a>
                  : "A rule sends alerts of a minimum severity, from some or all organizations, to channels."}
              </EmptyState>
            )
            : (
              <DataTable
                class="table table--cards"
                testid="rules"
                heads={["Name", "Minimum severity", "Organizations", "Events", "Channels", "Status"]}
              >
                {rules.map((r) => (
                  <tr key={r.id}>
                    <td data-label="Name">
                      <a href={`${BASE}/rules/${r.id}`}>{r.name}</a>
                    </td>
                    <td data-label="Minimum severity">
                      <Badge tone={SEVERITY_TONE[r.minSeverity]}>{r.minSeverity}</Badge>
                    </td>
                    <td data-label="Organizations">
                      {r.orgIds === "all" ? "All" : r.orgIds.map((o) => names.get(o) ?? "—").join(", ")}
                    </td>
                    <td data-label="Events">{r.events.join(", ")}</td>
                    <td data-label="Channels">
                      {r.channelIds.length
                        ? r.channelIds.map((id) => channelName.get(id) ?? "(not visible)").join(", ")
                        : "none"}
                    </td>
                    <td class="cell-status" data-label="Status">
                      <EnabledBadge enabled={r.enabled} />
                    </td>
                  </tr>
                ))}
              </DataTable>
            )}
        </section>
        <DeliveryLog
          deliveries={page.values}
          cursor={page.cursor}
          staleCursor={staleCursor}
          filter={filter}
          channels={channels}
          action={BASE}
        />
      </>
    ),
  );
});

// ---------------------------------------------------------------------------------------------------
// Channels

interface ChannelFormProps {
  csrf: string;
  action: string;
  type: ChannelType;
  values: FormFields;
  owners?: Array<{ value: string; label: string }>;
  errors?: FieldErrors;
  error?: string;
  existing?: NotificationChannel;
}

function ChannelForm(props: ChannelFormProps) {
  const v = (name: string) => str(props.values, name);
  const e = props.existing;
  const checked = (name: string, fallback = false) => (name in props.values ? v(name) === "on" : fallback);
  return (
    <form method="post" action={props.action} class="form">
      <Csrf token={props.csrf} />
      <input type="hidden" name="type" value={props.type} />
      <FormErrors message={props.error} />
      {props.errors?.type && <p class="field-error">{props.errors.type}</p>}
      <Field name="name" label="Name" value={v("name")} errors={props.errors} required />
      {props.owners && (
        <Select name="orgId" label="Owner" value={v("orgId")} errors={props.errors} options={props.owners} />
      )}
      {props.type === "webhook"
        ? (
          <>
            <Field
              name="url"
              label="URL"
              type="url"
              value={v("url")}
              errors={props.errors}
              required={!e}
              placeholder={e?.type === "webhook" ? displayUrl(e.url) : undefined}
              hint={e
                ? "Not shown, as it may carry a token. Type a new URL to replace it; leave empty to keep it."
                : "Receives a POST with a JSON body for every notification."}
            />
            <Field
              name="secret"
              label="Signing secret"
              type="password"
              errors={props.errors}
              autocomplete="new-password"
              hint={e
                ? `Stored in the vault (set ${
                  e.type === "webhook" ? formatTime(e.secretSetAt) : "—"
                }). Type a new one to replace it; leave empty to keep it.`
                : "At least 16 characters. Leave empty to generate one; it is shown once."}
            />
            {e && (
              <label class="choice">
                <input type="checkbox" name="rotateSecret" value="on" checked={checked("rotateSecret")} />
                {" "}
                Generate a new signing secret (shown once)
              </label>
            )}
          </>
        )
        : (
          <>
            <div class="grid-2">
              <Field name="host" label="SMTP host" value={v("host")} errors={props.errors} required />
              <Field
                name="port"
                label="Port"
                type="number"
                value={v("port")}
                errors={props.errors}
                hint="587 for STARTTLS, 465 for implicit TLS, 25 for plain relays"
              />
            </div>
            <Select
              name="tlsMode"
              label="TLS"
              value={v("tlsMode")}
              errors={props.errors}
              options={SMTP_TLS_MODES.map((m) => ({ value: m, label: SMTP_TLS_LABELS[m] }))}
            />
            <div class="grid-2">
              <Field
                name="username"
                label="Username (optional)"
                value={v("username")}
                errors={props.errors}
                autocomplete="off"
              />
              <Field
                name="password"
                label="Password"
                type="password"
                errors={props.errors}
                autocomplete="new-password"
                hint={e?.type === "email" && e.passwordId
                  ? "Stored in the vault. Type a new one to replace it; leave empty to keep it."
                  : "Stored encrypted in the vault; never shown again."}
              />
            </div>
            {e?.type === "email" && e.passwordId && (
              <label class="choice">
                <input type="checkbox" name="clearPassword" value="on" checked={checked("clearPassword")} />
                {" "}
                Remove the stored password
              </label>
            )}
            <Field name="from" label="From" type="email" value={v("from")} errors={props.errors} required />
            <Field
              name="to"
              label="To"
              value={v("to")}
              errors={props.errors}
              required
              hint="One or more addresses, separated by commas"
            />
          </>
        )}
      {!e && (
        <label class="choice">
          <input type="checkbox" name="enabled" value="on" checked={checked("enabled")} /> Enabled
        </label>
      )}
      <FormActions
        submit={e ? "Save changes" : "Create channel"}
        cancel={e ? `${BASE}/channels/${e.id}` : BASE}
      />
    </form>
  );
}

/** The domain input of a channel form (without owner fields). */
function channelFieldsFromForm(type: string, form: FormFields) {
  if (type === "webhook") {
    return {
      type,
      name: str(form, "name"),
      url: str(form, "url").trim(),
      secret: str(form, "secret") || undefined,
      rotateSecret: str(form, "rotateSecret") === "on",
    };
  }
  return {
    type,
    name: str(form, "name"),
    host: str(form, "host"),
    port: str(form, "port"),
    tlsMode: str(form, "tlsMode"),
    username: str(form, "username"),
    password: str(form, "password") || undefined,
    clearPassword: str(form, "clearPassword") === "on",
    from: str(form, "from").trim(),
    to: str(form, "to").split(/[,;\s]+/),
  };
}

function formFromChannel(ch: NotificationChannel): FormFields {
  // The URL may carry a token: the form never shows it (left empty, the stored one is kept).
  return ch.type === "webhook" ? { name: ch.name, url: "" } : {
    name: ch.name,
    host: ch.host,
    port: String(ch.port),
    tlsMode: ch.tlsMode,
    username: ch.username,
    from: ch.from,
    to: ch.to.join(", "),
  };
}

function channelType(value: string | undefined): ChannelType {
  return (CHANNEL_TYPES as readonly string[]).includes(value ?? "") ? value as ChannelType : "webhook";
}

async function newChannelPage(
  c: Context<AppEnv>,
  type: ChannelType,
  values: FormFields,
  errors?: FieldErrors,
  error?: string,
) {
  const { orgs } = await orgMap(c);
  const owners = ownerOptions(c.get("actor")!, orgs);
  return render(
    c,
    `Add ${CHANNEL_TYPE_LABELS[type]} channel`,
    (
      <>
        <PageHeader title={`Add ${CHANNEL_TYPE_LABELS[type]} channel`} />
        <ChannelForm
          csrf={c.get("csrfToken")}
          action={`${BASE}/channels/new`}
          type={type}
          values={values}
          owners={owners}
          errors={errors}
          error={error}
        />
      </>
    ),
    errors || error ? 422 : 200,
  );
}

/** Shows a generated signing secret, once, with how receivers verify it. */
function secretPage(c: Context<AppEnv>, channel: NotificationChannel, secret: string, created: boolean) {
  noStore(c);
  return render(
    c,
    "Signing secret",
    (
      <>
        <PageHeader title={`${created ? "Created" : "Updated"} webhook ${channel.name}`} />
        <p class="notice notice--warn">
          Copy the signing secret now: it is shown only this once and stored encrypted in the vault.
        </p>
        <Island name="CopySecret" component={CopySecret} props={{ label: "Signing secret", secret }} />
        <p class="hint">
          Each request carries <code>X-Cadres-Timestamp</code> (unix seconds) and{" "}
          <code>X-Cadres-Signature: sha256=&lt;hex&gt;</code>, the HMAC-SHA256 of{" "}
          <code>timestamp + "." + body</code> under this secret.
        </p>
        <p>
          <a class="btn" href={`${BASE}/channels/${channel.id}`}>Done</a>
        </p>
      </>
    ),
  );
}

notificationRoutes.get("/channels/new", requires("backup.manage"), async (c) => {
  // Defaults of a new email channel; a refused form shows exactly what was typed instead.
  return await newChannelPage(c, channelType(c.req.query("type")), {
    enabled: "on",
    port: "587",
    tlsMode: "starttls",
  });
});

notificationRoutes.post("/channels/new", requires("backup.manage"), async (c) => {
  const { kv, clock, masterKey } = c.get("deps");
  const actor = c.get("actor")!;
  const form = await readForm(c);
  const type = channelType(str(form, "type"));
  const input = {
    ...channelFieldsFromForm(str(form, "type"), form),
    orgId: str(form, "orgId"),
    enabled: str(form, "enabled") === "on",
  };
  return await saveForm(
    ChannelCreateInput.safeParse(input),
    async (data) => {
      const { channel, generatedSecret } = await createChannel(kv, actor, data, { now: clock(), masterKey });
      if (generatedSecret) return secretPage(c, channel, generatedSecret, true);
      return redirectWithNotice(c, `${BASE}/channels/${channel.id}`, `Channel ${channel.name} created.`);
    },
    (fields, message) => newChannelPage(c, type, form, fields, message),
  );
});

async function channelPage(
  c: Context<AppEnv>,
  channel: NotificationChannel,
  values?: FormFields,
  errors?: FieldErrors,
  error?: string,
) {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const filter = DeliveryFilter.parse({ ...c.req.query(), channelId: channel.id });
  const { page, staleCursor, orgNames: names, usedBy } = await getChannelDetail(
    kv,
    actor,
    { channel, filter },
    clock(),
  );
  const manage = can(actor, "backup.manage", channelScope(channel));
  const csrf = c.get("csrfToken");
  const action = `${BASE}/channels/${channel.id}`;
  return render(
    c,
    channel.name,
    (
      <>
        <PageHeader
          title={channel.name}
          subtitle={`${CHANNEL_TYPE_LABELS[channel.type]} · ${orgLabel(channel.orgId, names)} · created ${
            formatTime(channel.createdAt)
          }`}
          actions={
            <>
              <EnabledBadge enabled={channel.enabled} />
              {manage && <TestButton csrf={csrf} channel={channel} back="channel" />}
              {manage && <ToggleButton csrf={csrf} action={action} enabled={channel.enabled} />}
            </>
          }
        />
        <section class="panel">
          <h2>Settings</h2>
          <dl class="facts">
            {channel.type === "webhook"
              ? (
                <>
                  <dt>URL</dt>
                  <dd>{displayUrl(channel.url)}</dd>
                  <dt>Signing secret</dt>
                  <dd>in the vault, set {formatTime(channel.secretSetAt)}</dd>
                </>
              )
              : (
                <>
                  <dt>Server</dt>
                  <dd>{channel.host}:{channel.port} ({SMTP_TLS_LABELS[channel.tlsMode]})</dd>
                  <dt>Authentication</dt>
                  <dd>{channel.username ? `${channel.username}, password in the vault` : "none"}</dd>
                  <dt>From</dt>
                  <dd>{channel.from}</dd>
                  <dt>To</dt>
                  <dd>{channel.to.join(", ")}</dd>
                </>
              )}
            <dt>Used by rules</dt>
            <dd>{usedBy.length ? usedBy.join(", ") : "none"}</dd>
          </dl>
        </section>
        {manage && (
          <section class="panel">
            <h2>Edit</h2>
            <ChannelForm
              csrf={csrf}
              action={action}
              type={channel.type}
              values={values ?? formFromChannel(channel)}
              errors={errors}
              error={error}
              existing={channel}
            />
          </section>
        )}
        <DeliveryLog
          deliveries={page.values}
          cursor={page.cursor}
          staleCursor={staleCursor}
          filter={filter}
          channels={[channel]}
          action={action}
        />
        {manage && (
          <section class="panel panel--danger">
            <h2>Delete channel</h2>
            <p>Removes the channel and its vault secret, and takes it out of the rules that use it.</p>
            <a class="btn btn--danger" href={`${action}/delete`}>Delete…</a>
          </section>
        )}
      </>
    ),
    errors || error ? 422 : 200,
  );
}

notificationRoutes.get("/channels/:channelId", requires("backup.view"), async (c) => {
  const channel = await requireChannel(c.get("deps").kv, c.get("actor")!, c.req.param("channelId"));
  return await channelPage(c, channel);
});

notificationRoutes.post("/channels/:channelId", requires("backup.manage"), async (c) => {
  const { kv, clock, masterKey } = c.get("deps");
  const actor = c.get("actor")!;
  const channel = await requireChannel(kv, actor, c.req.param("channelId"));
  const form = await readForm(c);
  return await saveForm(
    ChannelUpdateInput.safeParse(channelFieldsFromForm(channel.type, form)),
    async (data) => {
      const { channel: next, generatedSecret } = await updateChannel(kv, actor, channel.id, data, {
        now: clock(),
        masterKey,
      });
      if (generatedSecret) return secretPage(c, next, generatedSecret, false);
      return redirectWithNotice(c, `${BASE}/channels/${channel.id}`, `Saved ${next.name}.`);
    },
    (fields, message) => channelPage(c, channel, form, fields, message),
  );
});

for (const [verb, enabled] of [["enable", true], ["disable", false]] as const) {
  notificationRoutes.post(`/channels/:channelId/${verb}`, requires("backup.manage"), async (c) => {
    const { kv, clock } = c.get("deps");
    const channel = await setChannelEnabled(kv, c.get("actor")!, c.req.param("channelId"), enabled, clock());
    return redirectWithNotice(
      c,
      `${BASE}/channels/${channel.id}`,
      `Channel ${channel.name} ${enabled ? "enabled" : "disabled"}.`,
    );
  });
  notificationRoutes.post(`/rules/:ruleId/${verb}`, requires("backup.manage"), async (c) => {
    const { kv, clock } = c.get("deps");
    const rule = await setRuleEnabled(kv, c.get("actor")!, c.req.param("ruleId"), enabled, clock());
    return redirectWithNotice(
      c,
      `${BASE}/rules/${rule.id}`,
      `Rule ${rule.name} ${enabled ? "enabled" : "disabled"}.`,
    );
  });
}

notificationRoutes.post("/channels/:channelId/test", requires("backup.manage"), async (c) => {
  const { kv, clock, masterKey, config } = c.get("deps");
  const actor = c.get("actor")!;
  const form = await readForm(c);
  const delivery = await sendTestNotification(kv, actor, c.req.param("channelId"), {
    now: clock(),
    masterKey,
    baseUrl: config.baseUrl,
  });
  const a = delivery.attempts[0];
  const outcome = a.ok
    ? `delivered (${a.httpStatus !== null ? `HTTP ${a.httpStatus}` : a.smtpReply ?? "ok"})`
    : `failed: ${attemptLine(a)}`;
  const back = TestBack.parse(str(form, "back")) === "list" ? BASE : `${BASE}/channels/${delivery.channelId}`;
  return redirectWithNotice(c, back, `Test notification to ${delivery.channelName} ${outcome}`);
});

notificationRoutes.get("/channels/:channelId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const channel = await requireChannel(kv, actor, c.req.param("channelId"));
  authorize(actor, "backup.manage", channelScope(channel)); // the page of a delete the POST would refuse is 403 too
  const usedBy = await getChannelUsers(kv, actor, { channel }, clock());
  return confirmDelete(c, {
    what: "channel",
    name: channel.name,
    action: `${BASE}/channels/${channel.id}`,
    children: "Removes the channel and its vault secret" +
      (usedBy.length ? `, and takes it out of the rules ${usedBy.map((r) => r.name).join(", ")}` : "") +
      ". Its delivery log stays. This cannot be undone.",
  });
});

notificationRoutes.post("/channels/:channelId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const channel = await deleteChannel(kv, c.get("actor")!, c.req.param("channelId"), clock());
  return redirectWithNotice(c, BASE, `Deleted channel ${channel.name}.`);
});

// ---------------------------------------------------------------------------------------------------
// Rules

interface RuleFormProps {
  csrf: string;
  action: string;
  actor: Actor;
  values: FormFields;
  orgs: Org[];
  channels: NotificationChannel[];
  errors?: FieldErrors;
  error?: string;
  existing?: NotificationRule;
}

function RuleForm(props: RuleFormProps) {
  const v = (name: string) => str(props.values, name);
  const many = (name: string) => list(props.values, name);
  const allScope = props.actor.orgScope === "all";
  const orgMode = v("orgMode") || (allScope ? "all" : "some");
  const err = props.errors;
  const manageable = props.orgs.filter((o) =>
    can(props.actor, "backup.manage", { accountId: o.accountId, orgId: o.id })
  );
  return (
    <form method="post" action={props.action} class="form">
      <Csrf token={props.csrf} />
      <FormErrors message={props.error} />
      <Field name="name" label="Name" value={v("name")} errors={err} required />
      <Select
        name="minSeverity"
        label="Minimum severity"
        value={v("minSeverity") || "warning"}
        errors={err}
        options={ALERT_SEVERITIES.map((s) => ({ value: s, label: `${s} and above` }))}
      />
      <fieldset class={err?.orgIds ? "field field--error" : "field"}>
        <legend>Organizations</legend>
        {allScope && (
          <label class="choice">
            <input type="radio" name="orgMode" value="all" checked={orgMode === "all"} />{" "}
            All organizations (and account-level alerts)
          </label>
        )}
        <label class="choice">
          <input type="radio" name="orgMode" value="some" checked={orgMode === "some"} /> Only these:
        </label>
        <div class="scope-list">
          {manageable.map((o) => (
            <label class="choice" key={o.id}>
              <input type="checkbox" name="orgIds" value={o.id} checked={many("orgIds").includes(o.id)} />
              {" "}
              {o.name}
            </label>
          ))}
        </div>
        {err?.orgIds && <p class="field-error">{err.orgIds}</p>}
      </fieldset>
      <fieldset class={err?.events ? "field field--error" : "field"}>
        <legend>Events</legend>
        {NOTIFICATION_EVENTS.map((e) => (
          <label class="choice" key={e}>
            <input type="checkbox" name="events" value={e} checked={many("events").includes(e)} />{" "}
            {e === "opened" ? "Alert opened" : "Alert resolved"}
          </label>
        ))}
        {err?.events && <p class="field-error">{err.events}</p>}
      </fieldset>
      <fieldset class={err?.channelIds ? "field field--error" : "field"}>
        <legend>Channels</legend>
        {props.channels.length === 0 && <p class="hint">No channels yet: add one first.</p>}
        {props.channels.map((ch) => (
          <label class="choice" key={ch.id}>
            <input
              type="checkbox"
              name="channelIds"
              value={ch.id}
              checked={many("channelIds").includes(ch.id)}
            />{" "}
            {ch.name} ({CHANNEL_TYPE_LABELS[ch.type]}
            {ch.enabled ? "" : ", disabled"})
          </label>
        ))}
        {err?.channelIds && <p class="field-error">{err.channelIds}</p>}
      </fieldset>
      <label class="choice">
        <input type="checkbox" name="enabled" value="on" checked={v("enabled") === "on"} /> Enabled
      </label>
      <FormActions
        submit={props.existing ? "Save changes" : "Create rule"}
        cancel={props.existing ? `${BASE}/rules/${props.existing.id}` : BASE}
      />
    </form>
  );
}

function ruleInputFromForm(form: FormFields) {
  return {
    name: str(form, "name"),
    minSeverity: str(form, "minSeverity"),
    orgIds: str(form, "orgMode") === "all" ? "all" : list(form, "orgIds"),
    events: list(form, "events"),
    channelIds: list(form, "channelIds"),
    enabled: str(form, "enabled") === "on",
  };
}

function formFromRule(r: NotificationRule): FormFields {
  return {
    name: r.name,
    minSeverity: r.minSeverity,
    orgMode: r.orgIds === "all" ? "all" : "some",
    orgIds: r.orgIds === "all" ? [] : r.orgIds,
    events: r.events,
    channelIds: r.channelIds,
    enabled: r.enabled ? "on" : "",
  };
}

async function newRulePage(c: Context<AppEnv>, values: FormFields, errors?: FieldErrors, error?: string) {
  const actor = c.get("actor")!;
  const { kv, clock } = c.get("deps");
  const { orgs, channels } = await getRuleForm(kv, actor, {}, clock());
  return render(
    c,
    "Add notification rule",
    (
      <>
        <PageHeader
          title="Add notification rule"
          subtitle="Alerts at or above the minimum severity, from the chosen organizations, go to every enabled channel of the rule."
        />
        <RuleForm
          csrf={c.get("csrfToken")}
          action={`${BASE}/rules/new`}
          actor={actor}
          values={values}
          orgs={orgs}
          channels={channels}
          errors={errors}
          error={error}
        />
      </>
    ),
    errors || error ? 422 : 200,
  );
}

notificationRoutes.get("/rules/new", requires("backup.manage"), async (c) => {
  return await newRulePage(c, { events: ["opened", "resolved"], enabled: "on" });
});

notificationRoutes.post("/rules/new", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const form = await readForm(c);
  return await saveForm(
    RuleInput.safeParse(ruleInputFromForm(form)),
    async (data) => {
      const rule = await createRule(kv, c.get("actor")!, data, clock());
      return redirectWithNotice(c, BASE, `Rule ${rule.name} created.`);
    },
    (fields, message) => newRulePage(c, form, fields, message),
  );
});

async function rulePage(
  c: Context<AppEnv>,
  rule: NotificationRule,
  values?: FormFields,
  errors?: FieldErrors,
  error?: string,
) {
  const actor = c.get("actor")!;
  const { kv, clock } = c.get("deps");
  const { orgs, orgNames: names, channels } = await getRuleForm(kv, actor, {}, clock());
  const channelName = new Map(channels.map((ch) => [ch.id, ch.name]));
  const manage = can(actor, "backup.manage", ruleScope(rule));
  const csrf = c.get("csrfToken");
  const action = `${BASE}/rules/${rule.id}`;
  return render(
    c,
    rule.name,
    (
      <>
        <PageHeader
          title={rule.name}
          subtitle={<>Notification rule · created {formatTime(rule.createdAt)}</>}
          actions={
            <>
              <EnabledBadge enabled={rule.enabled} />
              {manage && <ToggleButton csrf={csrf} action={action} enabled={rule.enabled} />}
            </>
          }
        />
        <section class="panel">
          <dl class="facts">
            <dt>Minimum severity</dt>
            <dd>{rule.minSeverity}</dd>
            <dt>Organizations</dt>
            <dd>{rule.orgIds === "all" ? "All" : rule.orgIds.map((o) => names.get(o) ?? "—").join(", ")}</dd>
            <dt>Events</dt>
            <dd>{rule.events.join(", ")}</dd>
            <dt>Channels</dt>
            <dd>
              {rule.channelIds.length
                ? rule.channelIds.map((id) => channelName.get(id) ?? "(not visible)").join(", ")
                : "none"}
            </dd>
          </dl>
        </section>
        {manage && (
          <>
            <section class="panel">
              <h2>Edit</h2>
              <RuleForm
                csrf={csrf}
                action={action}
                actor={actor}
                values={values ?? formFromRule(rule)}
                orgs={orgs}
                channels={channels}
                errors={errors}
                error={error}
                existing={rule}
              />
            </section>
            <section class="panel panel--danger">
              <h2>Delete rule</h2>
              <a class="btn btn--danger" href={`${action}/delete`}>Delete…</a>
            </section>
          </>
        )}
      </>
    ),
    errors || error ? 422 : 200,
  );
}

notificationRoutes.get("/rules/:ruleId", requires("backup.view"), async (c) => {
  const rule = await requireRule(c.get("deps").kv, c.get("actor")!, c.req.param("ruleId"));
  return await rulePage(c, rule);
});

notificationRoutes.post("/rules/:ruleId", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const actor = c.get("actor")!;
  const rule = await requireRule(kv, actor, c.req.param("ruleId"));
  const form = await readForm(c);
  return await saveForm(
    RuleInput.safeParse(ruleInputFromForm(form)),
    async (data) => {
      const next = await updateRule(kv, actor, rule.id, data, clock());
      return redirectWithNotice(c, `${BASE}/rules/${rule.id}`, `Saved ${next.name}.`);
    },
    (fields, message) => rulePage(c, rule, form, fields, message),
  );
});

notificationRoutes.get("/rules/:ruleId/delete", requires("backup.manage"), async (c) => {
  const rule = await requireRule(c.get("deps").kv, c.get("actor")!, c.req.param("ruleId"));
  authorize(c.get("actor")!, "backup.manage", ruleScope(rule));
  return confirmDelete(c, {
    what: "rule",
    name: rule.name,
    action: `${BASE}/rules/${rule.id}`,
    children: "Alerts stop going to this rule's channels. Deliveries already made stay in the log.",
  });
});

notificationRoutes.post("/rules/:ruleId/delete", requires("backup.manage"), async (c) => {
  const { kv, clock } = c.get("deps");
  const rule = await deleteRule(kv, c.get("actor")!, c.req.param("ruleId"), clock());
  return redirectWithNotice(c, BASE, `Deleted rule ${rule.name}.`);
});
