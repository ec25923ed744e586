/**
 * The server side of a benchmark, run as its own process so the load driver does not share its core.
 * `--mode ceiling`: a bare Deno.serve handler doing one KV atomic write (the machine's ceiling).
 * `--mode app`: the real app on a file KV seeded with a tenant; prints `READY <json>` with credentials.
 */
import { parseArgs } from "node:util";
import { createApp } from "../app.ts";
import { createApiToken } from "../domain/api_tokens.ts";
import { createSession, userActor } from "../domain/auth.ts";
import { testConfig } from "../domain/config.ts";
import { createLogger } from "../domain/log.ts";
import { systemActor } from "../domain/rbac.ts";
import { createAccount, createOrg } from "../domain/tenancy.ts";
import { createUser } from "../domain/users.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { mode: { type: "string" }, port: { type: "string" }, kv: { type: "string" } },
});
const port = Number(values.port);
Deno.addSignalListener("SIGINT", () => Deno.exit(0));
const kv = await Deno.openKv(values.kv);

if (values.mode === "ceiling" || values.mode === "ceiling_read") {
  let n = 0;
  const read = values.mode === "ceiling_read";
  Deno.serve({ port, onListen: () => console.log("READY {}") }, async () => {
    const key = ["bench", "ceiling", n++ % 1000];
    if (read) await kv.get(key);
    await kv.atomic().set(key, Date.now()).commit();
    return new Response('{"ok":true}', { headers: { "content-type": "application/json" } });
  });
} else {
  const now = new Date();
  const system = systemActor("bench");
  const account = await createAccount(kv, system, { name: "Bench" }, now);
  const orgs = [];
  let orgSecret = "";
  for (let i = 0; i < 20; i++) {
    const { org, secret } = await createOrg(kv, system, { accountId: account.id, name: `Org ${i}` }, now);
    orgs.push(org);
    if (i === 0) orgSecret = secret;
  }
  const admin = await createUser(kv, system, {
    accountId: account.id,
    email: "admin@bench.example",
    name: "Bench Admin",
    role: "admin",
    orgScope: "all",
    password: "bench-password-123",
  }, now);
  for (let i = 0; i < 200; i++) {
    await createUser(kv, system, {
      accountId: account.id,
      email: `user${i}@bench.example`,
      name: `User ${i}`,
      role: i % 2 ? "viewer" : "operator",
      orgScope: [orgs[i % orgs.length].id],
      password: "bench-password-123",
    }, now);
  }
  const { secret } = await createApiToken(kv, userActor(admin), {
    name: "bench",
    permissions: ["backup.view", "backup.manage", "admin"],
    expiresInDays: 0,
  }, now);
  const { cookie } = await createSession(kv, admin, now);
  const app = createApp({ kv, config: testConfig({ port }), logger: createLogger("error") });
  Deno.serve(
    { port, onListen: () => console.log("READY " + JSON.stringify({ token: secret, cookie, orgSecret })) },
    (req, info) => app.fetch(req, info),
  );
}
