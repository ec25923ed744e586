/**
 * The agent's restore drill deletes only a folder of its own below the scratch path
 * (`<scratchPath>/cadres-drill-<job id>`): a job id that is not a plain name (one that climbs out with
 * "/" and "..") is refused before anything on the host is touched.
 */
import assert from "node:assert/strict";
import { drillJob } from "../../engine/agent/drill.ts";
import type { ClaimedJob } from "../../engine/agent/control.ts";
import { AgentJobError } from "../../engine/agent/failure.ts";
import type { AgentContext } from "../../engine/agent/jobs.ts";
import type { JobHandle } from "../../engine/agent/job_handle.ts";

Deno.test("drill: a job id that climbs out of the scratch folder is refused and no user folder is deleted", async () => {
  const root = await Deno.makeTempDir();
  try {
    const scratch = `${root}/scratch`;
    // A folder an earlier drill left (or anything named so), and a user's folder beside the scratch path.
    await Deno.mkdir(`${scratch}/cadres-drill-x`, { recursive: true });
    await Deno.mkdir(`${root}/victim`);
    await Deno.writeTextFile(`${root}/victim/precious.txt`, "keep me");
    const ctx = {
      control: {
        keys: () =>
          Promise.resolve({
            namespace: "n",
            repository: { target: "t", path: "p", generation: 1 },
            dataKey: new Uint8Array(32),
            idKey: new Uint8Array(32),
            recoveryPublicKey: null,
          }),
        postResultPart: () => Promise.resolve(),
      },
      log: () => {},
    } as unknown as AgentContext;
    const job: ClaimedJob = {
      id: "x/../../victim",
      kind: "restore_drill",
      priority: "normal",
      payload: {
        engineRestorePointId: "a".repeat(64),
        restorePointId: "p",
        bes: { id: "b", dataUrl: "https://127.0.0.1:1" },
        scratchPath: scratch,
        mode: "sample",
        sampleCount: 1,
      },
      leaseExpiresAt: new Date().toISOString(),
      dataToken: null,
      dataTokenExpiresAt: null,
    };
    const handle = { progress: () => {} } as unknown as JobHandle;
    let refused: unknown = null;
    try {
      await drillJob(ctx, job, handle, new Date());
    } catch (e) {
      refused = e;
    }
    assert.equal(
      await Deno.readTextFile(`${root}/victim/precious.txt`),
      "keep me",
      "the user's folder outside the scratch path survives",
    );
    assert.ok(refused instanceof AgentJobError, `refused with a clear error, got ${refused}`);
    assert.equal(refused.reason, "INVALID_PAYLOAD");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
