/**
 * A vendor that echoes what the connector sent (the login form, the JSON login body, the Authorization
 * header) must not put the platform's password or token into the sync error that viewers read: through
 * the real Veeam and Cohesity connectors against the fake servers, a password with `+ / & ! "`, a space,
 * a backslash and unicode comes back in none of its encodings — not in the sync report, the stored
 * platform, the KV or the Platforms page. The same for an SMTP server that echoes `AUTH PLAIN`.
 */
import assert from "node:assert/strict";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { createPlatform, type PlatformCreateInput } from "../../domain/platforms.ts";
import { syncPlatform } from "../../domain/platform_sync.ts";
import { sendMail, SmtpError } from "../../domain/smtp.ts";
import { COHESITY_USER, startFakeCohesity } from "../fakes/cohesity_server.ts";
import type { Fault, LoggedRequest } from "../fakes/fake_http.ts";
import { startFakeVeeam, VEEAM_USER } from "../fakes/veeam_server.ts";
import { addUser, assertIncludes, Browser, createTenant, dumpKv, signInAs, testApp } from "../helpers.ts";

const masterKey = testConfig().masterKey!;
const NOW = new Date("2026-11-22T10:00:00Z");
const PASSWORD = 'Vbr p+a/s&s!"w\\rd-é😀';

function b64(text: string): string {
  let binary = "";
  for (const b of new TextEncoder().encode(text)) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** The password in every encoding the connectors send it in (computed here, not by the scrubber). */
function forms(user: string): string[] {
  const form = new URLSearchParams({ p: PASSWORD }).toString().slice(2);
  const uri = encodeURIComponent(PASSWORD);
  const lower = (s: string) => s.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase());
  return [
    PASSWORD,
    form,
    lower(form),
    form.replaceAll("+", "%20"),
    uri,
    lower(uri),
    JSON.stringify(PASSWORD).slice(1, -1),
    b64(PASSWORD),
    b64(`${user}:${PASSWORD}`),
  ];
}

function assertNoForm(text: string, user: string, where: string): void {
  for (const f of forms(user)) {
    assert.ok(!text.includes(f), `${where}: ${JSON.stringify(f)} leaked in ${text}`);
  }
}

const echoBody = (r: LoggedRequest) => ({
  errorCode: "BadRequest",
  message: `cannot process body ${r.body}`,
});

Deno.test("a vendor echoing the login body or Authorization header leaks no form of the password or token", async () => {
  using kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Acme", ["A1"], NOW);
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", NOW);
  const viewer = await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", NOW);
  const org = tenant.orgs[0].id;
  const tokens: string[] = [];
  const veeam = (name: string) => ({ type: "veeam" as const, name, username: VEEAM_USER });

  const cases: Array<
    { name: string; input: Omit<PlatformCreateInput, "orgId" | "endpointUrl" | "password">; faults: Fault[] }
  > = [
    {
      name: "Veeam: login answers 500 with the form body, four times",
      input: veeam("v500"),
      faults: [{ method: "POST", path: "/api/oauth2/token", status: 500, body: echoBody, times: Infinity }],
    },
    {
      name: "Veeam: login answers 422 with the form body as plain text",
      input: veeam("v422"),
      faults: [{
        method: "POST",
        path: "/api/oauth2/token",
        status: 422,
        body: (r: LoggedRequest) => `unreadable: ${r.body}`,
      }],
    },
    {
      name: "Veeam: a call echoes its bearer token",
      input: veeam("vtok"),
      faults: [{
        path: "/api/v1/jobs/states",
        status: 403,
        body: (r: LoggedRequest) => {
          tokens.push(r.authorization!.slice("Bearer ".length));
          return { message: `${r.authorization} may not list jobs` };
        },
      }],
    },
    {
      name: "Cohesity: login answers 500 with the JSON body as plain text",
      input: { type: "cohesity", name: "c500", username: COHESITY_USER },
      faults: [{
        method: "POST",
        path: /accessTokens$/,
        status: 500,
        body: (r: LoggedRequest) => `bad body ${r.body}`,
        times: 4,
      }],
    },
  ];
  for (const c of cases) {
    // One server per case: a server is registered once per account.
    await using fake = c.input.type === "veeam" ? await startFakeVeeam() : await startFakeCohesity();
    fake.password = PASSWORD;
    fake.faults = c.faults;
    const platform = await createPlatform(
      kv,
      userActor(admin),
      { ...c.input, orgId: org, endpointUrl: fake.url, password: PASSWORD },
      { now: NOW, masterKey },
    );
    const report = await syncPlatform(kv, platform.id, {
      masterKey,
      now: NOW,
      sleep: () => Promise.resolve(),
    });
    assert.equal(report.status, "failed", c.name);
    assert.match(
      report.error!,
      /\[redacted\]/,
      `${c.name}: the echo was scrubbed, not dropped: ${report.error}`,
    );
    assertNoForm(report.error!, c.input.username, c.name);
    for (const token of tokens) assert.ok(!report.error!.includes(token), `${c.name}: the token leaked`);
  }
  assert.equal(tokens.length, 1, "the token echo was served");

  // Nothing anywhere: not in KV (the vault holds the password encrypted), not on the page viewers read.
  const stored = JSON.stringify(await dumpKv(kv), (_k, v) => v instanceof Uint8Array ? "(bytes)" : v);
  assertNoForm(stored, VEEAM_USER, "KV");
  assertNoForm(stored, COHESITY_USER, "KV");
  assert.ok(!stored.includes(tokens[0]), "the token is in KV");
  const browser = new Browser(testApp(kv).app);
  await signInAs(browser, kv, viewer, NOW);
  const page = await (await browser.get("/backup/platforms")).text();
  for (const name of ["v500", "v422", "vtok", "c500"]) assertIncludes(page, name);
  assert.match(page, /\[redacted\]/);
  const text = page.replaceAll("&amp;", "&").replaceAll("&quot;", '"').replaceAll("&#39;", "'");
  assertNoForm(text, VEEAM_USER, "the Platforms page");
  assertNoForm(text, COHESITY_USER, "the Platforms page");
});

/** An SMTP server that refuses AUTH by echoing the command it got (some do, in their 535 reply). */
function echoingSmtpServer() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serve = (async () => {
    for await (const conn of listener) {
      const encoder = new TextEncoder();
      const send = (line: string) => conn.write(encoder.encode(line + "\r\n"));
      await send("220 echo.example ESMTP");
      let buffer = "";
      const chunk = new Uint8Array(4096);
      for (let n = await conn.read(chunk); n !== null; n = await conn.read(chunk)) {
        buffer += new TextDecoder().decode(chunk.subarray(0, n));
        let end;
        while ((end = buffer.indexOf("\r\n")) >= 0) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (line.startsWith("EHLO")) await send("250-echo.example\r\n250 AUTH PLAIN");
          else await send(`535 5.7.8 Authentication failed: ${line}`);
        }
      }
      conn.close();
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async [Symbol.asyncDispose]() {
      listener.close();
      await serve.catch(() => {});
    },
  };
}

Deno.test("an SMTP server echoing AUTH PLAIN (base64 of user and password) leaks no form of the password", async () => {
  await using server = echoingSmtpServer();
  const error = await sendMail(
    {
      host: "127.0.0.1",
      port: server.port,
      tlsMode: "none",
      username: "alerts@acme.example",
      password: PASSWORD,
    },
    {
      from: "a@acme.example",
      to: ["b@acme.example"],
      subject: "s",
      text: "t",
      date: NOW,
      messageId: "m@acme",
    },
  ).then(() => null, (e: unknown) => e);
  assert.ok(error instanceof SmtpError, String(error));
  assert.match(error.message, /^AUTH PLAIN was refused: 535 5\.7\.8 Authentication failed: AUTH PLAIN /);
  for (const text of [error.message, error.reply ?? ""]) {
    assertNoForm(text, "alerts@acme.example", "SMTP error");
    const plain = b64(`\0alerts@acme.example\0${PASSWORD}`);
    assert.ok(!text.includes(plain.slice(-12)), `the end of the AUTH PLAIN blob leaked: ${text}`);
  }
});
