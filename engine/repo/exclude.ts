/**
 * Exclusion rules of a file backup: exact paths (and everything below them) and glob patterns. A
 * pattern starting with "/" matches the whole absolute path; any other pattern matches the path's
 * last components ("*.tmp", "node_modules", "cache/*.bin"). "*" and "?" do not cross "/", "**" does,
 * "[abc]" is a character class.
 */

import { globRegExp } from "./glob.ts";

/** Folders a file backup never enters (kernel and runtime pseudo file systems). */
export const SYSTEM_EXCLUDES: readonly string[] = Object.freeze(["/proc", "/sys", "/dev", "/run"]);

/** The first bytes of a CACHEDIR.TAG file (https://bford.info/cachedir/): such folders are skipped. */
export const CACHEDIR_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55";

/** A predicate telling whether an absolute path is excluded. */
export function compileExcludes(
  excludePaths: string[] = [],
  patterns: string[] = [],
): (path: string) => boolean {
  const paths = excludePaths.map((p) => p.replace(/\/+$/, "") || "/");
  const res = patterns.map((p) => globRegExp(p, { match: p.startsWith("/") ? "whole" : "tail" }));
  return (path) =>
    paths.some((p) => path === p || path.startsWith(p === "/" ? "/" : p + "/")) ||
    res.some((r) => r.test(path));
}
