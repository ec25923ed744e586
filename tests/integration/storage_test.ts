/**
 * Storage targets: per-type validation, thresholds, vault credentials (sealed, rotated, never shown),
 * the account-scoped fail-closed rule, FK RESTRICT against policies (invariant 1, raced), and capacity
 * reports: health transitions, alerts, auto-pause/resume (invariant 8), growth, history and purge.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import { type Alert, openAlertKey } from "../../domain/alerts.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { getEngine } from "../../domain/engines.ts";
import { ConflictError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { systemActor } from "../../domain/rbac.ts";
import {
  ACCOUNT_SCOPED_CREDENTIALS,
  applyCapacityReport,
  capacityHistory,
  createTarget,
  deleteTarget,
  getTarget,
  purgeCapacityHistory,
  revealTargetSecret,
  type StorageTarget,
  TARGET_TYPES,
  type TargetUpdateInput,
  updateTarget,
} from "../../domain/storage.ts";
import { openSecret, vaultKey, type VaultRecord } from "../../domain/vault.ts";
import {
  addUser,
  assertExcludes,
  auditEntries,
  Browser,
  createTenant,
  createTestPolicy,
  deleteTestPolicy,
  dumpKv,
  getPolicy,
  registerTestEngine,
  signInAs,
  targetInput,
  testApp,
  TestClock,
  VALID_TARGET_CONFIGS,
} from "../helpers.ts";

const T0 = new Date("2026-11-22T10:00:00Z");

/** A KV value as JSON; the operational counters are KvU64 (bigint), written out as their digits. */
const MIN = 60_000;
const HOUR = 3600_000;
const DAY = 86_400_000;
const at = (ms: number) => new Date(T0.getTime() + ms);
const MASTER_KEY = new Uint8Array(32).fill(7);
const OPTS = { now: T0, masterKey: MASTER_KEY };
const system = systemActor("test");
/** A stored value as JSON; counters (KvU64) hold bigints. */
const jsonOf = (value: unknown) => JSON.stringify(value, (_k, v) => typeof v === "bigint" ? v.toString() : v);

async function fixture(kv: Deno.Kv) {
  const tenant = await createTenant(kv, "Acme", ["Ops"], T0);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, T0);
  return { tenant, scope, engine };
}

/** Asserts a ZodError with an issue at `path` (e.g. `config.bucket`), optionally matching `message`. */
function zodAt(path: string, message?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof z.ZodError, `expected a ZodError, got ${e}`);
    const issue = e.issues.find((i) => i.path.join(".") === path);
    assert.ok(issue, `expected an issue at ${path}, got ${JSON.stringify(e.issues.map((i) => i.path))}`);
    if (message) assert.match(issue.message, message);
    return true;
  };
}

function withConfig(besId: string, type: StorageTarget["type"], config: Record<string, unknown>) {
  return targetInput(besId, type, { config: { ...VALID_TARGET_CONFIGS[type], ...config } });
}

/** An update input (the stored config is typed loosely; the schema checks it). */
function updateInput(input: Record<string, unknown>): TargetUpdateInput {
  return input as TargetUpdateInput;
}

function report(targetId: string, usedBytes: number, totalBytes = 1_000_000) {
  return { targetId, totalBytes, usedBytes, freeBytes: totalBytes - usedBytes };
}

async function listValues<T>(kv: Deno.Kv, prefix: Deno.KvKey): Promise<T[]> {
  const out: T[] = [];
  for await (const e of kv.list<T>({ prefix })) out.push(e.value);
  return out;
}

async function alertsOf(kv: Deno.Kv, subjectId: string): Promise<Alert[]> {
  return (await listValues<Alert>(kv, ["alerts"])).filter((a) => a.subjectId === subjectId);
}

function pause(ms: number) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------------
// Create and validation

Deno.test("createTarget() accepts a valid config for each of the 6 types", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine, tenant } = await fixture(kv);
  for (const type of TARGET_TYPES) {
    const target = await createTarget(kv, system, targetInput(engine.id, type), OPTS);
    assert.equal(target.type, type);
    assert.equal(target.besId, engine.id);
    assert.equal(target.accountId, tenant.account.id);
    assert.equal(target.orgId, tenant.orgs[0].id);
    assert.equal(target.health, "unknown");
    assert.equal(target.capacity, null);
    assert.equal(target.policyCount, 0);
    assert.equal(target.credentialId, null);
    for (const [k, v] of Object.entries(VALID_TARGET_CONFIGS[type])) {
      assert.equal(target.config[k], v, `${type}.${k}`);
    }
    assert.deepEqual(await getTarget(kv, target.id), target);
  }
  // Optional fields get their defaults.
  const s3 = await createTarget(kv, system, withConfig(engine.id, "s3", { prefix: undefined }), OPTS);
  assert.equal(s3.config.prefix, "");
  const compat = await createTarget(
    kv,
    system,
    withConfig(engine.id, "s3_compatible", { region: undefined }),
    OPTS,
  );
  assert.equal(compat.config.region, "us-east-1");
  const iscsi = await createTarget(
    kv,
    system,
    withConfig(engine.id, "iscsi", { portal: "san.acme.example" }),
    OPTS,
  );
  assert.equal(iscsi.config.portal, "san.acme.example");
  assert.equal((await getEngine(kv, engine.id))!.storageTargetIds.length, TARGET_TYPES.length + 3);
  const created = (await auditEntries(kv, tenant.account.id)).filter((e) =>
    e.action === "storage_target.create"
  );
  assert.equal(created.length, TARGET_TYPES.length + 3);
});

Deno.test("createTarget() refuses S3 bucket names that break the AWS rules, naming config.bucket", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const cases: Array<[string, RegExp]> = [
    ["ab", /3–63 characters/],
    ["a".repeat(64), /3–63 characters/],
    ["Acme-Backups", /lowercase/],
    ["acme_backups", /lowercase/],
    ["acme..backups", /adjacent dots/],
    ["192.168.10.5", /IP address/],
    ["xn--acme", /xn--/],
    ["sthree-acme", /sthree-/],
    ["-acme", /begin and end/],
    ["acme-", /begin and end/],
    ["acme-s3alias", /-s3alias/],
  ];
  for (const [bucket, message] of cases) {
    for (const type of ["s3", "s3_compatible"] as const) {
      await assert.rejects(
        () => createTarget(kv, system, withConfig(engine.id, type, { bucket }), OPTS),
        zodAt("config.bucket", message),
        `${type} bucket ${bucket}`,
      );
    }
  }
  assert.equal((await listValues(kv, ["storage_targets"])).length, 0);
});

Deno.test("createTarget() refuses a bad S3 region or endpoint, naming the field", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  for (const region of ["EU-WEST-1", "europe", "eu-west", "eu_west_1", ""]) {
    await assert.rejects(
      () => createTarget(kv, system, withConfig(engine.id, "s3", { region }), OPTS),
      zodAt("config.region", /AWS region/),
      region,
    );
  }
  await assert.rejects(
    () => createTarget(kv, system, withConfig(engine.id, "s3_compatible", { region: "Not A Region" }), OPTS),
    zodAt("config.region"),
  );
  for (const endpoint of ["not a url", "s3.amazonaws.com", "ftp://s3.example.com", ""]) {
    await assert.rejects(
      () => createTarget(kv, system, withConfig(engine.id, "s3", { endpoint }), OPTS),
      zodAt("config.endpoint", /http\(s\) URL/),
      endpoint,
    );
  }
  for (const prefix of ["/abs", "a/../b"]) {
    await assert.rejects(
      () => createTarget(kv, system, withConfig(engine.id, "s3", { prefix }), OPTS),
      zodAt("config.prefix"),
    );
  }
});

Deno.test("createTarget() refuses bad SMB, NFS, iSCSI and Local settings, naming the field", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const cases: Array<[StorageTarget["type"], Record<string, unknown>, string, RegExp?]> = [
    ["smb", { share: "backups/daily" }, "config.share", /must not contain/],
    ["smb", { share: "back\\ups" }, "config.share"],
    ["smb", { share: "" }, "config.share", /required/],
    ["smb", { server: "bad host!" }, "config.server", /hostname or IP/],
    ["nfs", { exportPath: "export/backups" }, "config.exportPath", /absolute path/],
    ["nfs", { exportPath: "/export/../etc" }, "config.exportPath", /\.\./],
    ["nfs", { mountOptions: "vers=4.1, hard" }, "config.mountOptions"],
    ["iscsi", { portal: "10.0.0.5:99999" }, "config.portal", /host:port/],
    ["iscsi", { portal: "san.acme.example:0" }, "config.portal", /host:port/],
    ["iscsi", { iqn: "iqn.2004-13.com.x" }, "config.iqn", /IQN/],
    ["iscsi", { iqn: "iqn.04-05.com.example" }, "config.iqn", /IQN/],
    ["iscsi", { lun: 20000 }, "config.lun", /0–16383/],
    ["iscsi", { lun: -1 }, "config.lun", /0–16383/],
    ["iscsi", { lun: 1.5 }, "config.lun", /0–16383/],
    ["local", { path: "relative/path" }, "config.path", /absolute path/],
    ["local", { path: "/srv/../etc" }, "config.path", /\.\./],
  ];
  for (const [type, config, path, message] of cases) {
    await assert.rejects(
      () => createTarget(kv, system, withConfig(engine.id, type, config), OPTS),
      zodAt(path, message),
      `${type} ${JSON.stringify(config)}`,
    );
  }
  // Valid edge values pass.
  for (
    const [type, config] of [
      ["iscsi", { lun: 16383, portal: "[fd00::5]:3260", iqn: "eui.0123456789ABCDEF" }],
      ["iscsi", { iqn: "iqn.2004-12.com.example" }],
      ["nfs", { exportPath: "/", mountOptions: "" }],
    ] as const
  ) {
    await createTarget(kv, system, withConfig(engine.id, type, config), OPTS);
  }
  // An unknown type is refused too.
  await assert.rejects(
    () => createTarget(kv, system, { ...targetInput(engine.id), type: "ftp" } as never, OPTS),
    zodAt("type", /must be one of/),
  );
});

Deno.test("createTarget() defaults thresholds to 85/95 and refuses a critical threshold not above the alert one", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const target = await createTarget(kv, system, targetInput(engine.id), OPTS);
  assert.equal(target.alertThreshold, 85);
  assert.equal(target.criticalThreshold, 95);
  const custom = await createTarget(
    kv,
    system,
    targetInput(engine.id, "local", {
      alertThreshold: 70,
      criticalThreshold: 71,
    }),
    OPTS,
  );
  assert.deepEqual([custom.alertThreshold, custom.criticalThreshold], [70, 71]);
  for (const [alertThreshold, criticalThreshold] of [[90, 90], [90, 80], [85, 50]]) {
    await assert.rejects(
      () =>
        createTarget(
          kv,
          system,
          targetInput(engine.id, "local", { alertThreshold, criticalThreshold }),
          OPTS,
        ),
      zodAt("criticalThreshold", /higher than the alert threshold/),
    );
  }
  // Only the default critical (95) applies when the alert threshold alone is raised above it.
  await assert.rejects(
    () => createTarget(kv, system, targetInput(engine.id, "local", { alertThreshold: 96 }), OPTS),
    zodAt("criticalThreshold"),
  );
  await assert.rejects(
    () => createTarget(kv, system, targetInput(engine.id, "local", { alertThreshold: 0 }), OPTS),
    zodAt("alertThreshold"),
  );
  await assert.rejects(
    () => createTarget(kv, system, targetInput(engine.id, "local", { criticalThreshold: 101 }), OPTS),
    zodAt("criticalThreshold"),
  );
  // The same rule on update.
  await assert.rejects(
    () =>
      updateTarget(
        kv,
        system,
        target.id,
        updateInput({
          name: target.name,
          type: "local",
          config: target.config,
          alertThreshold: 95,
          criticalThreshold: 95,
        }),
        OPTS,
      ),
    zodAt("criticalThreshold"),
  );
});

Deno.test("createTarget() on an unknown engine or outside the actor's scope is refused", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  await assert.rejects(
    () => createTarget(kv, system, targetInput("01KAAAAAAAAAAAAAAAAAAAAAAA"), OPTS),
    (e) => e instanceof ValidationError && "besId" in e.fields,
  );
  const other = await createTenant(kv, "Globex", ["Prod"], T0);
  const outsider = {
    ...system,
    kind: "user" as const,
    id: "u1",
    accountId: other.account.id,
    role: "admin" as const,
  };
  await assert.rejects(
    () => createTarget(kv, outsider, targetInput(engine.id), OPTS),
    (e) => e instanceof ValidationError && "besId" in e.fields,
  );
  assert.equal((await listValues(kv, ["storage_targets"])).length, 0);
});

// ---------------------------------------------------------------------------------------------------
// Credentials and the vault

const SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

Deno.test("createTarget() seals credentials in the vault; revealTargetSecret() round-trips; nothing else stores the secret", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine, tenant } = await fixture(kv);
  const target = await createTarget(kv, system, {
    ...targetInput(engine.id, "s3"),
    credentials: { username: "AKIAEXAMPLE", secret: SECRET, credentialType: "access_key" },
  }, OPTS);
  assert.ok(target.credentialId);
  assert.equal(target.credentialUsername, "AKIAEXAMPLE");
  assert.equal(target.credentialType, "access_key");
  assert.equal(target.credentialRotatedAt, T0.toISOString());
  assert.ok(!("secret" in target));

  const record = (await kv.get<VaultRecord>(vaultKey(target.credentialId))).value!;
  assert.ok(record, "the vault record exists");
  assert.equal(record.purpose, `storage_target:${target.id}`);
  assert.equal(record.accountId, tenant.account.id);
  assert.equal(record.orgId, tenant.orgs[0].id);
  assertExcludes(record.ciphertext, SECRET);
  assertExcludes(JSON.stringify(record), SECRET);
  assertExcludes(JSON.stringify(record), btoa(SECRET));
  assert.equal(await revealTargetSecret(kv, target, MASTER_KEY), SECRET);
  await assert.rejects(
    () => openSecret(new Uint8Array(32).fill(8), record),
    "a wrong master key does not open it",
  );
  // Bound to its id: the same ciphertext under another id does not decrypt.
  await assert.rejects(() => openSecret(MASTER_KEY, { ...record, id: "other" }));

  for (const e of await dumpKv(kv)) assertExcludes(jsonOf(e.value), SECRET, `the secret in ${e.key}`);
  for (const e of await auditEntries(kv, tenant.account.id)) assertExcludes(JSON.stringify(e), SECRET);
  // A target without credentials has nothing to reveal.
  const plain = await createTarget(kv, system, targetInput(engine.id), OPTS);
  assert.equal(await revealTargetSecret(kv, plain, MASTER_KEY), null);
});

Deno.test("no page, API reply, audit entry or log line shows a storage credential secret", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const { app, logs } = testApp(kv, clock);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", clock.now());
  const { secret: token } = await createApiToken(kv, userActor(admin), {
    name: "ci",
    permissions: ["backup.view", "backup.manage", "admin"],
    expiresInDays: 30,
  }, clock.now());
  const { engine } = await registerTestEngine(
    kv,
    { accountId: tenant.account.id, orgId: tenant.orgs[0].id },
    clock.now(),
  );
  const api = (path: string, init: RequestInit = {}) =>
    app.request(`http://localhost:8000${path}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...init.headers },
    });
  const secrets = [
    "first-Secret-0001-abcdefghijklmnop",
    "second-Secret-0002-abcdefghijklmno",
    "form-Secret-0003-abcdefghijklmnop",
  ];

  const created = await api("/api/v1/storage", {
    method: "POST",
    body: JSON.stringify({
      ...targetInput(engine.id, "s3"),
      credentials: { username: "AKIAEXAMPLE", secret: secrets[0], credentialType: "access_key" },
    }),
  });
  assert.equal(created.status, 201);
  const createdText = await created.text();
  assertExcludes(createdText, secrets[0]);
  const target = JSON.parse(createdText);
  assert.equal(target.hasCredentials, true);
  assert.equal(target.credentialId, undefined, "the vault id stays internal");

  const rotated = await api(`/api/v1/storage/${target.id}`, {
    method: "PUT",
    body: JSON.stringify({
      name: "renamed",
      type: "s3",
      config: VALID_TARGET_CONFIGS.s3,
      credentials: { username: "AKIAEXAMPLE2", secret: secrets[1], credentialType: "access_key" },
    }),
  });
  assert.equal(rotated.status, 200);
  assertExcludes(await rotated.text(), secrets[1]);
  assert.equal(await revealTargetSecret(kv, (await getTarget(kv, target.id))!, MASTER_KEY), secrets[1]);

  // A form post with an error re-renders the form without the typed secret.
  const browser = new Browser(app);
  await signInAs(browser, kv, admin, clock.now());
  const formFields = {
    name: "form target",
    type: "s3",
    besId: engine.id,
    s3_endpoint: "https://s3.eu-west-1.amazonaws.com",
    s3_bucket: "Bad..Bucket",
    s3_region: "eu-west-1",
    s3_prefix: "",
    cred_username: "AKIAFORM",
    cred_secret: secrets[2],
    cred_type: "access_key",
    alertThreshold: "85",
    criticalThreshold: "95",
  };
  const invalid = await browser.postForm("/backup/storage/new", formFields, {
    tokenFrom: "/backup/storage/new",
  });
  assert.equal(invalid.status, 422);
  assertExcludes(await invalid.text(), secrets[2]);
  const valid = await browser.postForm("/backup/storage/new", { ...formFields, s3_bucket: "form-bucket" }, {
    tokenFrom: "/backup/storage/new",
  });
  assert.ok(valid.status === 302 || valid.status === 303, `form create answered ${valid.status}`);
  const formTarget = (await listValues<StorageTarget>(kv, ["storage_targets"])).find((t) =>
    t.name === "form target"
  )!;
  assert.equal(await revealTargetSecret(kv, formTarget, MASTER_KEY), secrets[2]);

  const pages = [
    "/backup/storage",
    `/backup/storage/${target.id}`,
    `/backup/storage/${target.id}/delete`,
    `/backup/storage/${formTarget.id}`,
    "/backup/storage/new",
    `/backup/engines/${engine.id}`,
    "/admin/audit",
  ];
  for (const path of pages) {
    const res = await browser.get(path);
    assert.equal(res.status, 200, path);
    const html = await res.text();
    for (const s of secrets) assertExcludes(html, s, `a secret on ${path}`);
  }
  for (
    const path of [
      "/api/v1/storage",
      `/api/v1/storage/${target.id}`,
      `/api/v1/storage/${target.id}/capacity`,
      "/api/v1/storage-capacity",
      "/api/v1/audit",
    ]
  ) {
    const res = await api(path);
    assert.equal(res.status, 200, path);
    const text = await res.text();
    for (const s of secrets) assertExcludes(text, s, `a secret in ${path}`);
  }
  for (const line of logs) for (const s of secrets) assertExcludes(line, s, "a secret in the log");
  for (const e of await dumpKv(kv)) {
    for (const s of secrets) assertExcludes(jsonOf(e.value), s, `a secret in ${e.key}`);
  }
});

Deno.test("updateTarget() with new credentials rotates them: a new vault record replaces the old one", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine, tenant } = await fixture(kv);
  const target = await createTarget(kv, system, {
    ...targetInput(engine.id, "smb"),
    credentials: { username: "backup", secret: "old-password", credentialType: "password" },
  }, OPTS);
  const oldId = target.credentialId!;
  const update = {
    name: target.name,
    type: "smb",
    config: target.config,
    credentials: { username: "backup2", secret: "new-password", credentialType: "password" },
  };
  const rotated = await updateTarget(kv, system, target.id, updateInput(update), {
    now: at(HOUR),
    masterKey: MASTER_KEY,
  });
  assert.ok(rotated.credentialId && rotated.credentialId !== oldId);
  assert.equal((await kv.get(vaultKey(oldId))).versionstamp, null, "the old vault record is gone");
  assert.ok((await kv.get(vaultKey(rotated.credentialId))).value);
  assert.equal(rotated.credentialUsername, "backup2");
  assert.equal(rotated.credentialRotatedAt, at(HOUR).toISOString());
  assert.equal(await revealTargetSecret(kv, rotated, MASTER_KEY), "new-password");
  assert.equal((await listValues(kv, ["vault"])).length, 1);
  const audit = (await auditEntries(kv, tenant.account.id)).filter((e) =>
    e.action === "storage_target.update"
  );
  assert.match(audit.at(-1)!.summary, /rotated credentials/);

  // An update without credentials keeps them.
  const kept = await updateTarget(
    kv,
    system,
    target.id,
    updateInput({ ...update, credentials: undefined, name: "renamed" }),
    OPTS,
  );
  assert.equal(kept.credentialId, rotated.credentialId);
  assert.equal(await revealTargetSecret(kv, kept, MASTER_KEY), "new-password");
  // removeCredentials drops the vault record.
  const removed = await updateTarget(
    kv,
    system,
    target.id,
    updateInput({
      ...update,
      credentials: undefined,
      removeCredentials: true,
    }),
    OPTS,
  );
  assert.equal(removed.credentialId, null);
  assert.equal(removed.credentialUsername, null);
  assert.equal((await listValues(kv, ["vault"])).length, 0);
  // The type never changes.
  await assert.rejects(
    () =>
      updateTarget(
        kv,
        system,
        target.id,
        updateInput({ ...update, type: "local", config: VALID_TARGET_CONFIGS.local }),
        OPTS,
      ),
    (e) => e instanceof ValidationError && "type" in e.fields,
  );
});

Deno.test("createTarget() with credentials on an account-scoped engine fails closed and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Acme", ["Ops"], T0);
  const { engine } = await registerTestEngine(
    kv,
    { accountId: tenant.account.id, orgId: null },
    T0,
    "acct-bes",
  );
  assert.equal(engine.orgId, null);
  const before = await dumpKv(kv);
  await assert.rejects(
    () =>
      createTarget(kv, system, {
        ...targetInput(engine.id, "s3"),
        credentials: { username: "AKIA", secret: "s3cr3t-value", credentialType: "access_key" },
      }, OPTS),
    (e) => {
      assert.ok(e instanceof ValidationError);
      assert.equal(e.message, ACCOUNT_SCOPED_CREDENTIALS);
      assert.match(e.message, /organization-scoped BES/);
      assert.equal(e.fields.credentials, ACCOUNT_SCOPED_CREDENTIALS);
      return true;
    },
  );
  assert.deepEqual(await dumpKv(kv), before, "nothing written (no target, no vault record, no audit)");
  // Without credentials the account-scoped engine takes the target.
  const plain = await createTarget(kv, system, targetInput(engine.id, "nfs"), OPTS);
  assert.equal(plain.orgId, null);
  // Adding credentials later is refused the same way.
  const afterCreate = await dumpKv(kv);
  await assert.rejects(
    () =>
      updateTarget(
        kv,
        system,
        plain.id,
        updateInput({
          name: plain.name,
          type: "nfs",
          config: plain.config,
          credentials: { username: "", secret: "s3cr3t-value", credentialType: "password" },
        }),
        OPTS,
      ),
    (e) => e instanceof ValidationError && e.message === ACCOUNT_SCOPED_CREDENTIALS,
  );
  assert.deepEqual(await dumpKv(kv), afterCreate);
});

// ---------------------------------------------------------------------------------------------------
// Delete and FK RESTRICT (invariant 1)

Deno.test("deleteTarget() is refused while a policy references the target (naming it) and allowed after, removing the vault record", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine, tenant } = await fixture(kv);
  const target = await createTarget(kv, system, {
    ...targetInput(engine.id, "s3", { name: "Primary S3" }),
    credentials: { username: "AKIA", secret: "delete-me-secret", credentialType: "access_key" },
  }, OPTS);
  await applyCapacityReport(kv, engine.id, report(target.id, 500_000), T0);
  await applyCapacityReport(kv, engine.id, report(target.id, 990_000), at(MIN));
  assert.ok((await kv.get(openAlertKey("storage_target", target.id, "storage_critical"))).value);
  const policy = await createTestPolicy(kv, target.id, "Nightly SQL", at(MIN));
  assert.equal((await getTarget(kv, target.id))!.policyCount, 1);

  const before = await dumpKv(kv);
  await assert.rejects(
    () => deleteTarget(kv, system, target.id, at(2 * MIN)),
    (e) => {
      assert.ok(e instanceof ConflictError);
      assert.match(e.message, /Nightly SQL/);
      assert.match(e.message, /Primary S3/);
      return true;
    },
  );
  assert.deepEqual(await dumpKv(kv), before, "a refused delete changes nothing");

  await deleteTestPolicy(kv, policy.id);
  assert.equal((await getTarget(kv, target.id))!.policyCount, 0);
  await deleteTarget(kv, system, target.id, at(3 * MIN));
  assert.equal(await getTarget(kv, target.id), null);
  assert.equal((await kv.get(vaultKey(target.credentialId!))).versionstamp, null, "vault record deleted");
  const leftovers = (await dumpKv(kv)).filter((e) => e.key.some((p) => p === target.id));
  assert.deepEqual(leftovers.map((e) => e.key), [], "no index, history or open alert left");
  assert.ok((await alertsOf(kv, target.id)).every((a) => a.status === "resolved"));
  assert.deepEqual((await getEngine(kv, engine.id))!.storageTargetIds, []);
  const audit = (await auditEntries(kv, tenant.account.id)).filter((e) =>
    e.action === "storage_target.delete"
  );
  assert.equal(audit.length, 1);
  assert.match(audit[0].summary, /vault credential/);
  await assert.rejects(() => deleteTarget(kv, system, target.id, at(4 * MIN)), NotFoundError);
});

Deno.test("deleteTarget() racing a policy create never leaves a policy whose target is gone (30 rounds)", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const outcomes = { policyWon: 0, deleteWon: 0 };
  for (let round = 0; round < 30; round++) {
    const target = await createTarget(kv, system, {
      ...targetInput(engine.id, "local", { name: `t${round}` }),
      credentials: { username: "", secret: `pw-${round}`, credentialType: "password" },
    }, OPTS);
    const [deleted, created] = await Promise.allSettled([
      pause(round % 3 === 1 ? round % 4 : 0).then(() => deleteTarget(kv, system, target.id, at(MIN))),
      pause(round % 3 === 2 ? round % 4 : 0).then(() =>
        createTestPolicy(kv, target.id, `p${round}`, at(MIN))
      ),
    ]);
    if (created.status === "fulfilled") {
      outcomes.policyWon++;
      assert.equal(deleted.status, "rejected", `round ${round}: both succeeded`);
      assert.ok((deleted as PromiseRejectedResult).reason instanceof ConflictError);
      const t = (await getTarget(kv, target.id))!;
      assert.ok(t, `round ${round}: the policy's target exists`);
      assert.equal(t.policyCount, 1);
      assert.ok((await kv.get(vaultKey(target.credentialId!))).value, "its credential is kept");
    } else {
      outcomes.deleteWon++;
      assert.equal(
        deleted.status,
        "fulfilled",
        `round ${round}: ${(deleted as PromiseRejectedResult).reason}`,
      );
      assert.ok(created.reason instanceof NotFoundError, `round ${round}: ${created.reason}`);
      assert.equal(await getTarget(kv, target.id), null);
      assert.equal((await kv.get(vaultKey(target.credentialId!))).versionstamp, null);
    }
  }
  const targetIds = new Set((await listValues<StorageTarget>(kv, ["storage_targets"])).map((t) => t.id));
  const policies = await listValues<{ id: string; targetId: string }>(kv, ["policies"]);
  assert.deepEqual(policies.filter((p) => !targetIds.has(p.targetId)).map((p) => p.id), []);
  const byTarget: Deno.KvKey[] = [];
  for await (const e of kv.list({ prefix: ["policies_by_target"] })) byTarget.push(e.key);
  assert.deepEqual(byTarget.filter((k) => !targetIds.has(String(k[1]))), []);
  assert.equal(outcomes.policyWon + outcomes.deleteWon, 30);
});

// ---------------------------------------------------------------------------------------------------
// Capacity reports

Deno.test("applyCapacityReport() moves healthy → warning → critical → healthy with alerts, pausing and resuming policies", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine, tenant } = await fixture(kv);
  const target = await createTarget(kv, system, targetInput(engine.id, "nfs", { name: "NAS" }), OPTS);
  const other = await createTarget(kv, system, targetInput(engine.id, "local", { name: "Other" }), OPTS);
  const running = await createTestPolicy(kv, target.id, "Running", T0);
  const disabled = await createTestPolicy(kv, target.id, "Disabled by operator", T0, { enabled: false });
  const elsewhere = await createTestPolicy(kv, other.id, "Elsewhere", T0);
  const openOf = async (reason: "storage_warning" | "storage_critical" | "storage_full_soon") =>
    (await kv.get<string>(openAlertKey("storage_target", target.id, reason))).value;
  /** The status alerts (warning, critical); the early warning has its own (checked on its own). */
  const statusAlertsOf = async () =>
    (await alertsOf(kv, target.id)).filter((a) => a.reason !== "storage_full_soon");

  // Steady at 50 % (growth 0): healthy.
  let r = await applyCapacityReport(kv, engine.id, report(target.id, 500_000), T0);
  assert.equal(r!.target.health, "healthy");
  r = await applyCapacityReport(kv, engine.id, report(target.id, 500_000), at(MIN));
  assert.equal(r!.target.health, "healthy");
  assert.equal(r!.target.capacity!.growthBytesPerDay, 0);
  assert.equal((await alertsOf(kv, target.id)).length, 0);

  // Exactly the alert threshold: warning, one open storage_warning alert.
  r = await applyCapacityReport(kv, engine.id, report(target.id, 850_000), at(2 * MIN));
  assert.equal(r!.target.health, "warning");
  assert.match(r!.target.capacity!.statusReason, /alert threshold 85%/);
  assert.deepEqual([r!.paused, r!.resumed], [[], []]);
  let alerts = await statusAlertsOf();
  assert.equal(alerts.length, 1);
  assert.equal(alerts[0].reason, "storage_warning");
  assert.equal(alerts[0].severity, "warning");
  assert.equal(await openOf("storage_warning"), alerts[0].id);
  // 50 % → 85 % in a minute also projects the target full within 14 days: the early warning opens
  // beside the status (its own flag and alert).
  assert.equal(r!.target.capacity!.fullSoon, true);
  assert.ok(await openOf("storage_full_soon"));

  // Exactly the critical threshold: critical alert open, warning resolved, policies paused.
  const criticalAt = at(3 * MIN);
  r = await applyCapacityReport(kv, engine.id, report(target.id, 950_000), criticalAt);
  assert.equal(r!.target.health, "critical");
  alerts = await statusAlertsOf();
  const byReason = Object.fromEntries(alerts.map((a) => [a.reason, a]));
  assert.equal(byReason.storage_warning.status, "resolved");
  assert.equal(byReason.storage_critical.status, "open");
  assert.equal(byReason.storage_critical.severity, "critical");
  assert.equal(await openOf("storage_warning"), null);
  assert.equal(await openOf("storage_critical"), byReason.storage_critical.id);
  // The documented rule (domain/policies.ts): every policy with pausedReason null is paused —
  // including one an operator disabled; `enabled` is never touched.
  assert.deepEqual(r!.paused.sort(), [running.id, disabled.id].sort());
  assert.equal((await getPolicy(kv, running.id))!.pausedReason, "storage_critical");
  assert.equal((await getPolicy(kv, running.id))!.enabled, true);
  assert.equal((await getPolicy(kv, disabled.id))!.pausedReason, "storage_critical");
  assert.equal((await getPolicy(kv, disabled.id))!.enabled, false);
  assert.equal((await getPolicy(kv, elsewhere.id))!.pausedReason, null, "other targets' policies untouched");
  const pauses = (await auditEntries(kv, tenant.account.id)).filter((e) => e.action === "policy.auto_pause");
  assert.equal(pauses.length, 2);
  assert.ok(pauses.some((e) => /Running/.test(e.summary)));

  // Still critical: nothing new is paused or raised.
  r = await applyCapacityReport(kv, engine.id, report(target.id, 960_000), at(4 * MIN));
  assert.equal(r!.target.health, "critical");
  assert.deepEqual(r!.paused, []);
  assert.equal((await statusAlertsOf()).length, 2);

  // Down to warning: still paused (only healthy resumes).
  r = await applyCapacityReport(kv, engine.id, report(target.id, 900_000), at(5 * MIN));
  assert.equal(r!.target.health, "warning");
  assert.deepEqual(r!.resumed, []);
  assert.equal((await getPolicy(kv, running.id))!.pausedReason, "storage_critical");

  // Healthy again (space freed): exactly the paused policies resume; the disabled one stays disabled.
  const healthyAt = at(6 * MIN);
  r = await applyCapacityReport(kv, engine.id, report(target.id, 300_000), healthyAt);
  assert.equal(r!.target.health, "healthy", r!.target.capacity!.statusReason);
  assert.deepEqual(r!.resumed.sort(), [running.id, disabled.id].sort());
  assert.equal((await getPolicy(kv, running.id))!.pausedReason, null);
  assert.equal((await getPolicy(kv, running.id))!.enabled, true);
  assert.equal((await getPolicy(kv, disabled.id))!.pausedReason, null);
  assert.equal(
    (await getPolicy(kv, disabled.id))!.enabled,
    false,
    "an operator-disabled policy stays disabled",
  );
  assert.ok((await alertsOf(kv, target.id)).every((a) => a.status === "resolved"));
  assert.equal(await openOf("storage_warning"), null);
  assert.equal(await openOf("storage_critical"), null);
  assert.equal(await openOf("storage_full_soon"), null, "shrinking: no longer projected full");
  const resumes = (await auditEntries(kv, tenant.account.id)).filter((e) =>
    e.action === "policy.auto_resume"
  );
  assert.equal(resumes.length, 2);
  // A later healthy report resumes nothing more.
  r = await applyCapacityReport(kv, engine.id, report(target.id, 300_000), at(7 * MIN));
  assert.deepEqual(r!.resumed, []);
});

Deno.test("applyCapacityReport() pauses a policy created while its target is already critical at the next critical report", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const target = await createTarget(kv, system, targetInput(engine.id), OPTS);
  // Created while the target is already critical: the next critical report pauses it.
  await applyCapacityReport(kv, engine.id, report(target.id, 990_000), T0);
  const late = await createTestPolicy(kv, target.id, "Late", at(MIN));
  const r = await applyCapacityReport(kv, engine.id, report(target.id, 990_000), at(2 * MIN));
  assert.deepEqual(r!.paused, [late.id]);
});

Deno.test("applyCapacityReport() ignores reports for a target of another engine", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine, scope } = await fixture(kv);
  const { engine: intruder } = await registerTestEngine(kv, scope, T0, "bes-2");
  const target = await createTarget(kv, system, targetInput(engine.id), OPTS);
  const before = await dumpKv(kv);
  assert.equal(await applyCapacityReport(kv, intruder.id, report(target.id, 999_000), T0), null);
  assert.equal(await applyCapacityReport(kv, engine.id, report("01KAAAAAAAAAAAAAAAAAAAAAAA", 1), T0), null);
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("applyCapacityReport() computes EWMA growth and estimatedFullAt from the second report on", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const target = await createTarget(kv, system, targetInput(engine.id), OPTS);
  const first = (await applyCapacityReport(kv, engine.id, report(target.id, 100_000), T0))!.target;
  assert.equal(first.capacity!.growthBytesPerDay, null);
  assert.equal(first.capacity!.estimatedFullAt, null);
  assert.equal(first.capacity!.usagePercent, 10);
  // +1000 bytes in an hour: 24 000 bytes/day; 899 000 free → 37.458… days.
  const second = (await applyCapacityReport(kv, engine.id, report(target.id, 101_000), at(HOUR)))!.target;
  assert.equal(second.capacity!.growthBytesPerDay, 24_000);
  assert.equal(
    second.capacity!.estimatedFullAt,
    new Date(at(HOUR).getTime() + (899_000 / 24_000) * DAY).toISOString(),
  );
  assert.equal(second.health, "healthy");
  // Third: instant 48 000/day → 0.05·48 000 + 0.95·24 000 = 25 200.
  const third = (await applyCapacityReport(kv, engine.id, report(target.id, 103_000), at(2 * HOUR)))!.target;
  assert.ok(Math.abs(third.capacity!.growthBytesPerDay! - 25_200) < 1e-6);
  // A report within 30 s keeps the rate.
  const fourth =
    (await applyCapacityReport(kv, engine.id, report(target.id, 200_000), at(2 * HOUR + 10_000)))!
      .target;
  assert.equal(fourth.capacity!.growthBytesPerDay, third.capacity!.growthBytesPerDay);
});

Deno.test("applyCapacityReport() raises the early warning, its own flag and alert, for a target full in less than 14 days that stays healthy below the alert threshold", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const slow = await createTarget(kv, system, targetInput(engine.id, "local", { name: "slow" }), OPTS);
  const slower = await createTarget(kv, system, targetInput(engine.id, "local", { name: "slower" }), OPTS);
  await applyCapacityReport(kv, engine.id, report(slow.id, 500_000), T0);
  await applyCapacityReport(kv, engine.id, report(slower.id, 500_000), T0);
  // +40 000/day with 460 000 free: full in 11.5 days → healthy at 54 % (the guide's table), early warning on.
  const r = (await applyCapacityReport(kv, engine.id, report(slow.id, 540_000), at(DAY)))!;
  assert.equal(r.target.capacity!.usagePercent, 54);
  assert.equal(r.target.health, "healthy");
  assert.equal(r.target.capacity!.statusReason, "Usage 54%");
  assert.equal(r.target.capacity!.fullSoon, true);
  let alerts = await alertsOf(kv, slow.id);
  assert.deepEqual(alerts.map((a) => [a.reason, a.severity, a.status]), [[
    "storage_full_soon",
    "warning",
    "open",
  ]]);
  assert.match(alerts[0].message, /projected to be full on 2026-12-04, within 14 days/);
  // Still projected full within 14 days: the same alert, no new one.
  await applyCapacityReport(kv, engine.id, report(slow.id, 541_000), at(DAY + HOUR));
  assert.equal((await alertsOf(kv, slow.id)).length, 1);
  // Space freed: the projection moves past 14 days and the early warning resolves.
  const freed = (await applyCapacityReport(kv, engine.id, report(slow.id, 400_000), at(2 * DAY)))!;
  assert.equal(freed.target.capacity!.fullSoon, false);
  alerts = await alertsOf(kv, slow.id);
  assert.deepEqual(alerts.map((a) => [a.reason, a.status]), [["storage_full_soon", "resolved"]]);
  // +20 000/day with 480 000 free: 24 days → healthy, no early warning.
  const s = (await applyCapacityReport(kv, engine.id, report(slower.id, 520_000), at(DAY)))!;
  assert.equal(s.target.health, "healthy");
  assert.equal(s.target.capacity!.fullSoon, false);
  assert.equal((await alertsOf(kv, slower.id)).length, 0);
});

Deno.test("applyCapacityReport() resumes the policies of a fast-growing target back below the thresholds, early warning or not", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const target = await createTarget(kv, system, targetInput(engine.id), OPTS);
  const running = await createTestPolicy(kv, target.id, "Running", T0);
  const disabled = await createTestPolicy(kv, target.id, "Disabled", T0, { enabled: false });
  await applyCapacityReport(kv, engine.id, report(target.id, 100_000), T0);
  // 10 % → 96 % in a day: critical, both paused.
  let r = (await applyCapacityReport(kv, engine.id, report(target.id, 960_000), at(DAY)))!;
  assert.equal(r.target.health, "critical");
  assert.deepEqual(r.paused.sort(), [running.id, disabled.id].sort());
  // Down to 80 %: healthy, though the smoothed growth still projects it full within days.
  r = (await applyCapacityReport(kv, engine.id, report(target.id, 800_000), at(2 * DAY)))!;
  assert.equal(r.target.health, "healthy");
  assert.equal(r.target.capacity!.fullSoon, true);
  assert.deepEqual(r.resumed.sort(), [running.id, disabled.id].sort());
  assert.equal((await getPolicy(kv, running.id))!.pausedReason, null);
  assert.equal(
    (await getPolicy(kv, disabled.id))!.enabled,
    false,
    "an operator-disabled policy stays disabled",
  );
  assert.ok((await kv.get(openAlertKey("storage_target", target.id, "storage_full_soon"))).value);
  assert.equal((await kv.get(openAlertKey("storage_target", target.id, "storage_critical"))).value, null);
});

Deno.test("the storage pages show the early warning as its own badge beside a healthy status, and the alerts page its own alert", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock(T0);
  const { app } = testApp(kv, clock);
  const { tenant, engine } = await fixture(kv);
  const viewer = await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", T0);
  const soon = await createTarget(kv, system, targetInput(engine.id, "local", { name: "Filling" }), OPTS);
  const calm = await createTarget(kv, system, targetInput(engine.id, "nfs", { name: "Calm" }), OPTS);
  for (const [id, used] of [[soon.id, 500_000], [calm.id, 500_000]] as const) {
    await applyCapacityReport(kv, engine.id, report(id, used), T0);
  }
  await applyCapacityReport(kv, engine.id, report(soon.id, 540_000), at(DAY));
  await applyCapacityReport(kv, engine.id, report(calm.id, 500_000), at(DAY));
  clock.advance(DAY);
  const browser = new Browser(app);
  await signInAs(browser, kv, viewer, clock.now());
  const rowOf = (html: string, name: string) =>
    html.split("<tr").find((row) => row.includes(`>${name}</a>`))!;

  const list = await (await browser.get("/backup/storage")).text();
  const table = list.slice(list.indexOf('<table class="table table--cards">'));
  assert.match(rowOf(table, "Filling"), /badge--ok">healthy<[\s\S]*badge--warn">full within 14 days</);
  assert.doesNotMatch(rowOf(table, "Calm"), /full within 14 days/);
  assert.match(rowOf(list, "Filling"), /full within 14 days/, "the live widget's first snapshot too");

  const detail = await (await browser.get(`/backup/storage/${soon.id}`)).text();
  const header = detail.slice(detail.indexOf("page-header"), detail.indexOf("grid-2"));
  assert.match(header, /badge--ok">healthy<[\s\S]*badge--warn">full within 14 days</);
  assert.match(
    detail,
    /<time datetime="2026-12-04T[^"]*"[^>]*>in \d+ d · 2026-12-04 \d\d:\d\d UTC<\/time> — within 14 days at the current growth \(early warning\)/,
  );
  assert.doesNotMatch(await (await browser.get(`/backup/storage/${calm.id}`)).text(), /full within 14 days/);

  const alerts = await (await browser.get("/backup/alerts")).text();
  assert.match(alerts, /Filling is projected to be full on 2026-12-04, within 14 days/);
});

Deno.test("capacityHistory() returns daily roll-ups (last report and peak of each day) and the reports of the last 48 h", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const target = await createTarget(kv, system, targetInput(engine.id), OPTS);
  const total = 1000;
  const reports: Array<[number, number]> = [
    [-HOUR, 100], // 2026-11-22 09:00 — older than 48 h at `now`
    [0, 150], // 2026-11-22 10:00 — exactly 48 h: included
    [8 * HOUR, 300], // 18:00 — the day's peak
    [10 * HOUR, 200], // 20:00 — the day's last report
    [DAY, 400], // 2026-11-23 10:00
    [2 * DAY - 30 * MIN, 500], // 2026-11-24 09:30
  ];
  for (const [offset, used] of reports) {
    await applyCapacityReport(kv, engine.id, report(target.id, used, total), at(offset));
  }
  const now = at(2 * DAY);
  const { days, recent } = await capacityHistory(kv, target.id, now);
  assert.deepEqual(days.map((d) => d.day), ["2026-11-22", "2026-11-23", "2026-11-24"]);
  assert.equal(days[0].usedBytes, 200);
  assert.equal(days[0].usagePercent, 20);
  assert.equal(days[0].peakUsagePercent, 30);
  assert.equal(days[0].totalBytes, total);
  assert.equal(days[1].usedBytes, 400);
  assert.equal(days[2].usedBytes, 500);
  assert.equal(days[2].peakUsagePercent, 50);
  assert.deepEqual(recent.map((s) => s.usedBytes), [150, 300, 200, 400, 500]);
  assert.deepEqual(recent.map((s) => s.at), reports.slice(1).map(([o]) => at(o).toISOString()));
});

Deno.test("purgeCapacityHistory() drops fine samples older than 48 h and daily roll-ups older than 365 days", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const target = await createTarget(kv, system, targetInput(engine.id), OPTS);
  const now = at(500 * DAY);
  const offsets = [-400 * DAY, -366 * DAY, -365 * DAY, -100 * DAY, -49 * HOUR, -47 * HOUR, 0];
  for (const [i, offset] of offsets.entries()) {
    await applyCapacityReport(
      kv,
      engine.id,
      report(target.id, 100_000 + i * 1000),
      new Date(now.getTime() + offset),
    );
  }
  const day = (offset: number) => new Date(now.getTime() + offset).toISOString().slice(0, 10);
  const samples = async () =>
    (await listValues<{ at: string }>(kv, ["capacity_samples", target.id])).map((s) => s.at);
  const rollups = async () =>
    (await listValues<{ day: string }>(kv, ["capacity_daily", target.id])).map((d) => d.day);
  assert.equal((await samples()).length, 7);
  assert.equal((await rollups()).length, 6, "-49 h and -47 h share a day");

  // 5 fine samples (everything older than 48 h) and 2 roll-ups (older than 365 days).
  assert.equal(await purgeCapacityHistory(kv, now), 7);
  assert.deepEqual(await samples(), [-47 * HOUR, 0].map((o) => new Date(now.getTime() + o).toISOString()));
  assert.deepEqual(await rollups(), [day(-365 * DAY), day(-100 * DAY), day(-47 * HOUR), day(0)]);
  assert.equal(await purgeCapacityHistory(kv, now), 0, "idempotent");
  const { days, recent } = await capacityHistory(kv, target.id, now);
  assert.deepEqual(days.map((d) => d.day), await rollups());
  assert.equal(recent.length, 2);
});
