/**
 * The BES program's data API wiring (engine/bes/data_service.ts): a token's repository resolved to one of
 * this BES's targets (and nothing else), the control plane's token key of the registration reply.
 */
import assert from "node:assert/strict";
import nodeCrypto from "node:crypto";
import { DataApiError } from "../../engine/bes/data_api.ts";
import { targetRepositoryResolver, tokenKeyOf } from "../../engine/bes/data_service.ts";
import type { TargetInfo } from "../../engine/bes/storage.ts";
import { exportTokenPublicKey } from "../../engine/protocol/token.ts";
import { tempDir } from "./helpers.ts";

function local(id: string, path: string, updatedAt = "1"): TargetInfo {
  return { id, name: `t-${id}`, type: "local", config: { path }, credentials: null, updatedAt };
}

Deno.test("targetRepositoryResolver: a token's repository is a policy's generation folder of this BES's target", async () => {
  await using dir = await tempDir();
  const targets = new Map<string, TargetInfo>([["T1", local("T1", dir.path)], [
    "GONE",
    local("GONE", `${dir.path}/missing`),
  ]]);
  let finds = 0;
  const resolve = targetRepositoryResolver({
    find: (id) => {
      finds++;
      return Promise.resolve(targets.get(id) ?? null);
    },
  }, { mounts: "/nonexistent" });
  const repo = { target: "T1", path: "cadres/POL1/g2", generation: 2 };
  const backend = await resolve(repo);
  assert.ok(backend);
  assert.equal(backend.location, `${dir.path}/cadres/POL1/g2`);
  // The same backend object every time (the data API keeps its caches per backend).
  assert.equal(await resolve(repo), backend);
  // Not a repository path, a generation that does not match, another BES's target: not served.
  for (
    const bad of [
      { ...repo, path: "cadres/POL1/g2/../../x" },
      { ...repo, path: "cadres/POL1/g3" },
      { ...repo, path: "keys" },
      { ...repo, path: "cadres/POL1/g2", generation: 1 },
      { ...repo, target: "OTHER" },
    ]
  ) {
    assert.equal(await resolve(bad), null, JSON.stringify(bad));
  }
  // A target that is not reachable: 502, tried again on the next request.
  await assert.rejects(
    Promise.resolve(resolve({ ...repo, target: "GONE" })),
    (e: unknown) => e instanceof DataApiError && e.status === 502 && /missing does not exist/.test(e.message),
  );
  await Deno.mkdir(`${dir.path}/missing`);
  assert.ok(await resolve({ ...repo, target: "GONE" }));
  // An edited target (new settings): opened again, at its new place.
  await Deno.mkdir(`${dir.path}/moved`);
  targets.set("T1", local("T1", `${dir.path}/moved`, "2"));
  assert.equal((await resolve(repo))!.location, `${dir.path}/moved/cadres/POL1/g2`);
  assert.ok(finds >= 5);
});

Deno.test("tokenKeyOf: the registration reply's tokenPublicKey, parsed once; none before the control plane sends it", () => {
  const pair = nodeCrypto.generateKeyPairSync("ed25519");
  const reply: Record<string, unknown> = {};
  const key = tokenKeyOf(() => reply);
  assert.equal(key(), null);
  reply.tokenPublicKey = exportTokenPublicKey(pair.publicKey);
  const k = key()!;
  assert.equal(exportTokenPublicKey(k), reply.tokenPublicKey);
  assert.equal(key(), k);
});
