/**
 * Exclusion rules of a file backup: exact paths (and everything below them) and glob patterns. A
 * pattern starting with "/" matches the whole absolute path; any other pattern matches the path's
 * last components ("*.tmp", "node_modules", "cache/*.bin"). "*" and "?" do not cross "/", "**" does,
 * "[abc]" is a character class.
 */

/** Folders a file backup never enters (kernel and runtime pseudo file systems). */
export const SYSTEM_EXCLUDES: readonly string[] = Object.freeze(["/proc", "/sys", "/dev", "/run"]);

/** The first bytes of a CACHEDIR.TAG file (https://bford.info/cachedir/): such folders are skipped. */
export const CACHEDIR_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55";

function globToRegExp(glob: string): string {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*" && glob[i + 1] === "*") {
      re += ".*";
      i++;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const end = glob.indexOf("]", i + 1);
      if (end < 0) re += "\\[";
      else {
        const body = glob.slice(i + 1, end).replace(/\\/g, "\\\\");
        re += `[${body.startsWith("!") ? "^" + body.slice(1) : body}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return re;
}

/** A predicate telling whether an absolute path is excluded. */
export function compileExcludes(
  excludePaths: string[] = [],
  patterns: string[] = [],
): (path: string) => boolean {
  const paths = excludePaths.map((p) => p.replace(/\/+$/, "") || "/");
  const res = patterns.map((p) =>
    new RegExp(p.startsWith("/") ? `^${globToRegExp(p)}$` : `(^|/)${globToRegExp(p)}$`)
  );
  return (path) =>
    paths.some((p) => path === p || path.startsWith(p === "/" ? "/" : p + "/")) ||
    res.some((r) => r.test(path));
}
