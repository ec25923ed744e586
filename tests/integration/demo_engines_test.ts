/**
 * `deno task demo`'s real engines (tools/demo_engines.ts): against the real app on a loopback port with the
 * demo data seeded, a real BES and two real agents start as subprocesses (data under the data dir), back up
 * their generated sample folders to a Local target, and the points restore for real (a folder restored to
 * another path equals the sample); stop() ends all three.
 */
import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { createLogger } from "../../domain/log.ts";
import { requestFileRestore } from "../../domain/restore_requests.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { DEMO_AGENTS, startDemoEngines } from "../../tools/demo_engines.ts";
import { seedDemo } from "../../tools/seed_demo.ts";
import { config, system, waitFor } from "./bes_world.ts";

async function tree(root: string, at = ""): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const e of Deno.readDir(`${root}${at}`)) {
    const path = `${at}/${e.name}`;
    if (e.isDirectory) { for (const [k, v] of await tree(root, path)) out.set(k, v); }
    else out.set(path, (await Deno.readFile(`${root}${path}`)).toBase64());
  }
  return out;
}

Deno.test({
  name:
    "demo engines: a real BES and two real agents (subprocesses) back up generated sample folders to a Local target under the data dir; a point restores a folder byte-identical; stop() ends them",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const kv = await Deno.openKv(":memory:");
    const app = createApp({ kv, config, logger: createLogger("error", () => {}) });
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req, info) => app.fetch(req, { remoteAddr: { hostname: (info.remoteAddr as Deno.NetAddr).hostname } }),
    );
    const dataDir = await Deno.makeTempDir({ prefix: "cadres-demo-test-" });
    await seedDemo(kv, new Date());
    const demo = await startDemoEngines(kv, {
      baseUrl: `http://127.0.0.1:${server.addr.port}`,
      dataDir,
      masterKey: config.masterKey!,
      log: () => {},
    });
    try {
      assert.equal(demo.dir, `${await Deno.realPath(dataDir)}/demo`);
      for (const host of DEMO_AGENTS) {
        const files = await tree(`${demo.dir}/samples/${host}`);
        assert.ok(files.size >= 200, `${host}: a few hundred sample files, got ${files.size}`);
      }
      const points = await waitFor("a restore point for each demo host", async () => {
        const all = (await Array.fromAsync(kv.list<RestorePoint>({ prefix: ["restore_points"] })))
          .map((e) => e.value).filter((p) => p.policyId === demo.policyId && p.status === "complete");
        const byHost = new Map(all.map((p) => [p.hostId, p]));
        return demo.hostIds.every((h) => byHost.has(h)) ? demo.hostIds.map((h) => byHost.get(h)!) : null;
      }, 90_000);
      assert.ok(points.every((p) => p.fileCount >= 200), JSON.stringify(points.map((p) => p.fileCount)));

      // Restore one host's Documents folder to another path: the same bytes come back.
      const sample = `${demo.dir}/samples/${DEMO_AGENTS[0]}/Documents`;
      const target = `${dataDir}/restored`;
      const restore = await requestFileRestore(kv, system, {
        restorePointId: points[0].id,
        paths: [sample],
        targetPath: target,
      }, new Date());
      const done = await waitFor("the restore to finish", async () => {
        const v = (await kv.get<{ status: string }>(["restores", restore.id])).value;
        return v && v.status !== "pending" && v.status !== "running" ? v : null;
      }, 60_000);
      assert.equal(done.status, "success", JSON.stringify(done));
      assert.deepEqual(await tree(`${target}${sample}`), await tree(sample));
    } finally {
      await demo.stop();
      await server.shutdown();
      kv.close();
    }
    // Every subprocess has exited: nothing holds the demo's folders any more.
    await Deno.remove(dataDir, { recursive: true });
  },
});
