/**
 * The BES keeps the trailer listing of a pack it has just received and checked, for the index segment that
 * lists it (one existence check instead of reading the trailer back: docs/performance.md, engine e2e). The
 * index check must stay as strict as reading the trailer back: a forged listing, a pack removed since its
 * upload, and a stored copy that is not the one this BES received are all refused.
 */
import assert from "node:assert/strict";
import { sha256Hex } from "../../engine/repo/chunk_id.ts";
import { encodeIndexSegment } from "../../engine/repo/index.ts";
import { type PackListing, parsePackTail } from "../../engine/repo/pack.ts";
import { objectPath } from "../../engine/protocol/data_api.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { deterministicBytes } from "./helpers.ts";
import { names, startBes } from "./data_api_fixture.ts";

async function putIndex(bes: Awaited<ReturnType<typeof startBes>>, listings: PackListing[]) {
  const seg = encodeIndexSegment(listings);
  const res = await bes.request(objectPath(`index/${sha256Hex(seg)}`), { method: "PUT", body: seg });
  const body = await res.json();
  return { status: res.status, message: body.error?.message as string | undefined };
}

Deno.test("data API: an index checked against the trailers of packs just received is as strict as one read back", async () => {
  await using bes = await startBes();
  const src = `${bes.dir}/src`;
  await Deno.mkdir(src);
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("trailer-a", 150_000));
  const remote = bes.remote(bes.token());
  const repo = await Repository.openNamespace(remote, bes.keys.a);
  await backupFiles(repo.namespace("host-a"), { paths: [src], host: "host-a" });
  const pack = (await names(bes.storage, "data/"))[0];
  const bytes = await bes.storage.get(pack);
  const parsed = parsePackTail(pack.slice(-64), bytes, bytes.length);
  assert.ok(!("need" in parsed));
  const listing = parsed as PackListing;

  // Received afresh (removed behind the API first): a forged listing is refused, the true one accepted.
  const reupload = async () => {
    await bes.storage.delete(pack);
    const res = await bes.request(objectPath(pack), { method: "PUT", body: bytes });
    assert.equal(res.status, 201);
    await res.body?.cancel();
  };
  await reupload();
  const forged = await putIndex(bes, [{ ...listing, entries: [{ ...listing.entries[0], length: 1 }] }]);
  assert.equal(forged.status, 422);
  assert.match(forged.message ?? "", new RegExp(listing.packId));
  await reupload();
  assert.equal((await putIndex(bes, [listing])).status, 201);

  // Received, then removed before the index names it: refused (the pack is checked to be there).
  await reupload();
  await bes.storage.delete(pack);
  const gone = await putIndex(bes, [listing]);
  assert.equal(gone.status, 422);
  assert.match(gone.message ?? "", new RegExp(listing.packId));

  // A stored copy whose trailer is damaged, and the same pack sent again: the BES keeps the stored copy
  // (same name, same bytes as far as it knows), so the index is checked against that copy's trailer.
  await reupload();
  const damaged = bytes.slice();
  damaged[damaged.length - 10] ^= 0x01;
  await bes.storage.delete(pack);
  await bes.storage.put(pack, damaged);
  const again = await bes.request(objectPath(pack), { method: "PUT", body: bytes });
  assert.equal(again.status, 201);
  await again.body?.cancel();
  assert.deepEqual(await bes.storage.get(pack), damaged); // not overwritten
  const stale = await putIndex(bes, [listing]);
  assert.equal(stale.status, 422);
});
