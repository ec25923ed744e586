/** A test helper: the state of a local repository folder, to assert that an operation wrote nothing. */

/** Every object of a local repository with the SHA-256 of its bytes: "nothing written" is this unchanged. */
export async function repoState(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string, rel: string) => {
    for await (const e of Deno.readDir(dir)) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(`${dir}/${e.name}`, p);
      else {
        const d = await crypto.subtle.digest("SHA-256", await Deno.readFile(`${dir}/${e.name}`));
        out[p] = Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
      }
    }
  };
  await walk(root, "");
  return out;
}
