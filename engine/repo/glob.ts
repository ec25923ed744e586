/**
 * Glob patterns, one implementation for the engine's excludes and finds and for the simulator's search:
 * "*" and "?" match within one path component (not "/"), "**" matches across, "[abc]" / "[!abc]" is a
 * character class; everything else is literal.
 */

/** The regular expression source (unanchored) of `glob`. */
export function globToRegExpSource(glob: string): string {
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
    } else re += c.replace(/[.+^${}()|\\\]\/]/g, "\\$&");
  }
  return re;
}

/** Options of `globRegExp`. */
export interface GlobOptions {
  /** "whole": the pattern must match the whole subject; "tail": its last "/"-separated components. */
  match?: "whole" | "tail";
  /** Match letters regardless of case (default false: case-sensitive, as file names are). */
  caseInsensitive?: boolean;
}

/** A regular expression for `glob`. Throws `SyntaxError` on a malformed character class. */
export function globRegExp(glob: string, options: GlobOptions = {}): RegExp {
  const source = globToRegExpSource(glob);
  const anchored = options.match === "tail" ? `(^|/)${source}$` : `^${source}$`;
  return new RegExp(anchored, options.caseInsensitive ? "i" : "");
}
