/**
 * Storage targets and engines in the browser, on a server seeded through the CLI with one simulated
 * BES registered over the real signed engine protocol: one target of each type through the create
 * form (only the chosen type's fieldset shows), field-level errors that keep what was typed, a
 * credentialed target whose secret never comes back, capacity from a heartbeat (usage, chart island,
 * live widget, alert), and the engine pages: online status, PXE CIDR validation, typed-name delete
 * that removes the engine and its targets. Each test stands alone on the file's shared server
 * (scenario.ts): its own tenant and BES, creating the targets it needs.
 */
import assert from "node:assert/strict";
import type { Page, Response } from "playwright-core";
import { EngineClient, type EngineIdentity } from "../../tools/engine_client.ts";
import { screenshot } from "./harness.ts";
import { scenario, type ScenarioContext } from "./scenario.ts";
import { assertFieldError, isPost } from "./helpers.ts";

const ENGINE = { name: "bes-alpha", hostname: "bes-alpha.backup.internal", ipAddress: "10.40.1.20" };
const METRICS = {
  cpuPercent: 12.5,
  memoryPercent: 41,
  diskPercent: 37,
  activeJobs: 1,
  uptimeSeconds: 86_400,
};
const TIB = 1024 ** 4;

type Group = "s3" | "smb" | "nfs" | "iscsi" | "local";
const GROUPS: Group[] = ["s3", "smb", "nfs", "iscsi", "local"];
const TYPE_GROUP: Record<string, Group> = {
  s3: "s3",
  s3_compatible: "s3",
  smb: "smb",
  nfs: "nfs",
  iscsi: "iscsi",
  local: "local",
};

interface TargetSpec {
  name: string;
  type: string;
  label: string;
  /** Form field name → value, e.g. `s3_bucket`. */
  fields: Record<string, string>;
}

/** One valid target of each type. */
const TARGETS: TargetSpec[] = [
  {
    name: "Primary S3",
    type: "s3",
    label: "S3",
    fields: {
      s3_endpoint: "https://s3.eu-west-1.amazonaws.com",
      s3_bucket: "contoso-backup-prod",
      s3_region: "eu-west-1",
      s3_prefix: "backups/prod",
    },
  },
  {
    name: "MinIO Archive",
    type: "s3_compatible",
    label: "S3 Compatible",
    fields: {
      s3_endpoint: "https://minio.backup.internal:9000",
      s3_bucket: "archive",
      s3_region: "us-east-1",
      s3_prefix: "",
    },
  },
  {
    name: "Finance Share",
    type: "smb",
    label: "SMB",
    fields: { smb_server: "fs01.corp.internal", smb_share: "backups", smb_path: "cadres/finance" },
  },
  {
    name: "NAS Export",
    type: "nfs",
    label: "NFS",
    fields: {
      nfs_server: "10.0.0.20",
      nfs_exportPath: "/exports/backup",
      nfs_mountOptions: "vers=4.1,hard,timeo=600",
    },
  },
  {
    name: "SAN LUN 3",
    type: "iscsi",
    label: "iSCSI",
    fields: {
      iscsi_portal: "10.0.0.5:3260",
      iscsi_iqn: "iqn.2004-05.com.example:storage.disk1",
      iscsi_lun: "3",
    },
  },
  { name: "Local Disk", type: "local", label: "Local", fields: { local_path: "/srv/backup" } },
];

/** The storage list's own table (the CapacityWidget island renders a `.table--compact` one). */
const LIST_TABLE = "table.table:not(.table--compact)";

/** The visibility of each type fieldset of the create form. */
async function visibleGroups(page: Page): Promise<Record<Group, boolean>> {
  const out = {} as Record<Group, boolean>;
  for (const group of GROUPS) {
    out[group] = await page.locator(`fieldset.type-fields[data-group=${group}]`).isVisible();
  }
  return out;
}

function onlyGroup(group: Group): Record<Group, boolean> {
  return Object.fromEntries(GROUPS.map((g) => [g, g === group])) as Record<Group, boolean>;
}

/** Fills the create form (on /backup/storage/new) with a name, type, engine, fields and thresholds. */
async function fillTargetForm(
  page: Page,
  spec: { name: string; type: string; fields: Record<string, string> },
  thresholds?: { alert: string; critical: string },
): Promise<void> {
  await page.locator("#f-name").fill(spec.name);
  await page.locator("#f-type").selectOption(spec.type);
  await page.locator("#f-besId").selectOption({ label: ENGINE.name });
  for (const [field, value] of Object.entries(spec.fields)) await page.locator(`#f-${field}`).fill(value);
  if (thresholds) {
    await page.locator("#f-alertThreshold").fill(thresholds.alert);
    await page.locator("#f-criticalThreshold").fill(thresholds.critical);
  }
}

/** Submits the create form and returns the POST's response. */
async function submitTargetForm(page: Page): Promise<Response> {
  const [res] = await Promise.all([
    page.waitForResponse(isPost("/backup/storage/new")),
    page.getByRole("button", { name: "Create storage target" }).click(),
  ]);
  await page.waitForLoadState("domcontentloaded");
  return res;
}

/** The names in the storage list's table (not the widget's). */
async function listedTargetNames(page: Page): Promise<string[]> {
  await page.goto("/backup/storage");
  await page.getByRole("heading", { name: "Storage", level: 1 }).waitFor();
  return (await page.locator(`${LIST_TABLE} tbody tr td:first-child`).allInnerTexts())
    .map((s) => s.trim());
}

/** Asserts the re-rendered form kept every typed value. */
async function assertKept(page: Page, values: Record<string, string>): Promise<void> {
  for (const [field, value] of Object.entries(values)) {
    assert.equal(await page.locator(`#f-${field}`).inputValue(), value, `${field} keeps what was typed`);
  }
}

const { test } = scenario("Contoso Storage");

const CRED = {
  name: "Vault S3",
  username: "AKIACONTOSOEXAMPLE",
  secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz-e2e-secret-93c1",
};

/** The tenant's BES over the signed protocol (online, no target yet); the administrator signed in. */
async function world(ctx: ScenarioContext) {
  const { page, server } = ctx;
  const ADMIN = ctx.tenant.admin;
  const orgSecret = ctx.tenant.orgSecret;
  assert.match(orgSecret, /^cdo_\S{20,}$/);
  const engineClient = new EngineClient(server.baseUrl);
  const registered = await engineClient.registerBes(orgSecret, ENGINE);
  assert.equal(registered.response.status, 201, JSON.stringify(registered.body));
  const identity: EngineIdentity = registered.identity;
  const engineId = identity.id;
  const beat = await engineClient.heartbeat(identity, METRICS);
  const beatBody = await beat.json();
  assert.equal(beat.status, 200, JSON.stringify(beatBody));
  assert.equal(beatBody.status, "online");
  assert.deepEqual(beatBody.storageTargetIds, []);
  await ctx.signIn();
  return {
    page,
    server,
    ADMIN,
    engineClient,
    identity,
    engineId,
    targetIds: new Map<string, string>(),
    badNames: [] as string[],
  };
}

type World = Awaited<ReturnType<typeof world>>;

/** The engine is listed as online. */
async function engineOnline(w: World) {
  const { page, ADMIN } = w;
  await page.goto("/backup/engines");
  const row = page.locator("tr", { has: page.getByRole("link", { name: ENGINE.name, exact: true }) });
  await row.waitFor();
  assert.equal((await row.locator(".badge").innerText()).trim(), "online");
  const text = await row.innerText();
  assert.match(text, new RegExp(ENGINE.hostname.replaceAll(".", "\\.")));
  assert.match(text, /10\.40\.1\.20/);
  assert.match(text, new RegExp(ADMIN.orgName));
  await screenshot(page, "storage-01-engines-online");
}

/** The create form shows only the chosen type's fieldset. */
async function typeFieldsets(w: World) {
  const { page } = w;
  await page.goto("/backup/storage/new");
  await page.getByRole("heading", { name: "Add Storage Target", level: 1 }).waitFor();
  assert.equal(await page.locator("#f-type").inputValue(), "s3", "S3 is preselected");
  assert.deepEqual(await visibleGroups(page), onlyGroup("s3"));
  for (const type of ["smb", "nfs", "iscsi", "local", "s3_compatible", "s3"]) {
    await page.locator("#f-type").selectOption(type);
    assert.deepEqual(await visibleGroups(page), onlyGroup(TYPE_GROUP[type]), `with type ${type}`);
    if (type === "iscsi") await screenshot(page, "storage-02-form-iscsi-fields");
  }
}

/** The thresholds and the credentials stay visible for every type. */
async function thresholdsVisible(w: World) {
  const { page } = w;
  await page.goto("/backup/storage/new");
  for (const type of ["s3", "s3_compatible", "smb", "nfs", "iscsi", "local"]) {
    await page.locator("#f-type").selectOption(type);
    assert.ok(await page.locator("#f-alertThreshold").isVisible(), `alert threshold with type ${type}`);
    assert.ok(
      await page.locator("#f-cred_secret").isVisible(),
      `the credentials fieldset must stay visible with type ${type} (static/app.css hides every ` +
        `.type-fields without data-group=${TYPE_GROUP[type]}, including the credentials fieldset)`,
    );
  }
}

/** One target of each type is created and shown with its name and type. */
async function oneOfEachType(w: World) {
  const { page, targetIds } = w;
  for (const [i, spec] of TARGETS.entries()) {
    await page.goto("/backup/storage/new");
    await fillTargetForm(page, spec);
    assert.deepEqual(await visibleGroups(page), onlyGroup(TYPE_GROUP[spec.type]));
    if (i === 0) await screenshot(page, "storage-03-form-s3-filled");
    const res = await submitTargetForm(page);
    assert.equal(res.status(), 303, `creating ${spec.name}`);
    await page.waitForURL((url) => /^\/backup\/storage\/\w+$/.test(url.pathname));
    const id = new URL(page.url()).pathname.split("/").pop()!;
    assert.notEqual(id, "new");
    targetIds.set(spec.name, id);
    await page.getByRole("heading", { name: spec.name, level: 1 }).waitFor();
    await page.getByRole("status").filter({ hasText: `Storage target ${spec.name} created.` })
      .waitFor();
    const subtitle = await page.locator(".page-header .subtitle").innerText();
    assert.ok(subtitle.startsWith(`${spec.label} on ${ENGINE.name}`), subtitle);
    const connection = page.locator("section.panel", {
      has: page.getByRole("heading", { name: "Connection" }),
    });
    const facts = await connection.innerText();
    for (const value of Object.values(spec.fields).filter(Boolean)) {
      assert.ok(facts.includes(value), `${spec.name}: the connection shows ${value}`);
    }
    assert.match(facts, /Credentials\s+none/);
    await screenshot(page, `storage-04-created-${spec.type}`);
  }
  const names = await listedTargetNames(page);
  assert.deepEqual(names, TARGETS.map((s) => s.name).sort((a, b) => a.localeCompare(b)));
  for (const spec of TARGETS) {
    const row = page.locator(`${LIST_TABLE} tr`, {
      has: page.getByRole("link", { name: spec.name, exact: true }),
    });
    const cells = await row.locator("td").allInnerTexts();
    assert.equal(cells[1].trim(), spec.label, `${spec.name} is listed as ${spec.label}`);
    assert.equal(cells[2].trim(), ENGINE.name);
    assert.equal(cells[3].trim(), "unknown", "no capacity reported yet");
  }
  await screenshot(page, "storage-05-list-all-types");
}

/** Bad S3 input and thresholds: field errors, typed values kept, 422. */
async function badS3(w: World) {
  const { page, engineId, badNames } = w;
  await page.goto("/backup/storage/new");
  const spec = {
    name: "Broken S3",
    type: "s3",
    fields: {
      s3_endpoint: "https://s3.eu-west-1.amazonaws.com",
      s3_bucket: "Bad_Bucket",
      s3_region: "nowhere",
      s3_prefix: "nightly",
    },
  };
  badNames.push(spec.name);
  await fillTargetForm(page, spec, { alert: "90", critical: "80" });
  const res = await submitTargetForm(page);
  assert.equal(res.status(), 422);
  assert.equal(new URL(page.url()).pathname, "/backup/storage/new", "no redirect to a target page");
  await page.getByRole("heading", { name: "Add Storage Target", level: 1 }).waitFor();
  await assertFieldError(page, "s3_bucket", /lowercase letters, digits, dots and hyphens/);
  await assertFieldError(page, "s3_region", /AWS region such as eu-west-1/);
  await assertFieldError(page, "criticalThreshold", /higher than the alert threshold/);
  assert.equal(await page.locator("#f-alertThreshold").getAttribute("aria-invalid"), null);
  assert.equal(await page.locator("#f-s3_endpoint").getAttribute("aria-invalid"), null);
  assert.equal(await page.locator("#f-name").getAttribute("aria-invalid"), null);
  await assertKept(page, {
    name: spec.name,
    type: "s3",
    besId: engineId,
    ...spec.fields,
    alertThreshold: "90",
    criticalThreshold: "80",
  });
  assert.deepEqual(await visibleGroups(page), onlyGroup("s3"), "the S3 fieldset is still the one shown");
  await screenshot(page, "storage-06-bad-s3");
}

/** Bad NFS export path: field error, typed values kept, 422. */
async function badNfs(w: World) {
  const { page, engineId, badNames } = w;
  await page.goto("/backup/storage/new");
  const spec = {
    name: "Broken NFS",
    type: "nfs",
    fields: {
      nfs_server: "nas01.corp.internal",
      nfs_exportPath: "exports",
      nfs_mountOptions: "vers=4.1",
    },
  };
  badNames.push(spec.name);
  await fillTargetForm(page, spec);
  const res = await submitTargetForm(page);
  assert.equal(res.status(), 422);
  await assertFieldError(page, "nfs_exportPath", /absolute path starting with \//);
  assert.equal(await page.locator("#f-nfs_server").getAttribute("aria-invalid"), null);
  await assertKept(page, { name: spec.name, type: "nfs", besId: engineId, ...spec.fields });
  assert.deepEqual(await visibleGroups(page), onlyGroup("nfs"), "the re-rendered form shows NFS fields");
  await screenshot(page, "storage-07-bad-nfs");
}

/** Bad iSCSI portal, IQN and LUN: field errors, typed values kept, 422. */
async function badIscsi(w: World) {
  const { page, engineId, badNames } = w;
  await page.goto("/backup/storage/new");
  const spec = {
    name: "Broken iSCSI",
    type: "iscsi",
    fields: { iscsi_portal: "host:99999", iscsi_iqn: "iqn.bad", iscsi_lun: "99999" },
  };
  badNames.push(spec.name);
  await fillTargetForm(page, spec);
  const res = await submitTargetForm(page);
  assert.equal(res.status(), 422);
  await assertFieldError(page, "iscsi_portal", /host:port/);
  await assertFieldError(page, "iscsi_iqn", /must be an IQN/i);
  await assertFieldError(page, "iscsi_lun", /whole number 0–16383/);
  await assertKept(page, { name: spec.name, type: "iscsi", besId: engineId, ...spec.fields });
  assert.deepEqual(await visibleGroups(page), onlyGroup("iscsi"));
  await screenshot(page, "storage-08-bad-iscsi");
}

/** A relative local path: field error, typed values kept, 422. */
async function badLocal(w: World) {
  const { page, engineId, badNames } = w;
  await page.goto("/backup/storage/new");
  const spec = { name: "Broken Local", type: "local", fields: { local_path: "backups/local" } };
  badNames.push(spec.name);
  await fillTargetForm(page, spec, { alert: "70", critical: "90" });
  const res = await submitTargetForm(page);
  assert.equal(res.status(), 422);
  await assertFieldError(page, "local_path", /absolute path starting with \//);
  await assertKept(page, {
    name: spec.name,
    type: "local",
    besId: engineId,
    ...spec.fields,
    alertThreshold: "70",
    criticalThreshold: "90",
  });
  assert.deepEqual(await visibleGroups(page), onlyGroup("local"));
  await screenshot(page, "storage-09-bad-local");
}

/** No target was created by the rejected forms. */
async function noneCreated(w: World) {
  const { page, badNames } = w;
  const names = await listedTargetNames(page);
  for (const name of badNames) assert.ok(!names.includes(name), `${name} must not have been created`);
  assert.equal(names.length, TARGETS.length);
}

/** A credentialed S3 target keeps its secret in the vault only. */
async function credentialed(w: World) {
  const { page, targetIds } = w;
  await page.goto("/backup/storage/new");
  await fillTargetForm(page, {
    name: CRED.name,
    type: "s3",
    fields: {
      s3_endpoint: "https://s3.eu-central-1.amazonaws.com",
      s3_bucket: "contoso-vault-test",
      s3_region: "eu-central-1",
      s3_prefix: "",
    },
  });
  // Fail fast (not after the 20 s action timeout) when the credentials are not reachable.
  assert.ok(
    await page.locator("#f-cred_secret").isVisible(),
    "the credentials fieldset must be visible on the create form",
  );
  await page.locator("#f-cred_username").fill(CRED.username);
  await page.locator("#f-cred_secret").fill(CRED.secret);
  await page.locator("#f-cred_type").selectOption("access_key");
  await screenshot(page, "storage-10-credentialed-form");
  const res = await submitTargetForm(page);
  assert.equal(res.status(), 303);
  await page.waitForURL((url) => /^\/backup\/storage\/\w+$/.test(url.pathname));
  targetIds.set(CRED.name, new URL(page.url()).pathname.split("/").pop()!);
  await page.getByRole("heading", { name: CRED.name, level: 1 }).waitFor();

  const html = await page.content();
  assert.ok(!html.includes(CRED.secret), "the secret must not appear on the target page");
  const connection = page.locator("section.panel", {
    has: page.getByRole("heading", { name: "Connection" }),
  });
  assert.match(
    await connection.innerText(),
    new RegExp(`Credentials\\s+access_key \\(${CRED.username}\\), in the vault`),
  );
  assert.match(
    await page.locator("form.form").innerText(),
    /Stored: access_key for AKIACONTOSOEXAMPLE/,
  );
  assert.equal(await page.locator("#f-cred_secret").inputValue(), "", "the secret input is empty");
  await screenshot(page, "storage-11-credentialed-target");

  await listedTargetNames(page);
  assert.ok(!(await page.content()).includes(CRED.secret), "the secret must not appear in the list");
  const api = await page.evaluate(async (id) => {
    const res = await fetch(`/api/v1/storage/${id}`, { headers: { accept: "application/json" } });
    return { status: res.status, text: await res.text() };
  }, targetIds.get(CRED.name)!);
  assert.equal(api.status, 200);
  assert.ok(!api.text.includes(CRED.secret), "the secret must not appear in the API");
  assert.equal(JSON.parse(api.text).hasCredentials, true);
}

/** A rejected credentialed form does not echo the secret back. */
async function credRejected(w: World) {
  const { page } = w;
  await page.goto("/backup/storage/new");
  await fillTargetForm(page, {
    name: "Vault S3 broken",
    type: "s3",
    fields: { s3_endpoint: "ftp://nope", s3_bucket: "ok-bucket", s3_region: "eu-west-1", s3_prefix: "" },
  });
  assert.ok(await page.locator("#f-cred_secret").isVisible(), "the credentials fieldset must be visible");
  await page.locator("#f-cred_username").fill(CRED.username);
  await page.locator("#f-cred_secret").fill(CRED.secret);
  const res = await submitTargetForm(page);
  assert.equal(res.status(), 422);
  await assertFieldError(page, "s3_endpoint", /http\(s\) URL/);
  assert.equal(await page.locator("#f-cred_username").inputValue(), CRED.username);
  assert.equal(await page.locator("#f-cred_secret").inputValue(), "", "a secret is never echoed back");
  assert.ok(!(await page.content()).includes(CRED.secret));
}

/** A heartbeat with capacity shows usage, the chart and the live widget. */
async function capacity(w: World) {
  const { page, targetIds, engineClient, identity } = w;
  const s3Id = targetIds.get("Primary S3")!;
  const nfsId = targetIds.get("NAS Export")!;
  const report = (targetId: string, totalBytes: number, share: number) => {
    const usedBytes = Math.round(totalBytes * share);
    return { targetId, totalBytes, usedBytes, freeBytes: totalBytes - usedBytes };
  };
  const res = await engineClient.heartbeat(identity, METRICS, [
    report(s3Id, 4 * TIB, 0.42),
    report(nfsId, 2 * TIB, 0.9),
  ]);
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.status, "online");
  assert.deepEqual(
    [...body.storageTargetIds].sort(),
    [...targetIds.values()].sort(),
    "the heartbeat reply lists every target of the engine",
  );

  await page.goto(`/backup/storage/${s3Id}`);
  await page.getByRole("heading", { name: "Primary S3", level: 1 }).waitFor();
  const capacity = page.locator("section.panel", {
    has: page.getByRole("heading", { name: "Capacity" }),
  });
  const facts = await capacity.first().innerText();
  assert.match(facts, /Usage\s+42%/);
  assert.match(facts, /alert 85% · critical 95%/);
  assert.equal((await page.locator(".page-header .badge").innerText()).trim(), "healthy");
  await page.locator("[data-island=CapacityChart][data-hydrated=true]").waitFor();
  // Hydrated means interactive: hovering the chart reads out the reported day.
  const chart = page.locator("[data-island=CapacityChart] svg.chart-svg");
  await chart.hover();
  const readout = page.locator("[data-island=CapacityChart] [data-testid=chart-readout]");
  await readout.filter({ hasText: /^\d{4}-\d{2}-\d{2}: 42% \(1\.7 TB of 4\.0 TB\)$/ }).waitFor({
    timeout: 5_000,
  });
  await page.getByRole("button", { name: "30 days" }).click();
  assert.equal(
    await page.getByRole("button", { name: "30 days" }).getAttribute("aria-pressed"),
    "true",
  );
  await screenshot(page, "storage-12-capacity-chart");

  await page.goto(`/backup/storage/${nfsId}`);
  await page.getByRole("heading", { name: "NAS Export", level: 1 }).waitFor();
  assert.match(
    await page.locator("dl.facts").first().innerText(),
    /Usage\s+90% — .*alert threshold 85%/,
  );
  assert.equal((await page.locator(".page-header .badge").innerText()).trim(), "warning");

  await page.goto("/backup/storage");
  const widget = page.locator("[data-island=CapacityWidget]");
  await widget.waitFor();
  await page.locator("[data-island=CapacityWidget][data-hydrated=true]").waitFor();
  const rows = widget.locator("[data-testid=widget-row]");
  assert.equal(await rows.count(), targetIds.size);
  // Sorted fullest first: NFS 90 %, S3 42 %, then the unreported ones.
  assert.match(await rows.nth(0).innerText(), /NAS Export\s+warning\s+90%/);
  assert.match(await rows.nth(1).innerText(), /Primary S3\s+healthy\s+42%/);
  const s3Row = page.locator(`${LIST_TABLE} tr`, {
    has: page.getByRole("link", { name: "Primary S3", exact: true }),
  });
  assert.equal((await s3Row.locator("td").nth(4).innerText()).trim(), "42%");
  await screenshot(page, "storage-13-list-capacity-widget");

  await page.goto("/backup/alerts");
  const alert = page.locator("tr", { hasText: "NAS Export" });
  await alert.waitFor();
  assert.match(await alert.innerText(), /warning/i);
  await screenshot(page, "storage-14-alerts");
}

/** Engine detail shows the heartbeat metrics and its targets. */
async function engineDetail(w: World) {
  const { page, targetIds, engineId } = w;
  await page.goto(`/backup/engines/${engineId}`);
  await page.getByRole("heading", { name: ENGINE.name, level: 1 }).waitFor();
  assert.equal((await page.locator(".page-header .badge").innerText()).trim(), "online");
  // The CPU sparkline, labelled with the time span it covers (issue 17: sparklines with time labels).
  const cpu = page.locator("figure.spark svg[aria-label^='CPU % ']");
  assert.equal(await cpu.count(), 1);
  const hhmm = String.raw`(\d{4}-\d{2}-\d{2} )?\d{2}:\d{2} UTC`;
  assert.match(
    (await cpu.getAttribute("aria-label")) ?? "",
    new RegExp(`^CPU % from ${hhmm} to ${hhmm}$`),
  );
  const targetsPanel = page.locator("section.panel", {
    has: page.getByRole("heading", { name: `Storage targets (${targetIds.size})` }),
  });
  for (const name of targetIds.keys()) {
    assert.equal(await targetsPanel.getByRole("link", { name, exact: true }).count(), 1, name);
  }
  await screenshot(page, "storage-15-engine-detail");
}

/** PXE with a host address as CIDR is a field error; the network address saves. */
async function pxe(w: World) {
  const { page, engineId } = w;
  await page.goto(`/backup/engines/${engineId}`);
  await page.locator("input[name=pxeEnabled]").check();
  await page.locator("#f-pxeNetwork").fill("10.0.0.5/24");
  const [bad] = await Promise.all([
    page.waitForResponse(isPost(`/backup/engines/${engineId}`)),
    page.getByRole("button", { name: "Save", exact: true }).click(),
  ]);
  assert.equal(bad.status(), 422);
  await page.waitForLoadState("domcontentloaded");
  await assertFieldError(
    page,
    "pxeNetwork",
    /^Host bits are set: did you mean the network address of \/24\?$/,
  );
  assert.equal(await page.locator("#f-pxeNetwork").inputValue(), "10.0.0.5/24");
  assert.ok(await page.locator("input[name=pxeEnabled]").isChecked(), "the PXE checkbox is kept");
  assert.equal(await page.locator("#f-name").inputValue(), ENGINE.name);
  assert.match(await page.locator("dl.facts").first().innerText(), /PXE\s+Disabled/, "nothing saved");
  await screenshot(page, "storage-16-engine-bad-cidr");

  await page.locator("#f-pxeNetwork").fill("10.0.0.0/24");
  const [good] = await Promise.all([
    page.waitForResponse(isPost(`/backup/engines/${engineId}`)),
    page.getByRole("button", { name: "Save", exact: true }).click(),
  ]);
  assert.equal(good.status(), 303);
  await page.getByRole("status").filter({ hasText: `Saved ${ENGINE.name}.` }).waitFor();
  assert.match(await page.locator("dl.facts").first().innerText(), /PXE\s+Enabled on 10\.0\.0\.0\/24/);
  assert.equal(await page.locator("#f-pxeNetwork").inputValue(), "10.0.0.0/24");
  assert.ok(await page.locator("input[name=pxeEnabled]").isChecked());
  await screenshot(page, "storage-17-engine-pxe-saved");
}

/** Deleting the engine needs its exact name, then removes it and its targets. */
async function deleteEngine(w: World) {
  const { page, targetIds, engineClient, identity, engineId } = w;
  await page.goto(`/backup/engines/${engineId}`);
  await Promise.all([
    page.waitForURL((url) => url.pathname === `/backup/engines/${engineId}/delete`),
    page.getByRole("link", { name: "Delete engine…" }).click(),
  ]);
  await page.getByRole("heading", { name: `Delete ${ENGINE.name}?`, level: 1 }).waitFor();
  assert.match(
    await page.locator("main").innerText(),
    new RegExp(`its ${targetIds.size}\\s+storage targets`),
  );
  await screenshot(page, "storage-18-engine-delete-confirm");

  await page.locator("#f-confirm").fill("bes-alpah");
  const [wrong] = await Promise.all([
    page.waitForResponse(isPost(`/backup/engines/${engineId}/delete`)),
    page.getByRole("button", { name: "Delete engine" }).click(),
  ]);
  assert.equal(wrong.status(), 422);
  await page.waitForLoadState("domcontentloaded");
  await assertFieldError(page, "confirm", /Type the engine's name exactly/);
  assert.equal(await page.locator("#f-confirm").inputValue(), "bes-alpah");
  await screenshot(page, "storage-19-engine-delete-wrong-name");
  await page.goto("/backup/engines");
  await page.getByRole("link", { name: ENGINE.name, exact: true }).waitFor();
  assert.equal((await listedTargetNames(page)).length, targetIds.size, "nothing was deleted");

  await page.goto(`/backup/engines/${engineId}/delete`);
  await page.locator("#f-confirm").fill(ENGINE.name);
  const [right] = await Promise.all([
    page.waitForResponse(isPost(`/backup/engines/${engineId}/delete`)),
    page.getByRole("button", { name: "Delete engine" }).click(),
  ]);
  assert.equal(right.status(), 303);
  await page.waitForURL((url) => url.pathname === "/backup/engines");
  await page.getByRole("status").filter({ hasText: `Deleted engine ${ENGINE.name}` }).waitFor();
  assert.equal(await page.getByRole("link", { name: ENGINE.name, exact: true }).count(), 0);
  await page.getByText("No engines registered yet").waitFor();
  await screenshot(page, "storage-20-engines-after-delete");

  assert.deepEqual(await listedTargetNames(page), []);
  await page.getByText("No storage targets yet").waitFor();
  assert.equal(await page.locator("[data-island=CapacityWidget]").count(), 0);
  await screenshot(page, "storage-21-storage-after-delete");
  for (const id of targetIds.values()) {
    const res = await page.goto(`/backup/storage/${id}`);
    assert.equal(res?.status(), 404, `target ${id} is gone`);
  }
  const gone = await page.goto(`/backup/engines/${engineId}`);
  assert.equal(gone?.status(), 404);

  // The deleted engine can no longer heartbeat.
  const late = await engineClient.heartbeat(identity, METRICS);
  await late.body?.cancel();
  assert.ok(
    late.status === 401 || late.status === 404,
    `a deleted engine's heartbeat got ${late.status}`,
  );
}

test("storage: the engine is listed as online", async (ctx) => {
  const w = await world(ctx);
  await engineOnline(w);
});

test("storage: the create form shows only the chosen type's fieldset", async (ctx) => {
  const w = await world(ctx);
  await typeFieldsets(w);
});

test("storage: the thresholds and the credentials stay visible for every type", async (ctx) => {
  const w = await world(ctx);
  await thresholdsVisible(w);
});

test("storage: one target of each type is created and shown with its name and type; bad S3 input and thresholds: field errors, typed values kept, 422; bad NFS export path: field error, typed values kept, 422; bad iSCSI portal, IQN and LUN: field errors, typed values kept, 422; a relative local path: field error, typed values kept, 422; no target was created by the rejected forms", async (ctx) => {
  const w = await world(ctx);
  await oneOfEachType(w);
  await badS3(w);
  await badNfs(w);
  await badIscsi(w);
  await badLocal(w);
  await noneCreated(w);
});

test("storage: a credentialed S3 target keeps its secret in the vault only", async (ctx) => {
  const w = await world(ctx);
  await credentialed(w);
});

test("storage: a rejected credentialed form does not echo the secret back", async (ctx) => {
  const w = await world(ctx);
  await credRejected(w);
});

test(
  "storage: a heartbeat with capacity shows usage, the chart and the live widget; engine detail shows the heartbeat metrics and its targets; deleting the engine needs its exact name, then removes it and its targets",
  async (ctx) => {
    const w = await world(ctx);
    for (const step of [oneOfEachType, credentialed, capacity, engineDetail, deleteEngine]) await step(w);
  },
);

test("storage: PXE with a host address as CIDR is a field error; the network address saves", async (ctx) => {
  const w = await world(ctx);
  await pxe(w);
});
