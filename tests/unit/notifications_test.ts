/** Pure rules of notifications: routing, backoff, signatures, message formatting and input schemas. */
import assert from "node:assert/strict";
import type { AlertEvent } from "../../domain/alerts.ts";
import {
  afterAttempt,
  BACKOFF_MINUTES,
  MAX_ATTEMPTS,
  nextBackoffMs,
} from "../../domain/notification_backoff.ts";
import {
  ChannelCreateInput,
  displayUrl,
  type NotificationChannel,
} from "../../domain/notification_channels.ts";
import { emailContent, type NotificationDelivery, signWebhook } from "../../domain/notification_delivery.ts";
import {
  meetsSeverity,
  type NotificationRule,
  routeEvent,
  RuleInput,
} from "../../domain/notification_rules.ts";
import { encodeHeader, formatMessage } from "../../domain/smtp.ts";

const T0 = new Date("2026-11-22T10:00:00Z");
const MIN = 60_000;

function rule(overrides: Partial<NotificationRule> = {}): NotificationRule {
  return {
    id: "r1",
    accountId: "acc",
    orgIds: "all",
    name: "rule",
    minSeverity: "warning",
    events: ["opened", "resolved"],
    channelIds: ["c1"],
    enabled: true,
    createdAt: T0.toISOString(),
    updatedAt: T0.toISOString(),
    ...overrides,
  };
}

function channel(id: string, overrides: Partial<NotificationChannel> = {}): NotificationChannel {
  return {
    id,
    accountId: "acc",
    orgId: null,
    name: id,
    enabled: true,
    createdAt: T0.toISOString(),
    updatedAt: T0.toISOString(),
    type: "webhook",
    url: "https://hooks.example.com/x",
    secretId: "v",
    secretSetAt: T0.toISOString(),
    ...overrides,
  } as NotificationChannel;
}

function event(overrides: Partial<AlertEvent> = {}): AlertEvent {
  return {
    id: "e1",
    event: "opened",
    alertId: "a1",
    accountId: "acc",
    orgId: "org1",
    subjectType: "engine",
    subjectId: "bes1",
    subjectName: "bes-1",
    reason: "engine_offline",
    severity: "critical",
    message: "BES bes-1 is offline",
    count: 1,
    at: T0.toISOString(),
    ...overrides,
  };
}

const channels = (...list: NotificationChannel[]) => new Map(list.map((c) => [c.id, c]));
const routedIds = (routes: ReturnType<typeof routeEvent>) => routes.map((r) => r.channel.id).sort();

Deno.test("meetsSeverity() orders info < warning < critical", () => {
  assert.equal(meetsSeverity("critical", "warning"), true);
  assert.equal(meetsSeverity("warning", "warning"), true);
  assert.equal(meetsSeverity("info", "warning"), false);
  assert.equal(meetsSeverity("info", "info"), true);
  assert.equal(meetsSeverity("warning", "critical"), false);
});

Deno.test("routeEvent() filters by minimum severity", () => {
  const rules = [
    rule({ id: "crit", minSeverity: "critical", channelIds: ["pager"] }),
    rule({ channelIds: ["mail"] }),
  ];
  const all = channels(channel("pager"), channel("mail"));
  assert.deepEqual(routedIds(routeEvent(event({ severity: "critical" }), rules, all)), ["mail", "pager"]);
  assert.deepEqual(routedIds(routeEvent(event({ severity: "warning" }), rules, all)), ["mail"]);
  assert.deepEqual(routedIds(routeEvent(event({ severity: "info" }), rules, all)), []);
});

Deno.test("routeEvent() filters by org; account-level alerts match only all-org rules", () => {
  const rules = [
    rule({ id: "a", orgIds: ["org1"], channelIds: ["one"] }),
    rule({ id: "b", channelIds: ["all"] }),
  ];
  const all = channels(channel("one"), channel("all"));
  assert.deepEqual(routedIds(routeEvent(event({ orgId: "org1" }), rules, all)), ["all", "one"]);
  assert.deepEqual(routedIds(routeEvent(event({ orgId: "org2" }), rules, all)), ["all"]);
  assert.deepEqual(routedIds(routeEvent(event({ orgId: null }), rules, all)), ["all"]);
});

Deno.test("routeEvent() filters by event kind and skips disabled rules and channels", () => {
  const rules = [
    rule({ id: "resolvedOnly", events: ["resolved"], channelIds: ["r"] }),
    rule({ id: "off", enabled: false, channelIds: ["x"] }),
    rule({ id: "toDisabled", channelIds: ["disabled"] }),
  ];
  const all = channels(channel("r"), channel("x"), channel("disabled", { enabled: false }));
  assert.deepEqual(routedIds(routeEvent(event({ event: "opened" }), rules, all)), []);
  assert.deepEqual(routedIds(routeEvent(event({ event: "resolved" }), rules, all)), ["r"]);
});

Deno.test("routeEvent() sends once per channel, naming every rule that routed it", () => {
  const rules = [rule({ id: "r1", channelIds: ["c1", "c2"] }), rule({ id: "r2", channelIds: ["c1"] })];
  const routes = routeEvent(event(), rules, channels(channel("c1"), channel("c2")));
  assert.equal(routes.length, 2);
  assert.deepEqual(routes.find((r) => r.channel.id === "c1")!.ruleIds, ["r1", "r2"]);
});

Deno.test("routeEvent() ignores rules and channels of another account", () => {
  const foreign = channel("c1", { accountId: "other" });
  assert.deepEqual(routeEvent(event(), [rule()], channels(foreign)), []);
  assert.deepEqual(routeEvent(event(), [rule({ accountId: "other" })], channels(channel("c1"))), []);
});

Deno.test("nextBackoffMs() waits 1, 2, 4, 8, 16 minutes, then gives up", () => {
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => nextBackoffMs(n)! / MIN), [...BACKOFF_MINUTES]);
  assert.equal(MAX_ATTEMPTS, 6);
  assert.equal(nextBackoffMs(6), null);
});

Deno.test("afterAttempt() reschedules a failure, finishes a success and gives up after the last attempt", () => {
  const base: NotificationDelivery = {
    id: "d1",
    accountId: "acc",
    orgId: null,
    channelId: "c1",
    channelName: "c1",
    channelType: "webhook",
    channelOrgId: null,
    ruleIds: [],
    payload: {} as NotificationDelivery["payload"],
    status: "pending",
    attempts: [],
    nextAttemptAt: T0.toISOString(),
    leaseUntil: T0.toISOString(),
    dueMs: T0.getTime(),
    createdAt: T0.toISOString(),
    updatedAt: T0.toISOString(),
  };
  const failure = (n: number) => ({
    number: n,
    at: T0.toISOString(),
    ok: false,
    durationMs: 1,
    httpStatus: 500,
    smtpReply: null,
    error: "HTTP 500",
  });
  const retry = afterAttempt(base, failure(1), T0);
  assert.equal(retry.status, "pending");
  assert.equal(retry.nextAttemptAt, new Date(T0.getTime() + MIN).toISOString());
  assert.equal(retry.dueMs, T0.getTime() + MIN);
  assert.equal(retry.leaseUntil, null);
  const done = afterAttempt(base, { ...failure(1), ok: true, httpStatus: 204, error: null }, T0);
  assert.equal(done.status, "delivered");
  assert.equal(done.dueMs, null);
  const five = { ...base, attempts: [1, 2, 3, 4, 5].map(failure) };
  const last = afterAttempt(five, failure(6), T0);
  assert.equal(last.status, "failed");
  assert.equal(last.attempts.length, 6);
  assert.equal(last.nextAttemptAt, null);
});

Deno.test("signWebhook() is the hex HMAC-SHA256 of timestamp.body (checked with WebCrypto)", async () => {
  const secret = "whsec_test-secret-0123456789";
  const body = JSON.stringify({ event: "opened", message: "é ✓" });
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`1795341600.${body}`));
  const hex = [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(signWebhook(secret, "1795341600", body), `sha256=${hex}`);
  assert.notEqual(signWebhook(secret, "1795341601", body), `sha256=${hex}`);
});

Deno.test("displayUrl() hides a webhook URL's path, which may carry a token", () => {
  assert.equal(displayUrl("https://hooks.example.com/services/T0/B0/SECRET"), "https://hooks.example.com/…");
  assert.equal(displayUrl("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
  assert.equal(displayUrl("not a url"), "(invalid URL)");
});

Deno.test("emailContent() names the event, severity and subject", () => {
  const payload = {
    event: "resolved" as const,
    alertId: "a1",
    accountId: "acc",
    orgId: null,
    subject: { type: "storage_target", id: "t1", name: "nas-1" },
    reason: "storage_critical",
    severity: "critical" as const,
    message: "Storage target nas-1 is critical",
    count: 3,
    occurredAt: T0.toISOString(),
    openedAt: T0.toISOString(),
    resolvedAt: T0.toISOString(),
  };
  const { subject, text } = emailContent({ id: "d1", channelName: "ops", payload }, "https://cadres.example");
  assert.equal(subject, "[Cadres] RESOLVED nas-1: storage critical");
  assert.match(text, /Storage target nas-1 is critical/);
  assert.match(text, /Raised: +3 times/);
  assert.match(text, /https:\/\/cadres\.example\/backup\/alerts/);
  const opened = emailContent({ id: "d1", channelName: "ops", payload: { ...payload, event: "opened" } });
  assert.equal(opened.subject, "[Cadres] CRITICAL nas-1: storage critical");
});

Deno.test("formatMessage() writes CRLF headers, encodes non-ASCII subjects and keeps CR/LF out of headers", () => {
  const text = formatMessage({
    from: "alerts@example.com",
    to: ["a@example.com", "b@example.com"],
    subject: "Héllo\r\nBcc: evil@example.com",
    text: "line 1\nline 2",
    date: T0,
    messageId: "x@example.com",
  });
  const [head, body] = text.split("\r\n\r\n");
  assert.match(head, /^From: alerts@example\.com\r\nTo: a@example\.com, b@example\.com\r\n/);
  assert.ok(!/^Bcc:/m.test(head), "no injected header");
  assert.match(head, /Subject: =\?UTF-8\?B\?/);
  assert.match(head, /Date: Sun, 22 Nov 2026 10:00:00 \+0000/);
  assert.equal(body, "line 1\r\nline 2");
  assert.equal(encodeHeader("plain"), "plain");
  const decoded = encodeHeader("Ünïcode ".repeat(10)).split("\r\n ").map((w) =>
    new TextDecoder().decode(Uint8Array.from(atob(w.slice(10, -2)), (c) => c.charCodeAt(0)))
  ).join("");
  assert.equal(decoded, "Ünïcode ".repeat(10));
});

Deno.test("ChannelCreateInput names the field of each bad value", () => {
  const bad = ChannelCreateInput.safeParse({
    type: "webhook",
    name: "",
    url: "ftp://example.com",
    secret: "short",
  });
  assert.ok(!bad.success);
  const paths = new Set(bad.error.issues.map((i) => i.path.join(".")));
  assert.deepEqual([...paths].sort(), ["name", "secret", "url"]);
  const email = ChannelCreateInput.safeParse({
    type: "email",
    name: "Mail",
    host: "smtp example",
    port: "70000",
    tlsMode: "ssl",
    from: "nobody",
    to: ["ops@example.com", "not-an-address"],
  });
  assert.ok(!email.success);
  const byPath = Object.fromEntries(email.error.issues.map((i) => [i.path.join("."), i.message]));
  assert.deepEqual(Object.keys(byPath).sort(), ["from", "host", "port", "tlsMode", "to"]);
  assert.match(byPath.to, /"not-an-address" is not an email address/);
  assert.ok(!ChannelCreateInput.safeParse({ type: "sms", name: "x" }).success);
});

Deno.test("RuleInput needs events, channels and orgs (all or at least one)", () => {
  const bad = RuleInput.safeParse({ name: "r", minSeverity: "high", orgIds: [], events: [], channelIds: [] });
  assert.ok(!bad.success);
  const byPath = Object.fromEntries(bad.error.issues.map((i) => [i.path.join("."), i.message]));
  assert.deepEqual(Object.keys(byPath).sort(), ["channelIds", "events", "minSeverity", "orgIds"]);
  assert.match(byPath.orgIds, /choose all organizations or at least one/);
  const ok = RuleInput.parse({
    name: "r",
    minSeverity: "info",
    orgIds: "all",
    events: ["opened", "opened"],
    channelIds: ["c", "c"],
  });
  assert.deepEqual(ok.events, ["opened"]);
  assert.deepEqual(ok.channelIds, ["c"]);
});
