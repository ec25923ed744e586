/**
 * The crash tests' subprocess (crash_test.ts): runs `deno task repo …` (the real command line) or a gc
 * through the library over a local repository whose writes are reported and can be frozen, so the test
 * can SIGKILL it at a known point.
 *
 *   deno run -A tests/engine/crash_driver.ts repo <command> …        the command line, unchanged
 *   deno run -A tests/engine/crash_driver.ts gc REPO                   garbageCollect (CRASH_GRACE_MS, CRASH_STALE_MS)
 *
 * Every completed put (or putParts) and delete prints "@@put NAME SIZE" / "@@delete NAME" on stderr. With
 * CRASH_HANG_AT="put:data/:N" (op, name prefix, count), once the N-th matching operation has completed the
 * driver prints "@@hang" and never completes another put or delete: the test kills it there.
 */
import { LocalBackend } from "../../engine/repo/backend.ts";
import { runRepoCli } from "../../engine/cli.ts";
import { garbageCollect } from "../../engine/repo/gc.ts";

const hangSpec = Deno.env.get("CRASH_HANG_AT")?.split(":") ?? null;
let matched = 0;
let hanging = false;

async function hang(): Promise<never> {
  setInterval(() => {}, 60_000); // keeps the event loop alive while frozen
  return await new Promise<never>(() => {});
}

async function after(op: "put" | "delete", name: string) {
  if (!hangSpec || hanging) return;
  const [hOp, prefix, n] = hangSpec;
  if (hOp === op && name.startsWith(prefix) && ++matched >= Number(n)) {
    hanging = true;
    console.error("@@hang");
    await hang();
  }
}

const put = LocalBackend.prototype.put;
LocalBackend.prototype.put = async function (name: string, data: Uint8Array) {
  if (hanging) await hang();
  await put.call(this, name, data);
  console.error(`@@put ${name} ${data.length}`);
  await after("put", name);
};
const putParts = LocalBackend.prototype.putParts;
LocalBackend.prototype.putParts = async function (name: string, parts: Uint8Array[]) {
  if (hanging) await hang();
  await putParts.call(this, name, parts);
  console.error(`@@put ${name} ${parts.reduce((n, p) => n + p.length, 0)}`);
  await after("put", name);
};
const del = LocalBackend.prototype.delete;
LocalBackend.prototype.delete = async function (name: string) {
  if (hanging) await hang();
  await del.call(this, name);
  console.error(`@@delete ${name}`);
  await after("delete", name);
};

const [mode, ...args] = Deno.args;
if (mode === "repo") {
  Deno.exit(await runRepoCli(args));
} else if (mode === "gc") {
  const env = (k: string) => (Deno.env.get(k) === undefined ? undefined : Number(Deno.env.get(k)));
  const r = await garbageCollect(new LocalBackend(args[0]), {
    graceMs: env("CRASH_GRACE_MS"),
    staleMs: env("CRASH_STALE_MS"),
  });
  console.log(JSON.stringify(r));
} else {
  console.error(`unknown mode ${mode}`);
  Deno.exit(2);
}
