import assert from "node:assert/strict";
import { login } from "../../domain/auth.ts";
import { resolveApiToken } from "../../domain/api_tokens.ts";
import { findOrgBySecret } from "../../domain/tenancy.ts";
import { runDeno } from "../helpers.ts";

/** Runs `deno task cli <args>` on `dataDir`, asserts exit 0 and exactly one JSON object on stdout. */
async function cliJson(dataDir: string, args: string[]): Promise<Record<string, unknown>> {
  const { code, stdout, stderr } = await runDeno(["task", "cli", ...args], { CADRES_DATA_DIR: dataDir });
  assert.equal(code, 0, `cli ${args.join(" ")} failed: ${stderr}${stdout}`);
  const lines = stdout.trim().split("\n");
  assert.equal(lines.length, 1, `stdout should be one JSON line, got: ${stdout}`);
  const value = JSON.parse(lines[0]);
  assert.equal(typeof value, "object");
  assert.ok(value !== null && !Array.isArray(value));
  return value;
}

Deno.test("cli create-org, create-admin, create-token and list-users print one JSON object each", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cadres-cli-" });
  try {
    const org = await cliJson(dir, ["create-org", "--account", "Acme", "--org", "Ops", "--json"]);
    assert.deepEqual(Object.keys(org).sort(), ["accountId", "orgId", "secret"]);
    assert.match(String(org.secret), /^cdo_[A-Za-z0-9_-]{43}$/);

    const admin = await cliJson(dir, ["create-admin", "--email", "a@b.example", "--json"]);
    assert.equal(admin.email, "a@b.example");
    assert.equal(admin.accountId, org.accountId, "the only account is used");
    assert.equal(typeof admin.userId, "string");
    assert.equal(typeof admin.password, "string");
    assert.ok(String(admin.password).length >= 12, "a generated password of at least 12 characters");

    const token = await cliJson(dir, ["create-token", "--email", "a@b.example", "--name", "ci", "--json"]);
    assert.match(String(token.token), /^cdt_/);
    assert.equal(typeof token.tokenId, "string");

    const listed = await cliJson(dir, ["list-users", "--json"]);
    assert.deepEqual(listed, {
      users: [{
        id: admin.userId,
        account: "Acme",
        email: "a@b.example",
        name: "a",
        role: "admin",
        disabled: false,
      }],
    });

    // What the CLI printed really works against the database it wrote.
    const kv = await Deno.openKv(`${dir}/cadres.kv`);
    try {
      const now = new Date();
      assert.equal((await findOrgBySecret(kv, String(org.secret)))?.id, org.orgId);
      const signedIn = await login(kv, { email: "a@b.example", password: String(admin.password) }, {
        ip: "127.0.0.1",
        now,
      });
      assert.equal(signedIn.user.id, admin.userId);
      const actor = await resolveApiToken(kv, String(token.token), now);
      assert.equal(actor.id, admin.userId);
      assert.ok(actor.permissions.has("admin"));
    } finally {
      kv.close();
    }
    const info = await Deno.stat(`${dir}/master.key`);
    assert.equal(info.mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli --json reports a missing option as one JSON error object and exits 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cadres-cli-" });
  try {
    const { code, stdout } = await runDeno(["task", "cli", "create-org", "--org", "Ops", "--json"], {
      CADRES_DATA_DIR: dir,
    });
    assert.equal(code, 1);
    assert.deepEqual(JSON.parse(stdout.trim()), { error: { message: "Missing --account" } });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
