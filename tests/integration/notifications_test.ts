/**
 * Alert notifications end to end: the outbox → dispatcher → delivery job table → real loopback
 * receivers (a Deno.serve webhook verifying signatures with WebCrypto, an smtp-server instance with
 * AUTH and TLS), retries with backoff, leases, routing, the pages with their permissions, audit and
 * the rule that no secret is ever rendered.
 */
import assert from "node:assert/strict";
import { SMTPServer } from "smtp-server";
import {
  type Alert,
  type AlertReason,
  raiseAlert,
  readOpenAlert,
  resolveAlert,
} from "../../domain/alerts.ts";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { type ChannelCreateInput, createChannel } from "../../domain/notification_channels.ts";
import {
  deliverDue,
  dispatchAlertEvents,
  LEASE_MS,
  listDeliveries,
  type NotificationDelivery,
} from "../../domain/notification_delivery.ts";
import {
  createRule,
  type NotificationRule,
  type RuleInput,
  updateRule,
} from "../../domain/notification_rules.ts";
import type { Actor } from "../../domain/rbac.ts";
import { smtpConnector } from "../../domain/smtp.ts";
import type { VaultRecord } from "../../domain/vault.ts";
import { deliverNotifications } from "../../jobs/deliver_notifications.ts";
import {
  addUser,
  assertExcludes,
  assertIncludes,
  auditEntries,
  Browser,
  createTenant,
  freePort,
  signInAs,
  type Tenant,
  testApp,
  TestClock,
} from "../helpers.ts";

const T0 = new Date("2026-11-22T10:00:00Z");
const MIN = 60_000;
const at = (ms: number) => new Date(T0.getTime() + ms);
const MASTER_KEY = testConfig().masterKey!;
const SEND = { masterKey: MASTER_KEY };
const SECRET = "whsec_known-test-secret-0123456789";

// ---------------------------------------------------------------------------------------------------
// Fixtures and loopback servers

interface Fixture {
  tenant: Tenant;
  opsId: string;
  devId: string;
  admin: Actor;
}

async function fixture(kv: Deno.Kv): Promise<Fixture> {
  const tenant = await createTenant(kv, "Acme", ["Ops", "Dev"], T0);
  const admin = userActor(await addUser(kv, tenant, "admin@acme.example", "admin", "all", T0));
  return { tenant, opsId: tenant.orgs[0].id, devId: tenant.orgs[1].id, admin };
}

async function webhook(kv: Deno.Kv, fx: Fixture, url: string, overrides: Partial<ChannelCreateInput> = {}) {
  const { channel } = await createChannel(kv, fx.admin, {
    type: "webhook",
    name: "ops hook",
    url,
    secret: SECRET,
    ...overrides,
  } as ChannelCreateInput, { now: T0, masterKey: MASTER_KEY });
  return channel;
}

async function rule(
  kv: Deno.Kv,
  fx: Fixture,
  channelIds: string[],
  overrides: Partial<RuleInput> = {},
): Promise<NotificationRule> {
  return await createRule(kv, fx.admin, {
    name: "everything",
    minSeverity: "info",
    orgIds: "all",
    events: ["opened", "resolved"],
    channelIds,
    ...overrides,
  }, T0);
}

interface AlertSpec {
  orgId?: string | null;
  severity?: Alert["severity"];
  subjectId?: string;
  reason?: AlertReason;
}

/** Raises an alert the way the domain does (in an atomic op, which also writes the outbox event). */
async function raise(kv: Deno.Kv, fx: Fixture, spec: AlertSpec, now = T0): Promise<Alert> {
  const subjectId = spec.subjectId ?? "bes-1";
  const reason = spec.reason ?? "engine_offline";
  const op = kv.atomic();
  const alert = raiseAlert(op, await readOpenAlert(kv, "engine", subjectId, reason), {
    accountId: fx.tenant.account.id,
    orgId: spec.orgId === undefined ? fx.opsId : spec.orgId,
    subjectType: "engine",
    subjectId,
    subjectName: subjectId,
    reason,
    severity: spec.severity ?? "critical",
    message: `BES ${subjectId} missed its heartbeats`,
  }, now);
  assert.ok((await op.commit()).ok);
  return alert;
}

async function resolve(kv: Deno.Kv, subjectId: string, now: Date): Promise<void> {
  const op = kv.atomic();
  assert.ok(resolveAlert(op, await readOpenAlert(kv, "engine", subjectId, "engine_offline"), now));
  assert.ok((await op.commit()).ok);
}

async function deliveries(kv: Deno.Kv): Promise<NotificationDelivery[]> {
  const out: NotificationDelivery[] = [];
  for await (const e of kv.list<NotificationDelivery>({ prefix: ["notification_deliveries"] })) {
    out.push(e.value);
  }
  return out;
}

async function countPrefix(kv: Deno.Kv, prefix: string): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix: [prefix] })) n++;
  return n;
}

interface Received {
  headers: Headers;
  body: string;
}

/** A webhook receiver on 127.0.0.1: records each request and answers `respond(n)` (1-based). */
function receiver(respond: (n: number) => number | Promise<number> = () => 200) {
  const requests: Received[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    requests.push({ headers: req.headers, body: await req.text() });
    const status = await respond(requests.length);
    return new Response(status === 204 ? null : status < 300 ? "thanks" : "receiver says no", { status });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/hooks/T0K3N-in-path`,
    requests,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/** Verifies a request's signature the way a receiver would: WebCrypto HMAC over `timestamp.body`. */
async function verifySignature(req: Received, secret = SECRET): Promise<boolean> {
  const timestamp = req.headers.get("x-cadres-timestamp") ?? "";
  const header = req.headers.get("x-cadres-signature") ?? "";
  const match = /^sha256=([0-9a-f]{64})$/.exec(header);
  if (!match) return false;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  const mac = Uint8Array.from(match[1].match(/../g)!, (h) => parseInt(h, 16));
  return await crypto.subtle.verify("HMAC", key, mac, new TextEncoder().encode(`${timestamp}.${req.body}`));
}

interface Mail {
  from: string;
  to: string[];
  secure: boolean;
  user: string | null;
  headers: Record<string, string>;
  body: string;
}

/** An smtp-server instance on 127.0.0.1; with `auth`, AUTH is required and checked. */
async function smtpServer(
  options: { auth?: { username: string; password: string }; secure?: boolean; key?: string; cert?: string } =
    {},
) {
  const mails: Mail[] = [];
  const logins: Array<{ username: string; password: string }> = [];
  const server = new SMTPServer({
    secure: options.secure ?? false,
    key: options.key,
    cert: options.cert,
    logger: false,
    banner: "Cadres test SMTP",
    disabledCommands: options.key ? [] : ["STARTTLS"],
    authOptional: !options.auth,
    allowInsecureAuth: true,
    onAuth(auth, _session, callback) {
      logins.push({ username: auth.username ?? "", password: auth.password ?? "" });
      const ok = auth.username === options.auth?.username && auth.password === options.auth?.password;
      if (ok) callback(null, { user: auth.username });
      else callback(new Error("Invalid username or password"));
    },
    onData(stream, session, callback) {
      const chunks: Uint8Array[] = [];
      stream.on("data", (chunk: Uint8Array) => chunks.push(chunk));
      stream.on("end", () => {
        const raw = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
        const [head, ...rest] = raw.split("\r\n\r\n");
        const headers: Record<string, string> = {};
        for (const line of head.replace(/\r\n[ \t]+/g, " ").split("\r\n")) {
          const i = line.indexOf(":");
          headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
        }
        mails.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((r: { address: string }) => r.address),
          secure: session.secure,
          user: typeof session.user === "string" ? session.user : null,
          headers,
          body: rest.join("\r\n\r\n"),
        });
        callback(null, "OK: queued as test");
      });
    },
  });
  // A client refusing the certificate is an expected event here, not a crash.
  const errors: string[] = [];
  server.on("error", (error) => errors.push(error.message));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    errors,
    port: (server.server.address() as { port: number }).port,
    mails,
    logins,
    async [Symbol.asyncDispose]() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Decodes an RFC 2047 `=?UTF-8?B?…?=` header (or returns it as is). */
function decodeHeader(value: string): string {
  return value.replace(
    /=\?UTF-8\?B\?([^?]*)\?=\s*/g,
    (_, b64: string) => new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))),
  );
}

/** A CA and a server certificate for 127.0.0.1, made with openssl (null when openssl is missing). */
async function testCertificates(): Promise<{ ca: string; key: string; cert: string } | null> {
  const dir = await Deno.makeTempDir({ prefix: "cadres-smtp-tls-" });
  const run = async (args: string[]) =>
    (await new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "null" }).output()).success;
  try {
    await Deno.writeTextFile(
      `${dir}/ext.cnf`,
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    const ok = await run([
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      "2",
      "-subj",
      "/CN=Cadres Test CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign",
    ]) &&
      await run([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
      ]) &&
      await run([
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
      ]);
    if (!ok) return null;
    return {
      ca: await Deno.readTextFile(`${dir}/ca.pem`),
      key: await Deno.readTextFile(`${dir}/key.pem`),
      cert: await Deno.readTextFile(`${dir}/cert.pem`),
    };
  } catch {
    return null; // no openssl on this machine
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// ---------------------------------------------------------------------------------------------------
// Webhooks: signature, retries, leases

Deno.test("an opened alert reaches a webhook whose receiver verifies the HMAC signature", async () => {
  using kv = await Deno.openKv(":memory:");
  await using hook = receiver();
  const fx = await fixture(kv);
  const channel = await webhook(kv, fx, hook.url);
  await rule(kv, fx, [channel.id]);
  const alert = await raise(kv, fx, {});
  assert.equal(await countPrefix(kv, "alert_events"), 1);

  assert.deepEqual(await dispatchAlertEvents(kv, T0), { events: 1, deliveries: 1 });
  assert.equal(await countPrefix(kv, "alert_events"), 0, "the outbox event is consumed");
  assert.deepEqual(await dispatchAlertEvents(kv, T0), { events: 0, deliveries: 0 });

  const sent = await deliverDue(kv, at(5_000), { ...SEND, baseUrl: "https://cadres.example" });
  assert.deepEqual(sent, { attempted: 1, delivered: 1, retrying: 0, failed: 0 });
  assert.equal(hook.requests.length, 1);
  const req = hook.requests[0];
  assert.equal(req.headers.get("content-type"), "application/json");
  assert.equal(req.headers.get("x-cadres-timestamp"), String(Math.floor(at(5_000).getTime() / 1000)));
  assert.ok(await verifySignature(req), "the signature verifies with the channel's secret");
  assert.ok(!(await verifySignature(req, "whsec_some-other-secret-000000")), "and not with another");
  assert.ok(
    !(await verifySignature({ ...req, body: req.body.replace("critical", "info") })),
    "tampering shows",
  );
  const body = JSON.parse(req.body);
  const [delivery] = await deliveries(kv);
  assert.equal(req.headers.get("x-cadres-delivery"), delivery.id);
  assert.deepEqual(
    {
      deliveryId: body.deliveryId,
      event: body.event,
      alertId: body.alertId,
      subject: body.subject,
      reason: body.reason,
      severity: body.severity,
      count: body.count,
      occurredAt: body.occurredAt,
      openedAt: body.openedAt,
      resolvedAt: body.resolvedAt,
      sentAt: body.sentAt,
      attempt: body.attempt,
      url: body.url,
    },
    {
      deliveryId: delivery.id,
      event: "opened",
      alertId: alert.id,
      subject: { type: "engine", id: "bes-1", name: "bes-1" },
      reason: "engine_offline",
      severity: "critical",
      count: 1,
      occurredAt: T0.toISOString(),
      openedAt: T0.toISOString(),
      resolvedAt: null,
      sentAt: at(5_000).toISOString(),
      attempt: 1,
      url: "https://cadres.example/backup/alerts",
    },
  );
  assert.equal(body.message, "BES bes-1 missed its heartbeats");
  assert.equal(delivery.status, "delivered");
  assert.equal(delivery.attempts[0].httpStatus, 200);
  assert.equal(await countPrefix(kv, "notification_due"), 0);
  assert.deepEqual(await deliverDue(kv, at(MIN), SEND), {
    attempted: 0,
    delivered: 0,
    retrying: 0,
    failed: 0,
  });
  assert.equal(hook.requests.length, 1, "nothing is sent twice");
});

Deno.test("a failing webhook is retried after 1 then 2 minutes and delivered on the third attempt", async () => {
  using kv = await Deno.openKv(":memory:");
  await using hook = receiver((n) => (n <= 2 ? 503 : 204));
  const fx = await fixture(kv);
  await rule(kv, fx, [(await webhook(kv, fx, hook.url)).id]);
  await raise(kv, fx, {});
  await dispatchAlertEvents(kv, T0);

  assert.equal((await deliverDue(kv, T0, SEND)).retrying, 1);
  let [d] = await deliveries(kv);
  assert.equal(d.status, "pending");
  assert.equal(d.nextAttemptAt, at(MIN).toISOString());
  assert.match(d.attempts[0].error!, /^HTTP 503: receiver says no/);
  assert.equal((await deliverDue(kv, at(MIN - 1), SEND)).attempted, 0, "not due before its backoff");
  assert.equal((await deliverDue(kv, at(MIN), SEND)).retrying, 1);
  [d] = await deliveries(kv);
  assert.equal(d.nextAttemptAt, at(3 * MIN).toISOString(), "then 2 minutes later");
  assert.equal((await deliverDue(kv, at(2 * MIN), SEND)).attempted, 0);
  assert.equal((await deliverDue(kv, at(3 * MIN), SEND)).delivered, 1);
  [d] = await deliveries(kv);
  assert.equal(d.status, "delivered");
  assert.deepEqual(d.attempts.map((a) => [a.at, a.ok, a.httpStatus]), [
    [T0.toISOString(), false, 503],
    [at(MIN).toISOString(), false, 503],
    [at(3 * MIN).toISOString(), true, 204],
  ]);
  assert.equal(hook.requests.length, 3);
  for (const req of hook.requests) assert.ok(await verifySignature(req), "every attempt is signed afresh");
  assert.deepEqual(hook.requests.map((r) => JSON.parse(r.body).attempt), [1, 2, 3]);
  assert.equal(await countPrefix(kv, "notification_due"), 0);
});

Deno.test("a webhook that keeps failing is given up after 6 attempts spread over 31 minutes", async () => {
  using kv = await Deno.openKv(":memory:");
  await using hook = receiver(() => 500);
  const fx = await fixture(kv);
  await rule(kv, fx, [(await webhook(kv, fx, hook.url)).id]);
  await raise(kv, fx, {});
  await dispatchAlertEvents(kv, T0);
  const schedule = [0, 1, 3, 7, 15, 31];
  for (const [i, minute] of schedule.entries()) {
    const sent = await deliverDue(kv, at(minute * MIN), SEND);
    assert.equal(sent.attempted, 1, `attempt ${i + 1} at +${minute} min`);
    assert.equal(sent.failed, i === schedule.length - 1 ? 1 : 0);
  }
  const [d] = await deliveries(kv);
  assert.equal(d.status, "failed");
  assert.deepEqual(d.attempts.map((a) => a.at), schedule.map((m) => at(m * MIN).toISOString()));
  assert.equal(d.nextAttemptAt, null);
  assert.equal(await countPrefix(kv, "notification_due"), 0);
  assert.equal((await deliverDue(kv, at(120 * MIN), SEND)).attempted, 0);
  assert.equal(hook.requests.length, 6);
});

Deno.test("a refused connection and a receiver slower than the timeout are failed attempts", async () => {
  using kv = await Deno.openKv(":memory:");
  await using slow = receiver(async () => {
    await new Promise((r) => setTimeout(r, 400));
    return 200;
  });
  const fx = await fixture(kv);
  const closed = await webhook(kv, fx, `http://127.0.0.1:${freePort()}/closed/T0K3N`, { name: "closed" });
  const sleepy = await webhook(kv, fx, slow.url, { name: "slow" });
  await rule(kv, fx, [closed.id, sleepy.id]);
  await raise(kv, fx, {});
  await dispatchAlertEvents(kv, T0);
  const sent = await deliverDue(kv, T0, { ...SEND, webhookTimeoutMs: 100 });
  assert.deepEqual(sent, { attempted: 2, delivered: 0, retrying: 2, failed: 0 });
  const byName = Object.fromEntries((await deliveries(kv)).map((d) => [d.channelName, d.attempts[0]]));
  assert.equal(byName.closed.httpStatus, null);
  assert.match(byName.closed.error ?? "", /refused/i, "the network error is recorded");
  assertExcludes(byName.closed.error ?? "", "T0K3N", "the URL's path token");
  assert.equal(byName.slow.error, "No response within 0.1 s");
});

Deno.test("two dispatchers and two senders racing deliver each event once", async () => {
  using kv = await Deno.openKv(":memory:");
  await using hook = receiver(async () => {
    await new Promise((r) => setTimeout(r, 100));
    return 200;
  });
  const fx = await fixture(kv);
  await rule(kv, fx, [(await webhook(kv, fx, hook.url)).id]);
  await raise(kv, fx, { subjectId: "bes-1" });
  await raise(kv, fx, { subjectId: "bes-2" });
  const dispatched = await Promise.all([dispatchAlertEvents(kv, T0), dispatchAlertEvents(kv, T0)]);
  assert.equal(dispatched[0].deliveries + dispatched[1].deliveries, 2);
  assert.equal((await deliveries(kv)).length, 2);
  const sent = await Promise.all([deliverDue(kv, T0, SEND), deliverDue(kv, T0, SEND)]);
  assert.equal(sent[0].delivered + sent[1].delivered, 2);
  assert.equal(hook.requests.length, 2, "each delivery was sent once");
});

Deno.test("a sender holding the lease blocks others until the lease expires", async () => {
  using kv = await Deno.openKv(":memory:");
  await using hook = receiver();
  const fx = await fixture(kv);
  await rule(kv, fx, [(await webhook(kv, fx, hook.url)).id]);
  await raise(kv, fx, {});
  await dispatchAlertEvents(kv, T0);
  // Sender A hangs in its send (a stuck process) …
  let release = () => {};
  let started = () => {};
  const inFlight = new Promise<void>((r) => (started = r));
  const stuck: typeof fetch = () =>
    new Promise((resolve) => {
      started();
      release = () => resolve(new Response("late", { status: 200 }));
    });
  const a = deliverDue(kv, T0, { ...SEND, transports: { fetch: stuck } });
  await inFlight;
  // … so B at the same minute finds nothing due, and C after the lease takes over and delivers.
  assert.equal((await deliverDue(kv, at(MIN), SEND)).attempted, 0);
  assert.equal((await deliverDue(kv, at(LEASE_MS), SEND)).delivered, 1);
  release();
  assert.equal((await a).attempted, 0, "A lost its lease: its late result is not recorded");
  const [d] = await deliveries(kv);
  assert.equal(d.status, "delivered");
  assert.equal(d.attempts.length, 1);
  assert.equal(hook.requests.length, 1);
});

// ---------------------------------------------------------------------------------------------------
// Routing

Deno.test("routing by severity and org: each alert reaches exactly the matching rules' channels", async () => {
  using kv = await Deno.openKv(":memory:");
  const fx = await fixture(kv);
  const pager = await webhook(kv, fx, "https://pager.example/hook", { name: "pager" });
  const opsHook = await webhook(kv, fx, "https://ops.example/hook", { name: "ops", orgId: fx.opsId });
  const devHook = await webhook(kv, fx, "https://dev.example/hook", { name: "dev", orgId: fx.devId });
  const off = await webhook(kv, fx, "https://off.example/hook", { name: "off", enabled: false });
  await rule(kv, fx, [pager.id, off.id], { name: "critical anywhere", minSeverity: "critical" });
  await rule(kv, fx, [opsHook.id, pager.id], {
    name: "ops warnings",
    minSeverity: "warning",
    orgIds: [fx.opsId],
  });
  await rule(kv, fx, [devHook.id], { name: "dev opened", orgIds: [fx.devId], events: ["opened"] });

  const routed = async (spec: AlertSpec) => {
    const before = new Set((await deliveries(kv)).map((d) => d.id));
    await raise(kv, fx, spec);
    await dispatchAlertEvents(kv, T0);
    return (await deliveries(kv)).filter((d) => !before.has(d.id)).map((d) => d.channelName).sort();
  };
  assert.deepEqual(await routed({ subjectId: "a", orgId: fx.opsId, severity: "warning" }), ["ops", "pager"]);
  assert.deepEqual(await routed({ subjectId: "b", orgId: fx.opsId, severity: "info" }), []);
  assert.deepEqual(await routed({ subjectId: "c", orgId: fx.devId, severity: "critical" }), ["dev", "pager"]);
  assert.deepEqual(await routed({ subjectId: "d", orgId: fx.devId, severity: "warning" }), ["dev"]);
  assert.deepEqual(await routed({ subjectId: "e", orgId: null, severity: "critical" }), ["pager"]);
  assert.deepEqual(await routed({ subjectId: "f", orgId: null, severity: "warning" }), []);
  const ops = await routed({ subjectId: "g", orgId: fx.opsId, severity: "critical" });
  assert.deepEqual(ops, ["ops", "pager"], "pager matched by two rules is sent once");
  const [toPager] = (await deliveries(kv)).filter((d) =>
    d.payload.subject?.id === "g" && d.channelName === "pager"
  );
  assert.equal(toPager.ruleIds.length, 2);
});

Deno.test("a resolved notification is delivered when the alert's subject recovers", async () => {
  using kv = await Deno.openKv(":memory:");
  await using hook = receiver();
  const fx = await fixture(kv);
  await rule(kv, fx, [(await webhook(kv, fx, hook.url)).id], { events: ["resolved"] });
  const alert = await raise(kv, fx, {});
  await raise(kv, fx, {}, at(MIN)); // a repeat only bumps the counter: no new event
  assert.equal(await countPrefix(kv, "alert_events"), 1);
  assert.deepEqual(
    await dispatchAlertEvents(kv, at(MIN)),
    { events: 1, deliveries: 0 },
    "opened is not routed",
  );
  await resolve(kv, "bes-1", at(10 * MIN));
  assert.deepEqual(await dispatchAlertEvents(kv, at(10 * MIN)), { events: 1, deliveries: 1 });
  assert.equal((await deliverDue(kv, at(10 * MIN), SEND)).delivered, 1);
  const body = JSON.parse(hook.requests[0].body);
  assert.equal(body.event, "resolved");
  assert.equal(body.alertId, alert.id);
  assert.equal(body.count, 2);
  assert.equal(body.openedAt, T0.toISOString());
  assert.equal(body.resolvedAt, at(10 * MIN).toISOString());
  assert.equal(hook.requests[0].headers.get("x-cadres-event"), "resolved");
});

Deno.test("deliverNotifications() dispatches and sends in one tick", async () => {
  using kv = await Deno.openKv(":memory:");
  await using hook = receiver();
  const fx = await fixture(kv);
  await rule(kv, fx, [(await webhook(kv, fx, hook.url)).id]);
  await raise(kv, fx, {});
  const result = await deliverNotifications(kv, T0, { masterKey: MASTER_KEY });
  assert.equal(result.events, 1);
  assert.equal(result.queued, 1);
  assert.equal(result.delivered, 1);
  assert.equal(hook.requests.length, 1);
  // Finished deliveries are purged from the log after 30 days.
  assert.equal((await deliverNotifications(kv, at(31 * 86_400_000), { masterKey: MASTER_KEY })).purged, 1);
  assert.equal((await deliveries(kv)).length, 0);
  assert.equal(await countPrefix(kv, "notification_deliveries_by_account"), 0);
  assert.equal(await countPrefix(kv, "notification_deliveries_by_channel"), 0);
});

// ---------------------------------------------------------------------------------------------------
// Email over SMTP

async function emailChannel(
  kv: Deno.Kv,
  fx: Fixture,
  port: number,
  overrides: Partial<ChannelCreateInput> = {},
) {
  const { channel } = await createChannel(kv, fx.admin, {
    type: "email",
    name: "ops mail",
    host: "127.0.0.1",
    port,
    tlsMode: "none",
    from: "cadres@acme.example",
    to: ["oncall@acme.example", "ops@acme.example"],
    ...overrides,
  } as ChannelCreateInput, { now: T0, masterKey: MASTER_KEY });
  return channel;
}

Deno.test("an alert is emailed through a real SMTP server with AUTH", async () => {
  using kv = await Deno.openKv(":memory:");
  await using smtp = await smtpServer({ auth: { username: "cadres", password: "s3cret-smtp-pass" } });
  const fx = await fixture(kv);
  const channel = await emailChannel(kv, fx, smtp.port, { username: "cadres", password: "s3cret-smtp-pass" });
  await rule(kv, fx, [channel.id]);
  await raise(kv, fx, { subjectId: "bés-1" });
  await dispatchAlertEvents(kv, T0);
  assert.equal((await deliverDue(kv, T0, { ...SEND, baseUrl: "https://cadres.example" })).delivered, 1);

  assert.deepEqual(smtp.logins, [{ username: "cadres", password: "s3cret-smtp-pass" }]);
  assert.equal(smtp.mails.length, 1);
  const mail = smtp.mails[0];
  assert.equal(mail.user, "cadres");
  assert.equal(mail.from, "cadres@acme.example");
  assert.deepEqual(mail.to, ["oncall@acme.example", "ops@acme.example"]);
  assert.equal(mail.headers.from, "cadres@acme.example");
  assert.equal(mail.headers.to, "oncall@acme.example, ops@acme.example");
  assert.equal(decodeHeader(mail.headers.subject), "[Cadres] CRITICAL bés-1: engine offline");
  assert.match(mail.headers["content-type"], /^text\/plain; charset=utf-8/);
  const body = mail.headers["content-transfer-encoding"] === "base64"
    ? new TextDecoder().decode(Uint8Array.from(atob(mail.body.replace(/\s+/g, "")), (c) => c.charCodeAt(0)))
    : mail.body;
  assertIncludes(body, "Alert opened (critical)");
  assertIncludes(body, "BES bés-1 missed its heartbeats");
  assertIncludes(body, "https://cadres.example/backup/alerts");
  const [d] = await deliveries(kv);
  assert.equal(d.attempts[0].smtpReply, "250 OK: queued as test");
});

Deno.test("a wrong SMTP password is a failed attempt with the server's reply", async () => {
  using kv = await Deno.openKv(":memory:");
  await using smtp = await smtpServer({ auth: { username: "cadres", password: "right" } });
  const fx = await fixture(kv);
  await rule(kv, fx, [(await emailChannel(kv, fx, smtp.port, { username: "cadres", password: "wrong" })).id]);
  await raise(kv, fx, {});
  await dispatchAlertEvents(kv, T0);
  assert.equal((await deliverDue(kv, T0, SEND)).retrying, 1);
  const [d] = await deliveries(kv);
  assert.match(d.attempts[0].smtpReply ?? "", /^535 /);
  assert.match(d.attempts[0].error ?? "", /^AUTH PLAIN was refused: 535/);
  assertExcludes(JSON.stringify(d), "wrong", "the password");
  assert.equal(smtp.mails.length, 0);
});

Deno.test("email over STARTTLS and over implicit TLS verifies the server certificate", async (t) => {
  const certs = await testCertificates();
  if (!certs) return; // no openssl: the plain-text tests above still cover the protocol
  for (const mode of ["starttls", "tls"] as const) {
    await t.step(mode, async () => {
      using kv = await Deno.openKv(":memory:");
      await using smtp = await smtpServer({ secure: mode === "tls", key: certs.key, cert: certs.cert });
      const fx = await fixture(kv);
      await rule(kv, fx, [(await emailChannel(kv, fx, smtp.port, { tlsMode: mode })).id]);
      await raise(kv, fx, {});
      await dispatchAlertEvents(kv, T0);
      // Without the test CA the certificate is refused …
      assert.equal((await deliverDue(kv, T0, SEND)).retrying, 1);
      assert.match((await deliveries(kv))[0].attempts[0].error ?? "", /certificate/i);
      // … with it, the message goes through an encrypted session.
      const trusted = { ...SEND, transports: { smtp: smtpConnector({ caCerts: [certs.ca] }) } };
      assert.equal((await deliverDue(kv, at(MIN), trusted)).delivered, 1);
      assert.equal(smtp.mails.length, 1);
      assert.equal(smtp.mails[0].secure, true);
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// Pages, permissions, audit, secrets

async function pageFixture() {
  const kv = await Deno.openKv(":memory:");
  const clock = new TestClock(new Date(T0));
  const { app } = testApp(kv, clock);
  const fx = await fixture(kv);
  const users = {
    admin: await addUser(kv, fx.tenant, "root@acme.example", "admin", "all", T0),
    viewer: await addUser(kv, fx.tenant, "viewer@acme.example", "viewer", "all", T0),
    opsOperator: await addUser(kv, fx.tenant, "ops-op@acme.example", "operator", [fx.tenant.orgs[0]], T0),
    devViewer: await addUser(kv, fx.tenant, "dev-view@acme.example", "viewer", [fx.tenant.orgs[1]], T0),
  };
  const as = async (who: keyof typeof users) => {
    const browser = new Browser(app);
    await signInAs(browser, kv, users[who], clock.now());
    return browser;
  };
  return { kv, app, clock, fx, users, as, [Symbol.dispose]: () => kv.close() };
}

const BASE = "/backup/notifications";

function post(browser: Browser, path: string, fields: Record<string, string | string[]>) {
  return browser.postForm(path, fields, { tokenFrom: BASE });
}

Deno.test("creating a webhook shows a generated secret once; no page, audit entry or log shows it again", async () => {
  using p = await pageFixture();
  const admin = await p.as("admin");
  const res = await post(admin, `${BASE}/channels/new`, {
    type: "webhook",
    name: "Ops webhook",
    url: "https://hooks.example.com/services/T0/B0/PATH-TOKEN",
    orgId: "",
    enabled: "on",
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const html = await res.text();
  const secret = /data-testid="secret">([^<]+)</.exec(html)?.[1] ?? "";
  assert.match(secret, /^whsec_[A-Za-z0-9_-]{43}$/);
  const [vault] = await Array.fromAsync(p.kv.list<VaultRecord>({ prefix: ["vault"] }));
  assertExcludes(JSON.stringify(vault.value), secret, "the plaintext secret in the vault record");
  const [channel] = await Array.fromAsync(p.kv.list<{ id: string }>({ prefix: ["notification_channels"] }));
  for (const page of [BASE, `${BASE}/channels/${channel.value.id}`]) {
    const text = await (await admin.get(page)).text();
    assertIncludes(text, "Ops webhook");
    assertExcludes(text, secret);
    assertExcludes(text, vault.value.ciphertext, "the ciphertext");
  }
  const editPage = await (await admin.get(`${BASE}/channels/${channel.value.id}`)).text();
  assertIncludes(editPage, 'name="url"', "the admin gets the edit form");
  assertExcludes(editPage, "PATH-TOKEN", "the URL's path token, even on the edit form");
  assertIncludes(editPage, "https://hooks.example.com/…");
  const viewerPage = await (await (await p.as("viewer")).get(`${BASE}/channels/${channel.value.id}`)).text();
  assertExcludes(viewerPage, "PATH-TOKEN", "the URL's path token");
  assertIncludes(viewerPage, "https://hooks.example.com/…");
  const audit = await auditEntries(p.kv, p.fx.tenant.account.id);
  const created = audit.find((e) => e.action === "notification_channel.create");
  assert.ok(created);
  assertExcludes(created.summary, secret);
  assertExcludes(created.summary, "PATH-TOKEN", "the URL's path token");

  // Rotating shows the new secret once and drops the old vault record.
  const rotated = await post(admin, `${BASE}/channels/${channel.value.id}`, {
    type: "webhook",
    name: "Ops webhook",
    url: "https://hooks.example.com/services/T0/B0/PATH-TOKEN",
    rotateSecret: "on",
  });
  assert.equal(rotated.status, 200);
  const next = /data-testid="secret">([^<]+)</.exec(await rotated.text())?.[1] ?? "";
  assert.match(next, /^whsec_/);
  assert.notEqual(next, secret);
  const records = await Array.fromAsync(p.kv.list<VaultRecord>({ prefix: ["vault"] }));
  assert.equal(records.length, 1);
  assert.notEqual(records[0].key[1], vault.key[1]);
  assert.ok(
    (await auditEntries(p.kv, p.fx.tenant.account.id)).some((e) =>
      e.action === "notification_channel.update" && e.summary.includes("rotated the signing secret")
    ),
  );

  // Saved with the URL left empty (as the edit form shows it), the stored URL is kept; a typed one replaces it.
  const urlOf = async () =>
    (await p.kv.get<{ url: string }>(["notification_channels", channel.value.id])).value?.url;
  assert.equal(
    (await post(admin, `${BASE}/channels/${channel.value.id}`, { type: "webhook", name: "Renamed", url: "" }))
      .status,
    303,
  );
  assert.equal(await urlOf(), "https://hooks.example.com/services/T0/B0/PATH-TOKEN");
  assert.equal(
    (await post(admin, `${BASE}/channels/${channel.value.id}`, {
      type: "webhook",
      name: "Renamed",
      url: "https://hooks.example.com/services/T1/NEW-TOKEN",
    })).status,
    303,
  );
  assert.equal(await urlOf(), "https://hooks.example.com/services/T1/NEW-TOKEN");
  const changed = (await auditEntries(p.kv, p.fx.tenant.account.id)).filter((e) =>
    e.summary.includes("changed the URL")
  );
  assert.equal(changed.length, 1);
  assertExcludes(changed[0].summary, "NEW-TOKEN", "the new URL's path token");
});

Deno.test("a typed webhook secret and an SMTP password are stored but never rendered", async () => {
  using p = await pageFixture();
  const admin = await p.as("admin");
  const hook = await post(admin, `${BASE}/channels/new`, {
    type: "webhook",
    name: "Typed secret",
    url: "https://hooks.example.com/x",
    secret: SECRET,
    orgId: p.fx.opsId,
    enabled: "on",
  });
  assert.equal(hook.status, 303, "a typed secret is not shown back");
  const mail = await post(admin, `${BASE}/channels/new`, {
    type: "email",
    name: "Mail",
    host: "smtp.acme.example",
    port: "587",
    tlsMode: "starttls",
    username: "cadres",
    password: "smtp-password-xyz",
    from: "cadres@acme.example",
    to: "a@acme.example, b@acme.example",
    orgId: "",
    enabled: "on",
  });
  assert.equal(mail.status, 303);
  const channels = await Array.fromAsync(p.kv.list<{ id: string }>({ prefix: ["notification_channels"] }));
  assert.equal(channels.length, 2);
  assert.equal(await countPrefix(p.kv, "vault"), 2);
  for (const page of [BASE, ...channels.map((c) => `${BASE}/channels/${c.value.id}`)]) {
    const text = await (await admin.get(page)).text();
    assertExcludes(text, SECRET);
    assertExcludes(text, "smtp-password-xyz", "the SMTP password");
  }
  for (const e of await auditEntries(p.kv, p.fx.tenant.account.id)) {
    assertExcludes(e.summary, SECRET);
    assertExcludes(e.summary, "smtp-password-xyz", "the SMTP password");
  }
});

Deno.test("bad channel and rule input answers 422 with field errors and stores nothing", async () => {
  using p = await pageFixture();
  const admin = await p.as("admin");
  const snapshot = async () =>
    [
      await countPrefix(p.kv, "notification_channels"),
      await countPrefix(p.kv, "notification_rules"),
      await countPrefix(p.kv, "vault"),
      (await auditEntries(p.kv, p.fx.tenant.account.id)).length,
    ].join(",");
  const before = await snapshot();
  const hook = await post(admin, `${BASE}/channels/new`, {
    type: "webhook",
    name: "",
    url: "ftp://example.com",
    secret: "short",
    orgId: "",
  });
  assert.equal(hook.status, 422);
  const hookHtml = await hook.text();
  assertIncludes(hookHtml, "Must be an http:// or https:// URL");
  assertIncludes(hookHtml, "Must be at least 16 characters");
  assertIncludes(hookHtml, 'value="ftp://example.com"', "the typed URL is kept");
  assertExcludes(hookHtml, "short", "the typed secret");
  const mail = await post(admin, `${BASE}/channels/new`, {
    type: "email",
    name: "Mail",
    host: "bad host!",
    port: "99999",
    tlsMode: "starttls",
    username: "cadres",
    from: "nobody",
    to: "ops@acme.example, nope",
    orgId: "",
  });
  assert.equal(mail.status, 422);
  const mailHtml = await mail.text();
  assertIncludes(mailHtml, "Must be a hostname or IP address");
  assertIncludes(mailHtml, "Must be a port number 1–65535");
  assertIncludes(mailHtml, "Must be an email address");
  assertIncludes(mailHtml, "&quot;nope&quot; is not an email address");
  assert.match(mailHtml, /name="port"[^>]*value="99999"/, "the typed port is kept");
  // A port cleared by the user stays cleared (not refilled with the default) next to its error.
  const cleared = await post(admin, `${BASE}/channels/new`, {
    type: "email",
    name: "Mail",
    host: "smtp.acme.example",
    port: "",
    tlsMode: "tls",
    from: "cadres@acme.example",
    to: "ops@acme.example",
    orgId: "",
  });
  assert.equal(cleared.status, 422);
  const clearedHtml = await cleared.text();
  assert.match(clearedHtml, /name="port"[^>]*value=""/);
  assert.match(clearedHtml, /<option[^>]*value="tls"[^>]*selected/, "the chosen TLS mode is kept");
  const noPassword = await post(admin, `${BASE}/channels/new`, {
    type: "email",
    name: "Mail",
    host: "smtp.acme.example",
    port: "587",
    tlsMode: "starttls",
    username: "cadres",
    from: "cadres@acme.example",
    to: "ops@acme.example",
    orgId: "",
  });
  assert.equal(noPassword.status, 422);
  assertIncludes(await noPassword.text(), "Is required with a username");
  const badRule = await post(admin, `${BASE}/rules/new`, {
    name: "r",
    minSeverity: "urgent",
    orgMode: "some",
  });
  assert.equal(badRule.status, 422);
  const ruleHtml = await badRule.text();
  assertIncludes(ruleHtml, "Choose at least one event");
  assertIncludes(ruleHtml, "Choose at least one channel");
  assertIncludes(ruleHtml, "Choose all organizations or at least one");
  assert.equal(await snapshot(), before);
});

Deno.test("viewers see notifications but cannot create, test or delete", async () => {
  using p = await pageFixture();
  const channel = await webhook(p.kv, p.fx, "http://127.0.0.1:9/x");
  await rule(p.kv, p.fx, [channel.id]);
  const viewer = await p.as("viewer");
  const page = await viewer.get(BASE);
  assert.equal(page.status, 200);
  const html = await page.text();
  assertIncludes(html, "ops hook");
  assertExcludes(html, "Send test", "a test button");
  assertExcludes(html, "Add webhook", "an add button");
  assert.equal((await viewer.get(`${BASE}/channels/${channel.id}`)).status, 200);
  assert.equal((await viewer.get(`${BASE}/channels/new`)).status, 403);
  const attempts = [
    [`${BASE}/channels/new`, { type: "webhook", name: "x", url: "https://x.example", orgId: "" }],
    [`${BASE}/channels/${channel.id}/test`, {}],
    [`${BASE}/channels/${channel.id}/delete`, {}],
    [`${BASE}/channels/${channel.id}/disable`, {}],
    [`${BASE}/rules/new`, {
      name: "r",
      minSeverity: "info",
      orgMode: "all",
      events: "opened",
      channelIds: channel.id,
    }],
  ] as const;
  for (const [path, fields] of attempts) {
    assert.equal((await post(viewer, path, fields)).status, 403, path);
  }
  assert.equal(await countPrefix(p.kv, "notification_channels"), 1);
  assert.equal(await countPrefix(p.kv, "notification_deliveries"), 0);
});

Deno.test("org scope: an org's operator manages only its channels and rules; others cannot see them", async () => {
  using p = await pageFixture();
  const devChannel = await webhook(p.kv, p.fx, "http://127.0.0.1:9/dev", {
    name: "dev hook",
    orgId: p.fx.devId,
  });
  const accountChannel = await webhook(p.kv, p.fx, "http://127.0.0.1:9/acct", { name: "account hook" });
  const ops = await p.as("opsOperator");
  // Another org's channel does not exist for them …
  assert.equal((await ops.get(`${BASE}/channels/${devChannel.id}`)).status, 404);
  assert.equal((await post(ops, `${BASE}/channels/${devChannel.id}/test`, {})).status, 404);
  assert.equal((await post(ops, `${BASE}/channels/${devChannel.id}/delete`, {})).status, 404);
  assertExcludes(await (await ops.get(BASE)).text(), "dev hook", "another org's channel");
  // … an account-level one is visible but only all-scope managers change it …
  assert.equal((await ops.get(`${BASE}/channels/${accountChannel.id}`)).status, 200);
  assert.equal((await post(ops, `${BASE}/channels/${accountChannel.id}/disable`, {})).status, 403);
  assert.equal(
    (await post(ops, `${BASE}/channels/new`, {
      type: "webhook",
      name: "acct",
      url: "https://x.example",
      orgId: "",
    }))
      .status,
    403,
  );
  // … and in their own org they create channels and rules (but no rule for all orgs).
  const created = await post(ops, `${BASE}/channels/new`, {
    type: "webhook",
    name: "ops own hook",
    url: "https://ops.example/hook",
    secret: SECRET,
    orgId: p.fx.opsId,
    enabled: "on",
  });
  assert.equal(created.status, 303);
  const own =
    (await Array.fromAsync(p.kv.list<{ id: string; name: string }>({ prefix: ["notification_channels"] })))
      .find((e) => e.value.name === "ops own hook")!.value;
  const allOrgs = await post(ops, `${BASE}/rules/new`, {
    name: "all",
    minSeverity: "info",
    orgMode: "all",
    events: "opened",
    channelIds: own.id,
  });
  assert.equal(allOrgs.status, 422);
  assertIncludes(await allOrgs.text(), "Choose only organizations you manage");
  const foreign = await post(ops, `${BASE}/rules/new`, {
    name: "ops",
    minSeverity: "info",
    orgMode: "some",
    orgIds: p.fx.opsId,
    events: "opened",
    channelIds: devChannel.id,
  });
  assert.equal(foreign.status, 422, "another org's channel cannot be used");
  const ok = await post(ops, `${BASE}/rules/new`, {
    name: "ops rule",
    minSeverity: "info",
    orgMode: "some",
    orgIds: p.fx.opsId,
    events: ["opened", "resolved"],
    channelIds: own.id,
    enabled: "on",
  });
  assert.equal(ok.status, 303);
  const [opsRule] = await Array.fromAsync(p.kv.list<NotificationRule>({ prefix: ["notification_rules"] }));
  assert.deepEqual(opsRule.value.orgIds, [p.fx.opsId]);
  // A Dev viewer sees neither the Ops channel nor the Ops rule.
  const dev = await p.as("devViewer");
  const devHtml = await (await dev.get(BASE)).text();
  assertExcludes(devHtml, "ops own hook", "another org's channel");
  assertExcludes(devHtml, "ops rule", "another org's rule");
  assert.equal((await dev.get(`${BASE}/rules/${opsRule.value.id}`)).status, 404);
});

Deno.test("the Send test button delivers now, reports the outcome and records it in the log", async () => {
  using p = await pageFixture();
  await using hook = receiver((n) => (n === 1 ? 200 : 500));
  const channel = await webhook(p.kv, p.fx, hook.url);
  const admin = await p.as("admin");
  const ok = await post(admin, `${BASE}/channels/${channel.id}/test`, { back: "list" });
  assert.equal(ok.status, 303);
  assert.equal(ok.headers.get("location"), BASE);
  assertIncludes(await (await admin.get(BASE)).text(), "Test notification to ops hook delivered (HTTP 200)");
  assert.ok(await verifySignature(hook.requests[0]));
  assert.equal(JSON.parse(hook.requests[0].body).event, "test");
  const failed = await post(admin, `${BASE}/channels/${channel.id}/test`, {});
  assert.equal(failed.headers.get("location"), `${BASE}/channels/${channel.id}`);
  const html = await (await admin.get(`${BASE}/channels/${channel.id}`)).text();
  assertIncludes(
    html,
    "Test notification to ops hook failed: failed · HTTP 500 · HTTP 500: receiver says no",
  );
  const log = await listDeliveries(p.kv, p.fx.admin, { channelId: "", status: "", cursor: "", limit: 50 });
  assert.deepEqual(log.values.map((d) => [d.payload.event, d.status]), [["test", "failed"], [
    "test",
    "delivered",
  ]]);
  const tests = (await auditEntries(p.kv, p.fx.tenant.account.id)).filter((e) =>
    e.action === "notification_channel.test"
  );
  assert.equal(tests.length, 2);
  assert.equal(await countPrefix(p.kv, "notification_due"), 0, "a test is not retried");
});

Deno.test("an email channel's Send test goes through the SMTP server", async () => {
  using p = await pageFixture();
  await using smtp = await smtpServer();
  const channel = await emailChannel(p.kv, p.fx, smtp.port);
  const admin = await p.as("admin");
  await post(admin, `${BASE}/channels/${channel.id}/test`, {});
  assertIncludes(
    await (await admin.get(`${BASE}/channels/${channel.id}`)).text(),
    "Test notification to ops mail delivered (250 OK: queued as test)",
  );
  assert.equal(smtp.mails.length, 1);
  assert.equal(smtp.mails[0].headers.subject, "[Cadres] Test notification for ops mail");
  assertIncludes(smtp.mails[0].body, "This is a test notification from Cadres Backup.");
});

Deno.test("the delivery log filters by channel and status and pages with a cursor, newest first", async () => {
  using p = await pageFixture();
  await using hook = receiver((n) => (n % 2 ? 200 : 500));
  const a = await webhook(p.kv, p.fx, hook.url, { name: "alpha" });
  const b = await webhook(p.kv, p.fx, hook.url, { name: "bravo" });
  const admin = await p.as("admin");
  for (const id of [a.id, a.id, b.id]) {
    await post(admin, `${BASE}/channels/${id}/test`, {});
    p.clock.advance(MIN);
  }
  const rows = (html: string) =>
    [
      ...html.matchAll(
        /<tr\s*><td data-label="Created">(<time[^>]*>[^<]+<\/time>|[^<]+)<\/td><td data-label="Channel">(\w+)<\/td>/g,
      ),
    ]
      .map((m) => m[2]);
  const all = await (await admin.get(BASE)).text();
  assert.deepEqual(rows(all), ["bravo", "alpha", "alpha"]);
  assertIncludes(all, "Send test");
  assert.deepEqual(rows(await (await admin.get(`${BASE}?channelId=${a.id}`)).text()), ["alpha", "alpha"]);
  assert.deepEqual(rows(await (await admin.get(`${BASE}?status=failed`)).text()), ["alpha"]);
  const first = await (await admin.get(`${BASE}?limit=2`)).text();
  assert.deepEqual(rows(first), ["bravo", "alpha"]);
  const next = /href="\?([^"]*cursor=[^"#]*)#log">Older deliveries/.exec(first)?.[1];
  assert.ok(next, "a link to older deliveries");
  assertIncludes(next, "limit=2");
  const second = await (await admin.get(`${BASE}?${next.replaceAll("&amp;", "&")}`)).text();
  assert.deepEqual(rows(second), ["alpha"]);
  assertExcludes(second, "Older deliveries", "another page link");
  assertIncludes(await (await admin.get(`${BASE}?status=pending`)).text(), "No deliveries match");
});

Deno.test("deleting a channel asks first, then removes it, its secret and its place in rules", async () => {
  using p = await pageFixture();
  const keep = await webhook(p.kv, p.fx, "https://keep.example/h", { name: "keep" });
  const gone = await webhook(p.kv, p.fx, "https://gone.example/h", { name: "gone" });
  const r = await rule(p.kv, p.fx, [keep.id, gone.id]);
  const admin = await p.as("admin");
  const confirm = await admin.get(`${BASE}/channels/${gone.id}/delete`);
  assert.equal(confirm.status, 200);
  assertIncludes(await confirm.text(), "takes it out of the rules everything");
  assert.equal(await countPrefix(p.kv, "notification_channels"), 2, "nothing happens on GET");
  const res = await post(admin, `${BASE}/channels/${gone.id}/delete`, {});
  assert.equal(res.status, 303);
  assert.equal((await p.kv.get(["notification_channels", gone.id])).value, null);
  assert.equal((await p.kv.get(["vault", gone.type === "webhook" ? gone.secretId : ""])).value, null);
  assert.deepEqual((await p.kv.get<NotificationRule>(["notification_rules", r.id])).value!.channelIds, [
    keep.id,
  ]);
  const deleted = (await auditEntries(p.kv, p.fx.tenant.account.id)).find((e) =>
    e.action === "notification_channel.delete"
  );
  assert.match(deleted!.summary, /removed it from 1 rule/);
  assert.equal((await admin.get(`${BASE}/channels/${gone.id}`)).status, 404);
});

Deno.test("rules: create, disable and edit through the pages, each with an audit entry", async () => {
  using p = await pageFixture();
  const channel = await webhook(p.kv, p.fx, "https://x.example/h");
  const admin = await p.as("admin");
  const created = await post(admin, `${BASE}/rules/new`, {
    name: "critical only",
    minSeverity: "critical",
    orgMode: "some",
    orgIds: [p.fx.opsId, p.fx.devId],
    events: "opened",
    channelIds: channel.id,
    enabled: "on",
  });
  assert.equal(created.status, 303);
  const [entry] = await Array.fromAsync(p.kv.list<NotificationRule>({ prefix: ["notification_rules"] }));
  const id = entry.value.id;
  assert.deepEqual(entry.value.orgIds, [p.fx.opsId, p.fx.devId]);
  assert.equal((await post(admin, `${BASE}/rules/${id}/disable`, {})).status, 303);
  assert.equal((await p.kv.get<NotificationRule>(["notification_rules", id])).value!.enabled, false);
  const edited = await post(admin, `${BASE}/rules/${id}`, {
    name: "warnings everywhere",
    minSeverity: "warning",
    orgMode: "all",
    events: ["opened", "resolved"],
    channelIds: channel.id,
    enabled: "on",
  });
  assert.equal(edited.status, 303);
  const after = (await p.kv.get<NotificationRule>(["notification_rules", id])).value!;
  assert.equal(after.orgIds, "all");
  assert.equal(after.minSeverity, "warning");
  assert.equal(after.enabled, true);
  const page = await (await admin.get(`${BASE}/rules/${id}`)).text();
  assertIncludes(page, "warnings everywhere");
  const actions = (await auditEntries(p.kv, p.fx.tenant.account.id)).map((e) => e.action)
    .filter((a) => a.startsWith("notification_rule."));
  assert.deepEqual(actions, [
    "notification_rule.create",
    "notification_rule.disable",
    "notification_rule.update",
  ]);
  assert.equal((await post(admin, `${BASE}/rules/${id}/delete`, {})).status, 303);
  assert.equal(await countPrefix(p.kv, "notification_rules"), 0);
});

Deno.test("updateRule() by an org's operator keeps the rule's channels they cannot see", async () => {
  using kv = await Deno.openKv(":memory:");
  const fx = await fixture(kv);
  const opsHook = await webhook(kv, fx, "https://ops.example/h", { name: "ops", orgId: fx.opsId });
  const devHook = await webhook(kv, fx, "https://dev.example/h", { name: "dev", orgId: fx.devId });
  const r = await rule(kv, fx, [opsHook.id, devHook.id], { orgIds: [fx.opsId] });
  const opsOperator = userActor(
    await addUser(kv, fx.tenant, "op@acme.example", "operator", [fx.tenant.orgs[0]], T0),
  );
  const next = await updateRule(kv, opsOperator, r.id, {
    name: "renamed",
    minSeverity: "critical",
    orgIds: [fx.opsId],
    events: ["opened"],
    channelIds: [opsHook.id],
  }, T0);
  assert.deepEqual(next.channelIds, [opsHook.id, devHook.id]);
  await assert.rejects(
    updateRule(kv, opsOperator, r.id, {
      name: "x",
      minSeverity: "info",
      orgIds: [fx.opsId],
      events: ["opened"],
      channelIds: [opsHook.id, devHook.id, "01NOSUCHCHANNEL"],
    }, T0),
    /Unknown channel/,
  );
});

Deno.test("the JSON API: channels, rules and the delivery log, with secrets once, URLs as origins, and 422s that change nothing", async () => {
  using p = await pageFixture();
  const admin = await p.as("admin");
  const csrf = await admin.csrfFor(BASE);
  const call = (b: Browser, method: string, path: string, body?: unknown, token = csrf) =>
    b.request(path, {
      method,
      headers: { "content-type": "application/json", "x-csrf-token": token },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const created = await call(admin, "POST", "/api/v1/notification-channels", {
    type: "webhook",
    name: "API webhook",
    url: "https://hooks.example.com/services/T9/B9/API-TOKEN",
    orgId: p.fx.opsId,
  });
  assert.equal(created.status, 201);
  assert.equal(created.headers.get("cache-control"), "no-store");
  const { channel, generatedSecret } = await created.json();
  assert.match(generatedSecret, /^whsec_/);
  assert.equal(channel.url, "https://hooks.example.com/…");
  assert.equal(channel.secretId, undefined, "no vault ids");
  for (const path of ["/api/v1/notification-channels", `/api/v1/notification-channels/${channel.id}`]) {
    const text = await (await admin.get(path)).text();
    assertIncludes(text, "API webhook");
    assertExcludes(text, "API-TOKEN", "the URL's path token");
    assertExcludes(text, generatedSecret, "the secret, after its one showing");
  }
  // An update without a URL keeps it; a bad one is a 422 with the field named and changes nothing.
  const renamed = await call(admin, "PUT", `/api/v1/notification-channels/${channel.id}`, {
    type: "webhook",
    name: "API webhook 2",
  });
  assert.equal(renamed.status, 200);
  assert.equal((await renamed.json()).generatedSecret, null);
  const stored = async () =>
    (await p.kv.get<{ name: string; url: string }>(["notification_channels", channel.id])).value!;
  const kept = await stored();
  assert.equal(kept.name, "API webhook 2");
  assert.equal(kept.url, "https://hooks.example.com/services/T9/B9/API-TOKEN", "the URL is kept");
  const before = await stored();
  const bad = await call(admin, "PUT", `/api/v1/notification-channels/${channel.id}`, {
    type: "webhook",
    name: "",
    url: "ftp://nope",
  });
  assert.equal(bad.status, 422);
  const badBody = await bad.json();
  assert.ok(badBody.error.fields.name && badBody.error.fields.url, JSON.stringify(badBody));
  assert.deepEqual(await stored(), before);

  // Rules: create, read, update, and a rule naming an unknown channel is refused.
  const rule = await call(admin, "POST", "/api/v1/notification-rules", {
    name: "Critical to ops",
    minSeverity: "critical",
    orgIds: "all",
    events: ["opened", "resolved"],
    channelIds: [channel.id],
  });
  assert.equal(rule.status, 201);
  const ruleId = (await rule.json()).id;
  assert.equal(
    (await (await admin.get(`/api/v1/notification-rules/${ruleId}`)).json()).name,
    "Critical to ops",
  );
  const unknown = await call(admin, "PUT", `/api/v1/notification-rules/${ruleId}`, {
    name: "Critical to ops",
    minSeverity: "critical",
    orgIds: "all",
    events: ["opened"],
    channelIds: ["01KAHZ3Y3N4G2D8QF5T0V7W9XB"],
  });
  assert.equal(unknown.status, 422);
  assert.deepEqual((await (await admin.get(`/api/v1/notification-rules/${ruleId}`)).json()).events, [
    "opened",
    "resolved",
  ]);
  assert.equal((await (await admin.get("/api/v1/notification-rules")).json()).values.length, 1);

  // The delivery log: a bad status or limit is a 422, not a silently different page.
  assert.equal((await admin.get("/api/v1/notification-deliveries?status=lost")).status, 422);
  assert.equal((await admin.get("/api/v1/notification-deliveries?limit=0")).status, 422);
  const log = await (await admin.get(`/api/v1/notification-deliveries?channelId=${channel.id}&limit=5`))
    .json();
  assert.deepEqual(log, { values: [], cursor: "" });

  // Scope: an operator of another org sees none of it; a viewer cannot change it.
  const devViewer = await p.as("devViewer");
  assert.deepEqual((await (await devViewer.get("/api/v1/notification-channels")).json()).values, []);
  assert.equal((await devViewer.get(`/api/v1/notification-channels/${channel.id}`)).status, 404);
  const viewer = await p.as("viewer");
  const viewerCsrf = await viewer.csrfFor(BASE);
  assert.equal(
    (await call(viewer, "DELETE", `/api/v1/notification-channels/${channel.id}`, undefined, viewerCsrf))
      .status,
    403,
  );
  // Deleting: 204, then gone, with its vault secret; the audit log has each change and no secret.
  assert.equal((await call(admin, "DELETE", `/api/v1/notification-rules/${ruleId}`)).status, 204);
  assert.equal((await call(admin, "DELETE", `/api/v1/notification-channels/${channel.id}`)).status, 204);
  assert.equal((await admin.get(`/api/v1/notification-channels/${channel.id}`)).status, 404);
  assert.equal(await countPrefix(p.kv, "vault"), 0);
  const audit = (await auditEntries(p.kv, p.fx.tenant.account.id)).filter((e) =>
    e.action.startsWith("notification_")
  );
  assert.deepEqual(audit.map((e) => e.action).sort(), [
    "notification_channel.create",
    "notification_channel.delete",
    "notification_channel.update",
    "notification_rule.create",
    "notification_rule.delete",
  ]);
  for (const e of audit) {
    assertExcludes(e.summary, generatedSecret);
    assertExcludes(e.summary, "API-TOKEN");
  }
});
