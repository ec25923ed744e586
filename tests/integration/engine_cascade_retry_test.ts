/**
 * The engine cascade's storage-target step when a target keeps changing (its commit loses every race):
 * the target and its capacity history stay for the resume job, the deletion reports itself incomplete,
 * and the next run finishes it. Before the step used `withRetry`, ten lost races fell through to purging
 * the history of a target that was still there.
 */
import assert from "node:assert/strict";
import { finishEngineDeletion, getEngine, markEngineDeleting } from "../../domain/engines.ts";
import { ConflictError } from "../../domain/errors.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyCapacityReport, createTarget, type StorageTarget, targetKey } from "../../domain/storage.ts";
import { createTenant, registerTestEngine, targetInput } from "../helpers.ts";

const T0 = new Date("2026-11-22T10:00:00Z");
const MASTER_KEY = new Uint8Array(32).fill(7);

/** `kv` where, before every atomic commit, another writer rewrites the target `id` (a new versionstamp). */
function targetKeepsChanging(kv: Deno.Kv, id: string): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = async () => {
            const current = await target.get<StorageTarget>(targetKey(id));
            if (current.value) await target.set(targetKey(id), current.value);
            return await commit();
          };
          return op;
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

async function historyOf(kv: Deno.Kv, targetId: string): Promise<number> {
  let n = 0;
  for (const prefix of [["capacity_samples", targetId], ["capacity_daily", targetId]]) {
    for await (const _ of kv.list({ prefix })) n++;
  }
  return n;
}

Deno.test("a target that keeps changing is left, with its history, for the resume job — then removed", async () => {
  using kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Acme", ["Ops"], T0);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, T0);
  const system = systemActor("test");
  const target = await createTarget(kv, system, targetInput(engine.id), { now: T0, masterKey: MASTER_KEY });
  await applyCapacityReport(kv, engine.id, {
    targetId: target.id,
    totalBytes: 1000,
    usedBytes: 500,
    freeBytes: 500,
  }, T0);
  const history = await historyOf(kv, target.id);
  assert.ok(history >= 2, "a sample and a daily roll-up");

  await markEngineDeleting(kv, system, engine.id, T0);
  await assert.rejects(
    () => finishEngineDeletion(targetKeepsChanging(kv, target.id), engine.id, T0),
    (e) => e instanceof ConflictError && /incomplete; it will be resumed/.test(e.message),
  );
  assert.ok((await kv.get(targetKey(target.id))).value, "the target is still there");
  assert.equal(await historyOf(kv, target.id), history, "and so is its capacity history");
  assert.equal((await getEngine(kv, engine.id))?.status, "deleting", "the engine waits for the resume job");

  await finishEngineDeletion(kv, engine.id, T0); // the resume job, once the writer is quiet
  assert.equal((await kv.get(targetKey(target.id))).value, null);
  assert.equal(await historyOf(kv, target.id), 0);
  assert.equal(await getEngine(kv, engine.id), null);
});
