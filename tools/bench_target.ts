/**
 * The server side of a benchmark, run as its own process so the load driver does not share its core.
 * `--mode ceiling`: a bare Deno.serve handler doing one KV atomic write (the machine's ceiling).
 * `--mode app`: the real app on a file KV seeded with a tenant (and `--users` users, 200 by default); prints
 * `READY <json>` with credentials.
 * `--mode fleet --keys FILE`: the real app with a fleet seeded from FILE (`{ engines: [publicKey…],
 * agents: [publicKey…] }`): one BES and one agent registered through the domain, the rest cloned from
 * them with their own keys and ids, all online; writes their ids to `FILE.ids.json`.
 * Both app modes also answer `GET /__bench/stats` (the heartbeat group committer's and the group reader's
 * counters) and, in fleet mode, `POST /__bench/sweep?at=ISO` (the minute sweeps of engines and hosts at that time).
 */
import { parseArgs } from "node:util";
import { createApp } from "../app.ts";
import { createApiToken } from "../domain/api_tokens.ts";
import { createSession, userActor } from "../domain/auth.ts";
import { testConfig } from "../domain/config.ts";
import {
  applyHeartbeat,
  engineByPublicKeyKey,
  engineKey,
  enginesByAccountKey,
  heartbeatCommitter,
  liveEngineKey,
  registerEngine,
  sweepEngineHeartbeats,
} from "../domain/engines.ts";
import {
  applyHostHeartbeat,
  enrollHost,
  hostByPublicKeyKey,
  hostKey,
  hostsByAccountKey,
  liveHostKey,
  sweepHostHeartbeats,
} from "../domain/hosts.ts";
import { groupReader } from "../domain/group_read.ts";
import { newId } from "../domain/ids.ts";
import { createLogger } from "../domain/log.ts";
import { systemActor } from "../domain/rbac.ts";
import { createAccount, createOrg } from "../domain/tenancy.ts";
import { createUser } from "../domain/users.ts";
import { simulatedMetrics } from "./simulator.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mode: { type: "string" },
    port: { type: "string" },
    kv: { type: "string" },
    keys: { type: "string" },
    users: { type: "string", default: "200" },
  },
});
const port = Number(values.port);
/** The heartbeat group committer's counters and the group reader's (getMany calls and keys read). */
const benchStats = () => ({ ...heartbeatCommitter(kv).stats, reader: groupReader(kv).stats });
Deno.addSignalListener("SIGINT", () => Deno.exit(0));
// SIGTERM (the bench stops targets with it) exits normally too, so `--cpu-prof` writes its profile.
Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
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
} else if (values.mode === "fleet") {
  const now = new Date();
  const system = systemActor("bench");
  const keys = JSON.parse(await Deno.readTextFile(values.keys!)) as { engines: string[]; agents: string[] };
  const account = await createAccount(kv, system, { name: "Fleet" }, now);
  const { org, secret } = await createOrg(kv, system, { accountId: account.id, name: "Ops" }, now);
  const scope = { accountId: account.id, orgId: org.id };
  const { engine } = await registerEngine(kv, scope, {
    name: "fleet-bes-0",
    deploymentModel: "on_premise",
    publicKey: keys.engines[0],
    hostname: "fleet-bes-0.bench.example",
    ipAddress: "10.0.0.10",
    port: 8443,
    version: "2.4.1",
  }, now);
  await applyHeartbeat(
    kv,
    engine.id,
    { version: "2.4.1", metrics: simulatedMetrics("t", now.getTime(), 0) },
    now,
  );
  const { host } = await enrollHost(kv, scope, {
    hostname: "fleet-agent-0.bench.example",
    os: "Debian 12",
    ipAddress: "10.1.0.10",
    publicKey: keys.agents[0],
    version: "2.4.1",
  }, now);
  await applyHostHeartbeat(kv, host.id, {
    version: "2.4.1",
    metrics: simulatedMetrics("t", now.getTime(), 0),
  }, now);
  const engineRecord = (await kv.get<Record<string, unknown>>(["engines", engine.id])).value!;
  const hostRecord = (await kv.get<Record<string, unknown>>(["hosts", host.id])).value!;
  const ids = { engines: [engine.id], agents: [host.id] };
  let op = kv.atomic();
  let n = 0;
  const add = async (entries: Array<[Deno.KvKey, unknown]>) => {
    for (const [key, value] of entries) op.set(key, value);
    if ((n += entries.length) >= 400) {
      if (!(await op.commit()).ok) throw new Error("fleet seed batch failed");
      op = kv.atomic();
      n = 0;
    }
  };
  // Clones are online with their last heartbeat now, like the templates (the sweep watches them).
  const at = new Date().toISOString();
  for (let i = 1; i < keys.engines.length; i++) {
    const id = newId(now);
    ids.engines.push(id);
    await add([
      [engineKey(id), {
        ...engineRecord,
        id,
        name: `fleet-bes-${i}`,
        hostname: `fleet-bes-${i}.bench.example`,
        publicKey: keys.engines[i],
        lastHeartbeatAt: at,
      }],
      [enginesByAccountKey(account.id, id), id],
      [engineByPublicKeyKey(keys.engines[i]), id],
      [liveEngineKey(id), true],
    ]);
  }
  for (let i = 1; i < keys.agents.length; i++) {
    const id = newId(now);
    ids.agents.push(id);
    await add([
      [hostKey(id), {
        ...hostRecord,
        id,
        hostname: `fleet-agent-${i}.bench.example`,
        publicKey: keys.agents[i],
        lastHeartbeatAt: at,
      }],
      [hostsByAccountKey(account.id, id), id],
      [hostByPublicKeyKey(keys.agents[i]), id],
      [liveHostKey(id), true],
    ]);
  }
  if (n && !(await op.commit()).ok) throw new Error("fleet seed batch failed");
  await Deno.writeTextFile(`${values.keys}.ids.json`, JSON.stringify(ids));
  const app = createApp({ kv, config: testConfig({ port }), logger: createLogger("error") });
  Deno.serve(
    { port, onListen: () => console.log("READY " + JSON.stringify({ orgSecret: secret })) },
    async (req, info) => {
      const url = new URL(req.url);
      if (url.pathname === "/__bench/stats") return Response.json(benchStats());
      if (url.pathname === "/__bench/sweep" && req.method === "POST") {
        const sweepAt = new Date(url.searchParams.get("at") ?? Date.now());
        const t0 = performance.now();
        const [engines, hosts] = await Promise.all([
          sweepEngineHeartbeats(kv, sweepAt),
          sweepHostHeartbeats(kv, sweepAt),
        ]);
        return Response.json({
          ms: performance.now() - t0,
          enginesOffline: engines.offline.length,
          hostsOffline: hosts.offline.length,
        });
      }
      return app.fetch(req, info);
    },
  );
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
  // Users for the SSR row (`--users 0` when only heartbeats are measured: hashing 200 passwords is slow).
  for (let i = 0; i < Number(values.users); i++) {
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
    (req, info) =>
      new URL(req.url).pathname === "/__bench/stats" ? Response.json(benchStats()) : app.fetch(req, info),
  );
}
