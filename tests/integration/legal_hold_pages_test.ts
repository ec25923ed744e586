/**
 * Legal hold visibility (holds.ts, components/holds.tsx): the restore point page and the host page show
 * a badge per hold covering them (case reference, reason, link to the hold) and, for `backup.hold`, a
 * "Place legal hold" link whose form arrives with the subject chosen.
 */
import assert from "node:assert/strict";
import { placeHold } from "../../domain/holds.ts";
import { addUser, Browser, signInAs } from "../helpers.ts";
import { allPoints, fourEyesWorld, type World } from "./four_eyes_world.ts";
import type { User } from "../../domain/types.ts";

async function pageAs(
  w: World,
  kv: Deno.Kv,
  user: User,
  path: string,
): Promise<{ status: number; html: string }> {
  const browser = new Browser(w.app);
  await signInAs(browser, kv, user, w.clock.now());
  const res = await browser.get(path);
  return { status: res.status, html: await res.text() };
}

function holdSection(html: string): string {
  const m = html.match(/<section[^>]*id="legal-holds"[\s\S]*?<\/section>/);
  return m ? m[0] : "";
}

Deno.test("restore point and host pages: no hold yet, a 'Place legal hold' link for backup.hold that prefills the form", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 2);
  const [rp] = await allPoints(kv);
  const point = await pageAs(w, kv, w.users.admin1, `/backup/restore/points/${rp.id}`);
  assert.equal(point.status, 200);
  const section = holdSection(point.html);
  assert.match(section, /No legal hold covers this restore point/);
  assert.doesNotMatch(section, /data-testid="hold-badge"/);
  const href = section.match(/href="([^"]*)"[^>]*>Place legal hold</)?.[1]?.replaceAll("&amp;", "&");
  assert.equal(href, `/backup/holds?pointId=${rp.id}#place`);
  const form = await pageAs(w, kv, w.users.admin1, href!);
  assert.equal(form.status, 200);
  assert.match(
    form.html,
    new RegExp(`name="pointId"[^>]*value="${rp.id}"|value="${rp.id}"[^>]*name="pointId"`),
  );

  const host = await pageAs(w, kv, w.users.admin1, `/backup/hosts/${w.host.id}`);
  const hostHref = holdSection(host.html).match(/href="([^"]*)"[^>]*>Place legal hold</)?.[1]
    ?.replaceAll("&amp;", "&");
  assert.equal(hostHref, `/backup/holds?subject=host%3A${w.host.id}#place`);
  const hostForm = await pageAs(w, kv, w.users.admin1, hostHref!);
  assert.match(hostForm.html, new RegExp(`<option\\s+value="host:${w.host.id}" selected`));

  // A restore operator (no backup.hold) sees no link and, with no hold, no panel at all.
  const restorer = await addUser(
    kv,
    w.tenant,
    "restorer@acme.example",
    "restore_operator",
    [w.org],
    w.clock.now(),
  );
  const asOperator = await pageAs(w, kv, restorer, `/backup/restore/points/${rp.id}`);
  assert.equal(asOperator.status, 200);
  assert.equal(holdSection(asOperator.html), "");
});

Deno.test("a hold on the host: its points' pages and the host page show the case, reason and a link to the hold", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 2);
  const [rp0, rp1] = await allPoints(kv);
  const hold = await placeHold(kv, w.actors.admin1, {
    scope: "host",
    subjectId: w.host.id,
    reason: "Litigation <Smith>",
    caseReference: "CASE-42",
  }, w.clock.now());
  const restorer = await addUser(
    kv,
    w.tenant,
    "restorer@acme.example",
    "restore_operator",
    [w.org],
    w.clock.now(),
  );
  for (const rp of [rp0, rp1]) {
    const { status, html } = await pageAs(w, kv, restorer, `/backup/restore/points/${rp.id}`);
    assert.equal(status, 200);
    const section = holdSection(html);
    assert.match(section, /data-testid="hold-badge"/);
    assert.match(section, /Legal hold CASE-42/);
    assert.match(section, /Litigation &lt;Smith/, "the reason is shown, escaped");
    assert.match(section, new RegExp(`href="/backup/holds#hold-${hold.id}"`));
    assert.doesNotMatch(section, /Place legal hold/, "a restore operator lacks backup.hold");
  }
  const host = holdSection((await pageAs(w, kv, w.users.admin2, `/backup/hosts/${w.host.id}`)).html);
  assert.match(host, /Legal hold CASE-42/);
  assert.match(host, new RegExp(`href="/backup/holds#hold-${hold.id}"`));
  assert.match(host, /Place legal hold/);
  // The link lands on the hold's row.
  const list = await pageAs(w, kv, w.users.operator, "/backup/holds");
  assert.match(list.html, new RegExp(`<tr\\s+id="hold-${hold.id}"`));
});

Deno.test("a hold on one point shows on that point and its host, not on the host's other points", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 2);
  const [rp0, rp1] = await allPoints(kv);
  await placeHold(kv, w.actors.admin1, {
    scope: "point",
    subjectId: rp0.id,
    reason: "Audit",
    caseReference: "CASE-9",
  }, w.clock.now());
  assert.match(
    holdSection((await pageAs(w, kv, w.users.admin1, `/backup/restore/points/${rp0.id}`)).html),
    /CASE-9/,
  );
  const other = holdSection((await pageAs(w, kv, w.users.admin1, `/backup/restore/points/${rp1.id}`)).html);
  assert.doesNotMatch(other, /CASE-9/);
  assert.match(other, /No legal hold covers this restore point/);
  assert.match(
    holdSection((await pageAs(w, kv, w.users.admin1, `/backup/hosts/${w.host.id}`)).html),
    /CASE-9/,
  );
});

Deno.test("a hold on a policy shows on the pages of its hosts' points", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  const [rp] = await allPoints(kv);
  await placeHold(kv, w.actors.admin1, {
    scope: "policy",
    subjectId: w.policy.id,
    reason: "Regulator",
    caseReference: "CASE-P",
  }, w.clock.now());
  assert.match(
    holdSection((await pageAs(w, kv, w.users.viewer, `/backup/hosts/${w.host.id}`)).html),
    /CASE-P/,
  );
  assert.match(
    holdSection((await pageAs(w, kv, w.users.admin1, `/backup/restore/points/${rp.id}`)).html),
    /CASE-P/,
  );
});
