import assert from "node:assert/strict";
import { deletingEngineKey, type Engine, engineKey, liveEngineKey } from "../../domain/engines.ts";
import { createPolicy, deletePolicyCascade } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { createTarget } from "../../domain/storage.ts";
import {
  assertIncludes,
  childEnv,
  createTenant,
  freePort,
  registerTestEngine,
  REPO_ROOT,
  runDeno,
  targetInput,
} from "../helpers.ts";

Deno.test("main.ts with CADRES_LOG_LEVEL=verbose exits non-zero with one stderr line naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cadres-main-" });
  try {
    const { code, stdout, stderr } = await runDeno(["run", "-A", "main.ts"], {
      CADRES_DATA_DIR: dir,
      CADRES_LOG_LEVEL: "verbose",
      PORT: String(freePort()),
    });
    assert.notEqual(code, 0);
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 1, `stderr should be one line, got: ${stderr}`);
    assert.match(lines[0], /\bCADRES_LOG_LEVEL\b/);
    assert.equal(stdout, "");
    // It refused before touching the data folder.
    assert.equal([...Deno.readDirSync(dir)].length, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Starts the server; stderr is collected in the background until it exits. */
function startServer(dataDir: string, port: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts"],
    cwd: REPO_ROOT,
    env: childEnv({ CADRES_DATA_DIR: dataDir, PORT: String(port), CADRES_LOG_LEVEL: "warn" }),
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  return { child, stderr };
}

async function stop(server: ReturnType<typeof startServer>) {
  try {
    server.child.kill("SIGTERM");
  } catch {
    // already exited
  }
  await server.child.status;
  await server.stderr;
}

async function waitForHealthz(port: number, server: ReturnType<typeof startServer>, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  server.child.status.then(() => exited = true);
  while (Date.now() < deadline && !exited) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      const body = await res.json();
      if (res.status === 200) return body;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the server did not become healthy: ${exited ? await server.stderr : "timeout"}`);
}

Deno.test("a second server on the same CADRES_DATA_DIR exits quickly naming another Cadres process", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cadres-lock-" });
  const firstPort = freePort();
  const first = startServer(dir, firstPort);
  try {
    assert.deepEqual(await waitForHealthz(firstPort, first), { status: "ok" });

    const started = Date.now();
    const second = await runDeno(["run", "-A", "main.ts"], {
      CADRES_DATA_DIR: dir,
      PORT: String(freePort()),
      CADRES_LOG_LEVEL: "warn",
    });
    const elapsed = Date.now() - started;
    assert.notEqual(second.code, 0);
    assertIncludes(second.stderr, "another Cadres process");
    assert.ok(elapsed < 20_000, `took ${elapsed} ms to refuse`);

    // The first server is unharmed.
    const res = await fetch(`http://127.0.0.1:${firstPort}/readyz`);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).status, "ready");
  } finally {
    await stop(first);
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Starts main.ts on `dir` (log level info), waits for the start-up consistency check's summary line,
 * checks the server answers, stops it and returns the JSON log lines.
 */
async function runUntilChecked(dir: string): Promise<Array<Record<string, unknown>>> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts"],
    cwd: REPO_ROOT,
    env: childEnv({ CADRES_DATA_DIR: dir, PORT: String(port), CADRES_LOG_LEVEL: "info" }),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let stdout = "";
  const reading = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) stdout += chunk;
  })();
  try {
    const deadline = Date.now() + 30_000;
    while (!stdout.includes(`"msg":"invariant check"`) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const lines = stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(lines.some((l) => l.msg === "invariant check"), `no summary line in: ${stdout}`);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    return lines;
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reading;
    await stderr;
  }
}

Deno.test("main.ts runs the consistency check in the background once started: logs the violation, alerts, stores the result", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cadres-invariants-" });
  const now = new Date();
  let accountId = "";
  {
    // A data folder whose policy writes to a target that is gone.
    using kv = await Deno.openKv(`${dir}/cadres.kv`);
    const tenant = await createTenant(kv, "Acme", ["Ops"], now);
    accountId = tenant.account.id;
    await kv.set(["policies", "p-orphan"], {
      id: "p-orphan",
      accountId,
      orgId: tenant.orgs[0].id,
      besId: "bes-gone",
      targetId: "target-gone",
      name: "orphan",
      enabled: true,
      pausedReason: null,
      updatedAt: now.toISOString(),
    });
  }
  try {
    const lines = await runUntilChecked(dir);
    const listening = lines.findIndex((l) => l.msg === "listening");
    const summary = lines.findIndex((l) => l.msg === "invariant check");
    assert.ok(listening >= 0 && listening < summary, "the server listened before the check finished");
    assert.equal(lines[summary].trigger, "startup");
    assert.equal(lines[summary].complete, true);
    assert.ok(
      lines.some((l) =>
        l.msg === "invariant violation" && l.level === "error" &&
        l.violation === "policy p-orphan writes to missing target target-gone"
      ),
    );
    using kv = await Deno.openKv(`${dir}/cadres.kv`);
    const record = (await kv.get<{ trigger: string; violationCount: number }>(["invariant_checks", "last"]))
      .value;
    assert.equal(record?.trigger, "startup");
    assert.equal(record?.violationCount, 1);
    const open = await kv.get(["alerts_open", "account", accountId, "invariant_violation"]);
    assert.ok(open.value, "the account has an open invariant_violation alert");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts after a crash mid-delete resumes the engine deletion before the start-up check: no false violation", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cadres-resume-" });
  const now = new Date();
  let accountId = "";
  let engineId = "";
  {
    // The crash: the BES was marked deleting and its policy deleted (its target still counts it and
    // the BES still lists the target), then the process died.
    using kv = await Deno.openKv(`${dir}/cadres.kv`);
    const tenant = await createTenant(kv, "Acme", ["Ops"], now);
    accountId = tenant.account.id;
    const scope = { accountId, orgId: tenant.orgs[0].id };
    const { engine } = await registerTestEngine(kv, scope, now, "doomed");
    engineId = engine.id;
    const system = systemActor("test");
    const target = await createTarget(kv, system, targetInput(engine.id), {
      now,
      masterKey: new Uint8Array(32),
    });
    const policy = await createPolicy(kv, system, {
      name: "nightly",
      besId: engine.id,
      targetId: target.id,
      backupType: "file",
      fullSchedule: "0 2 * * *",
    }, now);
    const entry = await kv.get<Engine>(engineKey(engine.id));
    await kv.atomic().check(entry)
      .set(engineKey(engine.id), { ...entry.value!, status: "deleting", statusReason: "Being deleted" })
      .set(deletingEngineKey(engine.id), now.toISOString())
      .delete(liveEngineKey(engine.id))
      .commit();
    await deletePolicyCascade(kv, policy, now);
  }
  try {
    const lines = await runUntilChecked(dir);
    const resumed = lines.findIndex((l) => l.msg === "resumed engine deletions");
    const summary = lines.findIndex((l) => l.msg === "invariant check");
    assert.ok(resumed >= 0 && resumed < summary, "the deletion was resumed before the check");
    assert.equal(lines[resumed].resumed, 1);
    assert.deepEqual(
      [lines[summary].trigger, lines[summary].complete, lines[summary].violations],
      ["startup", true, 0],
    );
    assert.ok(!lines.some((l) => l.msg === "invariant violation"), "no violation logged");

    using kv = await Deno.openKv(`${dir}/cadres.kv`);
    assert.equal((await kv.get(engineKey(engineId))).value, null, "the cascade finished");
    const record = (await kv.get<{ trigger: string; violationCount: number }>(["invariant_checks", "last"]))
      .value;
    assert.deepEqual([record?.trigger, record?.violationCount], ["startup", 0]);
    const open = await kv.get(["alerts_open", "account", accountId, "invariant_violation"]);
    assert.equal(open.value, null, "no invariant_violation alert");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
