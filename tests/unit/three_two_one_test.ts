import assert from "node:assert/strict";
import { TARGET_TYPES, type TargetType } from "../../domain/storage.ts";
import { evaluate321, MEDIA_TYPES, TARGET_MEDIA } from "../../domain/three_two_one.ts";

function replica(targetType: TargetType, isOffsite = false) {
  return { targetType, isOffsite };
}

Deno.test("evaluate321() with only the primary copy lists everything that is missing", () => {
  assert.deepEqual(evaluate321({ primary: { type: "local" }, replicas: [] }), {
    copies: 1,
    mediaTypes: ["disk"],
    offsite: 0,
    met: false,
    missing: ["2 more copies", "a second media type", "an offsite copy"],
  });
});

Deno.test("evaluate321() is met by local + NAS + offsite object storage", () => {
  const r = evaluate321({ primary: { type: "local" }, replicas: [replica("nfs"), replica("s3", true)] });
  assert.deepEqual(r, {
    copies: 3,
    mediaTypes: ["disk", "nas", "object"],
    offsite: 1,
    met: true,
    missing: [],
  });
});

Deno.test("evaluate321() asks for one more copy when there are two", () => {
  const r = evaluate321({ primary: { type: "smb" }, replicas: [replica("iscsi", true)] });
  assert.equal(r.copies, 2);
  assert.equal(r.met, false);
  assert.deepEqual(r.missing, ["1 more copy"]);
});

Deno.test("evaluate321() counts media, not targets: three copies on disk are one media type", () => {
  const r = evaluate321({ primary: { type: "local" }, replicas: [replica("local"), replica("local", true)] });
  assert.deepEqual([r.copies, r.mediaTypes, r.offsite], [3, ["disk"], 1]);
  assert.deepEqual(r.missing, ["a second media type"]);
});

Deno.test("evaluate321() treats S3 and S3 Compatible as one media type, SMB and NFS as another", () => {
  const object = evaluate321({
    primary: { type: "s3" },
    replicas: [replica("s3_compatible", true), replica("s3")],
  });
  assert.deepEqual(object.mediaTypes, ["object"]);
  assert.deepEqual(object.missing, ["a second media type"]);
  const nas = evaluate321({ primary: { type: "smb" }, replicas: [replica("nfs", true), replica("smb")] });
  assert.deepEqual(nas.mediaTypes, ["nas"]);
});

Deno.test("evaluate321() counts only rules marked offsite: an S3 replica is not offsite by itself", () => {
  const r = evaluate321({ primary: { type: "local" }, replicas: [replica("s3"), replica("nfs")] });
  assert.equal(r.offsite, 0);
  assert.deepEqual(r.missing, ["an offsite copy"]);
  const primaryS3 = evaluate321({ primary: { type: "s3" }, replicas: [replica("local"), replica("nfs")] });
  assert.deepEqual(primaryS3.missing, ["an offsite copy"], "the primary never counts as offsite");
});

Deno.test("evaluate321() stays met with more than three copies and counts every offsite rule", () => {
  const r = evaluate321({
    primary: { type: "iscsi" },
    replicas: [replica("local"), replica("s3", true), replica("s3_compatible", true), replica("nfs")],
  });
  assert.deepEqual([r.copies, r.offsite, r.met], [5, 2, true]);
  assert.deepEqual(r.mediaTypes, ["block", "disk", "object", "nas"]);
});

Deno.test("TARGET_MEDIA maps every storage target type to a media type", () => {
  for (const type of TARGET_TYPES) assert.ok(MEDIA_TYPES.includes(TARGET_MEDIA[type]), type);
  assert.deepEqual(
    TARGET_TYPES.map((t) => TARGET_MEDIA[t]),
    ["object", "object", "nas", "nas", "block", "disk"],
  );
});
