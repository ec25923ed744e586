/**
 * Every vault record has a listed owner (domain/vault_owners.ts): a scripted scenario creates every
 * kind of vault record through the domain, then each record in the vault must be owned, each listed
 * owner must have been exercised, the invariants must hold, and a Config DB self-backup must pass its
 * own test-restore verification. A source scan fails when a module seals vault records without being
 * listed as an owner.
 */
import assert from "node:assert/strict";
import { testConfig } from "../../domain/config.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import { kekProviders } from "../../domain/keks.ts";
import { createChannel, deleteChannel, updateChannel } from "../../domain/notification_channels.ts";
import { createPlatform } from "../../domain/platforms.ts";
import { systemActor } from "../../domain/rbac.ts";
import { runBackup, updateSettings } from "../../domain/self_backup_runs.ts";
import { createTarget } from "../../domain/storage.ts";
import { tokenSigningKey } from "../../domain/token_signing.ts";
import type { VaultRecord } from "../../domain/vault.ts";
import { kvOwnerReader, listVaultReferences, VAULT_OWNERS } from "../../domain/vault_owners.ts";
import { createTenant, registerTestEngine, REPO_ROOT, targetInput, TestClock } from "../helpers.ts";

const masterKey = testConfig().masterKey!;
const system = systemActor("test");

/** A temporary data folder for the self-backup bundles, removed afterwards. */
async function dataDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "cadres-vault-owners-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

async function configBackup(kv: Deno.Kv, clock: TestClock, dir: string) {
  return await runBackup(kv, { database: "config", kind: "manual", requestedBy: "test" }, {
    clock: clock.now,
    masterKey,
    dataDir: dir,
  });
}

async function webhookAndMail(kv: Deno.Kv, scope: { accountId: string; orgId: string }, now: Date) {
  const opts = { now, masterKey };
  const { channel: hook } = await createChannel(kv, system, {
    type: "webhook",
    name: "ops hook",
    url: "https://hooks.acme.example/cadres",
    ...scope,
  }, opts);
  const { channel: mail } = await createChannel(kv, system, {
    type: "email",
    name: "ops mail",
    host: "smtp.acme.example",
    port: 587,
    tlsMode: "starttls",
    username: "cadres",
    password: "smtp-password-1",
    from: "cadres@acme.example",
    to: ["oncall@acme.example"],
    ...scope,
  }, opts);
  return { hook, mail };
}

Deno.test("a Config DB self-backup verifies restorable with a webhook and an SMTP channel (their vault records are owned)", async () => {
  using kv = await Deno.openKv(":memory:");
  await using dir = await dataDir();
  const clock = new TestClock();
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  await webhookAndMail(kv, { accountId: tenant.account.id, orgId: tenant.orgs[0].id }, clock.now());
  assert.deepEqual(await checkInvariants(kv), []);
  const t = await configBackup(kv, clock, dir.path);
  assert.equal(t.verification.status, "passed", t.verification.error ?? "");
  assert.equal(t.status, "success", t.error ?? "");
});

/** Creates (and rotates, replaces, deletes) every kind of vault record there is, through the domain. */
async function everyKind(kv: Deno.Kv, clock: TestClock, dir: string) {
  const now = clock.now();
  const opts = { now, masterKey };
  const tenant = await createTenant(kv, "Acme", ["Ops", "Lab"], now);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  // Storage target credentials (an org-scoped engine may hold them).
  const { engine } = await registerTestEngine(kv, scope, now, "bes-vault");
  await createTarget(kv, system, {
    ...targetInput(engine.id, "smb"),
    credentials: { username: "svc", secret: "smb-secret-1", credentialType: "password" },
  }, opts);
  // Notification channels: a webhook's signing secret and an SMTP password, one replaced, one deleted.
  const { hook, mail } = await webhookAndMail(kv, scope, now);
  await updateChannel(kv, system, hook.id, { type: "webhook", name: "ops hook", rotateSecret: true }, opts);
  await updateChannel(kv, system, mail.id, {
    type: "email",
    name: "ops mail",
    host: "smtp.acme.example",
    port: 587,
    tlsMode: "starttls",
    username: "cadres",
    password: "smtp-password-2",
    from: "cadres@acme.example",
    to: ["oncall@acme.example"],
  }, opts);
  const { channel: gone } = await createChannel(kv, system, {
    type: "webhook",
    name: "temporary hook",
    url: "https://hooks.acme.example/tmp",
    ...scope,
  }, opts);
  await deleteChannel(kv, system, gone.id, now);
  // The self-backup's S3 secret.
  await updateSettings(kv, system, {
    config: { enabled: true, hour: 2, retentionDays: 14 },
    results: { enabled: true, hour: 3, retentionDays: 7 },
    directory: `${dir}/backups`,
    minFreeBytes: 0,
    s3: {
      enabled: false,
      endpoint: "https://s3.acme.example",
      bucket: "bucket",
      region: "us-east-1",
      prefix: "",
      accessKeyId: "AKIAEXAMPLE",
      secretAccessKey: "s3-secret-1",
    },
  }, { now, masterKey, dataDir: dir });
  // A third-party platform's password.
  await createPlatform(kv, system, {
    type: "veeam",
    name: "VBR Paris",
    orgId: scope.orgId,
    endpointUrl: "https://vbr.acme.example:9419",
    username: "svc-cadres",
    password: "veeam-password-1",
  }, opts);
  // The control plane's token-signing key.
  await tokenSigningKey(kv, masterKey, now);
  // Key-encryption keys of both sources; the pam_vault one rotated (two versions held).
  const providers = kekProviders(masterKey);
  await providers.account.ensure(kv, { source: "account", accountId: scope.accountId, orgId: null }, now);
  const pam = { source: "pam_vault" as const, ...scope };
  await providers.pam_vault.ensure(kv, pam, now);
  await providers.pam_vault.rotate(kv, pam, system, now);
  return { tenant, scope };
}

Deno.test("every vault record of every kind has a listed owner, every listed owner is exercised, and the Config DB self-backup verifies", async () => {
  using kv = await Deno.openKv(":memory:");
  await using dir = await dataDir();
  const clock = new TestClock();
  await everyKind(kv, clock, dir.path);

  const refs = await listVaultReferences(kvOwnerReader(kv));
  const owned = new Map(refs.map((r) => [r.vaultId, r]));
  const records: VaultRecord[] = [];
  for await (const e of kv.list<VaultRecord>({ prefix: ["vault"] })) records.push(e.value);
  // Storage target, webhook, SMTP, S3, platform, token key, account KEK v1, pam_vault KEK v1 and v2.
  assert.equal(records.length, 9, records.map((r) => r.purpose).join(", "));
  for (const record of records) {
    const ref = owned.get(record.id);
    assert.ok(ref, `vault record ${record.id} (${record.purpose}) has no listed owner`);
    assert.equal(record.purpose, ref.purpose, `vault record ${record.id} is sealed for its owner`);
  }
  const exercised = new Set(refs.filter((r) => records.some((v) => v.id === r.vaultId)).map((r) => r.kind));
  assert.deepEqual(
    [...exercised].sort(),
    VAULT_OWNERS.map((o) => o.kind).sort(),
    "the scenario creates a record of every listed owner (extend it with a new owner)",
  );
  assert.deepEqual(await checkInvariants(kv), []);

  const t = await configBackup(kv, clock, dir.path);
  assert.equal(t.verification.status, "passed", t.verification.error ?? "");
  assert.equal(t.status, "success", t.error ?? "");
});

Deno.test("a vault record nobody owns, or an owner whose record is missing, is a violation", async () => {
  using kv = await Deno.openKv(":memory:");
  await using dir = await dataDir();
  const clock = new TestClock();
  const { scope } = await everyKind(kv, clock, dir.path);
  const { channel } = await createChannel(kv, system, {
    type: "webhook",
    name: "orphan",
    url: "https://hooks.acme.example/orphan",
    ...scope,
  }, { now: clock.now(), masterKey });
  if (channel.type !== "webhook") throw new Error("unreachable");
  // The channel vanishes without its secret: the record is orphaned.
  await kv.atomic().delete(["notification_channels", channel.id])
    .delete(["notification_channels_by_account", scope.accountId, channel.id]).commit();
  assert.deepEqual(await checkInvariants(kv), [`vault record ${channel.secretId} is referenced by nothing`]);
  const t = await configBackup(kv, clock, dir.path);
  assert.equal(t.verification.status, "failed");
  assert.match(t.verification.error!, /referenced by nothing/);
  // The other way round: a channel whose secret is gone.
  await kv.delete(["vault", channel.secretId]);
  const mail = (await Array.fromAsync(kv.list<{ id: string; type: string; passwordId: string }>({
    prefix: ["notification_channels"],
  }))).find((e) => e.value.type === "email")!.value;
  await kv.delete(["vault", mail.passwordId]);
  assert.deepEqual(await checkInvariants(kv), [
    `notification channel ${mail.id} refers to missing vault record ${mail.passwordId}`,
  ]);
});

Deno.test("every domain module that seals vault records is listed as a vault-record owner", async () => {
  const sealing = new Set<string>();
  const walk = async (dir: string, rel: string) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory) await walk(`${dir}/${e.name}`, `${rel}${e.name}/`);
      else if (e.name.endsWith(".ts") && `${rel}${e.name}` !== "vault.ts") {
        const text = await Deno.readTextFile(`${dir}/${e.name}`);
        if (/\bseal(?:Owned)?Secret\s*\(/.test(text)) sealing.add(`${rel}${e.name}`);
      }
    }
  };
  await walk(`${REPO_ROOT}domain`, "");
  for (const top of ["routes", "jobs"]) await walk(`${REPO_ROOT}${top}`, `../${top}/`);
  const listed = new Set(VAULT_OWNERS.map((o) => o.module));
  for (const module of sealing) {
    assert.ok(listed.has(module), `domain/${module} seals vault records but no VAULT_OWNERS entry names it`);
  }
  for (const module of listed) assert.ok(sealing.has(module), `${module} is listed but seals nothing`);
});
