/**
 * No KV key literal outside domain/keys/ (issue 19 item 1): an array literal used as a KV key or prefix in
 * domain/, routes/ or jobs/ must be built by a key builder of domain/keys/. tools/key_literals.ts finds
 * them; run `deno run --allow-read tools/key_literals.ts` to print every one as `file:line root`.
 */
import assert from "node:assert/strict";
import { arrayLiterals, builderRoots, findKeyLiterals, stripComments } from "../../tools/key_literals.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * The `file:root` pairs still spelling a key literal outside domain/keys/ (TO SHRINK: move each builder to
 * domain/keys/ and call it). The test fails on a literal not listed here and on a listed pair that no
 * longer exists, so this list can only shrink. (`data_fixes` entries: the one-off data fixes' markers,
 * found since `dataFixKey` of domain/keys/data_fixes.ts made "data_fixes" a known root.)
 */
const ALLOWED: string[] = [];

/**
 * `file:root` pairs whose literal is not a KV key although its first element is a key root: a diagram's
 * link in routes/health_pages.tsx starts with "engines"; the drill scopes of domain/drills.ts
 * (`["policies", "hosts"]`, a zod enum's values) start with "policies".
 */
const NOT_KEYS = new Set(["routes/health_pages.tsx:engines", "domain/drills.ts:policies"]);

Deno.test("key literals: KV positions and builder roots are found, element accesses and comments are not", () => {
  const text = stripComments([
    'const a = await kv.get(["storage_targets", id]);',
    '// kv.get(["commented", id])',
    'const b = kv.list({ prefix: ["runs_by_policy", p] });',
    'const c = obj["policies"];',
    'const d = ["hosts", id];',
    'const e = z.enum(["daily", "weekly"]);',
    'const f = `kv.get(["in_template"])`;',
    'await kv.atomic().check({ key: ["po_due", x], versionstamp: null }).delete(["jobs", id]).commit();',
    'kv.getMany([["policies", id], ["policies_retired", id]]);',
    'const key = ["cron_slots", name, slot];',
    'const startKey: Deno.KvKey = ["audit", from];',
  ].join("\n"));
  const found = arrayLiterals(text).map((f) => `${f.line}:${f.root}:${f.kvPosition}`);
  assert.deepEqual(found, [
    "1:storage_targets:true",
    "3:runs_by_policy:true",
    "5:hosts:false",
    "6:daily:false",
    "8:po_due:true",
    "8:jobs:true",
    "9:policies:true",
    "9:policies_retired:false",
    "10:cron_slots:true",
    "11:audit:true",
  ]);
  assert.deepEqual(
    builderRoots('export function hostKey(id: string) {\n  return ["hosts", id] as const;\n}'),
    ["hosts"],
  );
});

Deno.test("key literals: none outside domain/keys/ except the allowlisted ones", async () => {
  const { literals } = await findKeyLiterals(ROOT);
  const allowed = new Set(ALLOWED);
  const keyLiterals = literals.filter((l) => !NOT_KEYS.has(`${l.file}:${l.root}`));
  const unexpected = keyLiterals.filter((l) => !allowed.has(`${l.file}:${l.root}`)).map((l) =>
    `${l.file}:${l.line} ${l.root}`
  );
  assert.deepEqual(
    unexpected,
    [],
    [
      "KV key literals outside domain/keys/:",
      ...unexpected,
      "",
      "Every KV key is built by a function of domain/keys/<area>.ts (one file per area, no imports), e.g.",
      "engineKey(id) and enginesByAccountPrefix(accountId) in domain/keys/engines.ts. Find the builder there (or",
      "add one: `…Key` returns a whole key, `…Prefix` a list prefix, exactly the tuple the stored data uses, so",
      "existing entries stay readable) and call it instead of spelling the array; the area's domain module may",
      "re-export it. Routes and jobs/ build no key: they call a domain function. An array literal that is not a",
      "KV key goes to NOT_KEYS in this test, with the reason.",
    ].join("\n"),
  );
  const present = new Set(keyLiterals.map((l) => `${l.file}:${l.root}`));
  const stale = ALLOWED.filter((a) => !present.has(a));
  const staleNotKeys = [...NOT_KEYS].filter((a) => !literals.some((l) => `${l.file}:${l.root}` === a));
  assert.deepEqual(staleNotKeys, [], "NOT_KEYS entries that no longer exist: remove them");
  assert.deepEqual(stale, [], "allowlisted key literals that no longer exist: remove them from ALLOWED");
});
