/** Path validation of restore: RestorePath, PathList (the 10,000 limit, traversal, deduplication). */
import assert from "node:assert/strict";
import {
  dedupePaths,
  joinPath,
  MAX_RESTORE_PATHS,
  normalizeRestorePath,
  parentPath,
  PathList,
  RestorePath,
} from "../../domain/restore_paths.ts";
import { FileRestoreInput } from "../../domain/restore_requests.ts";

function refused(value: string): string {
  const r = normalizeRestorePath(value);
  assert.equal(r.ok, false, `${JSON.stringify(value)} is refused`);
  return (r as { message: string }).message;
}

function listError(paths: unknown): string {
  const r = PathList.safeParse(paths);
  assert.equal(r.success, false, "the list is refused");
  return r.error!.issues[0].message;
}

Deno.test("normalizeRestorePath() normalizes POSIX paths: repeated slashes, '.', trailing slash", () => {
  assert.deepEqual(normalizeRestorePath("/"), { ok: true, path: "/", windows: false });
  assert.deepEqual(normalizeRestorePath("//srv///data/"), { ok: true, path: "/srv/data", windows: false });
  assert.deepEqual(normalizeRestorePath("/srv/./data/./x.txt"), {
    ok: true,
    path: "/srv/data/x.txt",
    windows: false,
  });
  assert.deepEqual(normalizeRestorePath("/a/.../b"), { ok: true, path: "/a/.../b", windows: false });
  assert.deepEqual(normalizeRestorePath("/srv/with space/ü.txt"), {
    ok: true,
    path: "/srv/with space/ü.txt",
    windows: false,
  });
});

Deno.test("normalizeRestorePath() normalizes Windows paths: drive upper-case, backslashes, root kept", () => {
  assert.deepEqual(normalizeRestorePath("c:\\Users\\ann\\"), {
    ok: true,
    path: "C:\\Users\\ann",
    windows: true,
  });
  assert.deepEqual(normalizeRestorePath("D:/Data//Reports/q3.xlsx"), {
    ok: true,
    path: "D:\\Data\\Reports\\q3.xlsx",
    windows: true,
  });
  assert.deepEqual(normalizeRestorePath("C:\\"), { ok: true, path: "C:\\", windows: true });
  assert.deepEqual(normalizeRestorePath("C:"), { ok: true, path: "C:\\", windows: true });
});

Deno.test("normalizeRestorePath() refuses traversal, relative paths, NUL, control characters and long paths", () => {
  assert.match(refused("../etc/passwd"), /absolute/);
  assert.match(refused("/a/../b"), /\.\./);
  assert.match(refused("/.."), /\.\./);
  assert.match(refused("/srv/data/.."), /\.\./);
  assert.match(refused("C:\\Users\\..\\Windows"), /\.\./);
  assert.match(refused("C:/Users/../../Windows"), /\.\./);
  assert.match(refused("C:\\Users\\.. \\x"), /\.\./, "Windows drops trailing spaces: '.. ' climbs");
  assert.match(refused("C:\\a\\file.txt:stream"), /Windows/);
  assert.match(refused(""), /empty/);
  assert.match(refused("relative/path"), /absolute/);
  assert.match(refused("\\\\server\\share"), /absolute/);
  assert.match(refused("/etc/pass\0wd"), /NUL/);
  assert.match(refused("/etc/line\nbreak"), /control/);
  assert.match(refused("/" + "a".repeat(4096)), /4096/);
  assert.equal(normalizeRestorePath("/" + "a".repeat(4095)).ok, true);
});

Deno.test("RestorePath parses to the normalized path and reports the reason", () => {
  assert.equal(RestorePath.parse("/var//log/"), "/var/log");
  const r = RestorePath.safeParse("/var/../etc");
  assert.equal(r.success, false);
  assert.match(r.error!.issues[0].message, /\.\./);
  assert.equal(RestorePath.safeParse(42 as unknown as string).success, false);
});

Deno.test("PathList accepts exactly 10,000 paths and refuses 10,001", () => {
  const paths = Array.from({ length: MAX_RESTORE_PATHS }, (_, i) => `/data/file-${i}.txt`);
  const parsed = PathList.parse(paths);
  assert.equal(parsed.length, 10_000);
  assert.match(listError([...paths, "/data/one-more.txt"]), /at most 10,000/);
});

Deno.test("PathList refuses an empty list, an empty path, traversal and NUL, naming the entry", () => {
  assert.match(listError([]), /at least one/);
  assert.match(listError([""]), /path 1 must not be empty/);
  assert.match(listError(["/ok", "../x"]), /path 2 \(\.\.\/x\) must be an absolute path/);
  assert.match(listError(["/ok", "/a/../b"]), /path 2 \(\/a\/\.\.\/b\) must not contain/);
  assert.match(listError(["/a\0b"]), /path 1 \(\/a\?b\) must not contain NUL/);
  assert.match(listError("/not-a-list"), /list of paths/);
  assert.match(listError([42]), /must be a path/);
  assert.match(listError(["/srv", "C:\\Users"]), /mix Windows and POSIX/);
});

Deno.test("PathList deduplicates after normalization and drops paths under a selected folder", () => {
  assert.deepEqual(
    PathList.parse([
      "/srv/data/",
      "/srv//data",
      "/srv/data/a.txt",
      "/srv/data/sub/b.txt",
      "/etc/hosts",
      "/srv/database",
    ]),
    ["/srv/data", "/etc/hosts", "/srv/database"],
    "'/srv/database' is not under '/srv/data'",
  );
  assert.deepEqual(
    PathList.parse(["/srv/a/b.txt", "/srv/a"]),
    ["/srv/a"],
    "the folder wins whatever the order",
  );
  assert.deepEqual(PathList.parse(["/etc", "/", "/home"]), ["/"], "the root covers everything");
});

Deno.test("PathList deduplicates Windows paths case-insensitively", () => {
  assert.deepEqual(
    PathList.parse(["C:\\Users\\Ann", "c:/users/ann/Documents/cv.docx", "C:\\USERS\\ANN\\", "D:\\Data"]),
    ["C:\\Users\\Ann", "D:\\Data"],
  );
  assert.deepEqual(PathList.parse(["C:\\", "c:\\Windows"]), ["C:\\"]);
});

Deno.test("dedupePaths() keeps the input order and is fast for 10,000 nested paths", () => {
  const paths = Array.from({ length: 10_000 }, (_, i) => `/d${i % 100}/sub${i % 7}/f${i}`);
  const started = performance.now();
  const kept = dedupePaths([...paths, "/d1"], false);
  assert.ok(performance.now() - started < 500, "well under half a second");
  assert.equal(kept.filter((p) => p.startsWith("/d1/")).length, 0);
  assert.ok(kept.includes("/d1"));
  assert.equal(kept[0], "/d0/sub0/f0");
});

Deno.test("parentPath() and joinPath() on POSIX and Windows paths", () => {
  assert.equal(parentPath("/srv/data/x"), "/srv/data");
  assert.equal(parentPath("/srv"), "/");
  assert.equal(parentPath("/"), "/");
  assert.equal(parentPath("C:\\Users\\ann"), "C:\\Users");
  assert.equal(parentPath("C:\\Users"), "C:\\");
  assert.equal(joinPath("/", "etc"), "/etc");
  assert.equal(joinPath("/etc", "hosts"), "/etc/hosts");
  assert.equal(joinPath("C:\\", "Users"), "C:\\Users");
  assert.equal(joinPath("C:\\Users", "ann"), "C:\\Users\\ann");
});

Deno.test("FileRestoreInput: overwrite defaults to off, an empty target host means the original", () => {
  const input = FileRestoreInput.parse({
    restorePointId: "01KAHZ3Y3N4G2D8QF5T0V7W9XB",
    paths: ["/etc/hosts"],
    targetHostId: "",
    targetPath: "/restore/",
  });
  assert.equal(input.overwrite, false);
  assert.equal(input.targetHostId, undefined);
  assert.equal(input.targetPath, "/restore");
  const bad = FileRestoreInput.safeParse({ restorePointId: "x", paths: [], targetPath: "restore" });
  assert.equal(bad.success, false);
  const fields = new Set(bad.error!.issues.map((i) => String(i.path[0])));
  assert.deepEqual([...fields].sort(), ["paths", "restorePointId", "targetPath"]);
});
