/** Runs `deno task repo …` (engine/cli.ts) as a subprocess for the command-line tests. */

const CLI = new URL("../../engine/cli.ts", import.meta.url).pathname;

/** The outcome of one command. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The argv of `deno run … engine/cli.ts repo <args>`, with the permissions `deno task repo` gives. */
export function repoArgv(args: string[]): string[] {
  return [Deno.execPath(), "run", "--allow-all", CLI, "repo", ...args];
}

/**
 * Runs the command line with `args`, stdout and stderr piped (so not a terminal). `wrapper` is a command
 * that runs it (e.g. `setpriv …`), when given.
 */
export async function repoCli(args: string[], wrapper: string[] = []): Promise<Run> {
  const [cmd, ...rest] = [...wrapper, ...repoArgv(args)];
  const out = await new Deno.Command(cmd, { args: rest, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Every file below `root` (relative path → size and SHA-256), to show that a command changed nothing. */
export async function snapshotOfFiles(root: string, rel = ""): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const e of Deno.readDir(`${root}${rel}`)) {
    const p = `${rel}/${e.name}`;
    if (e.isDirectory) {
      out[p] = "dir";
      Object.assign(out, await snapshotOfFiles(root, p));
    } else if (e.isSymlink) {
      out[p] = `-> ${await Deno.readLink(`${root}${p}`)}`;
    } else {
      const data = await Deno.readFile(`${root}${p}`);
      const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
      out[p] = `${data.length}:${Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("")}`;
    }
  }
  return out;
}
