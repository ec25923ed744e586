/**
 * The file-system view the backup reads through: Deno's by default, replaceable in tests (to count
 * reads or inject failures) and, later, by a snapshot-aware reader (LVM/btrfs hooks).
 */

/** An open file being read. */
export interface ReadableFile {
  read(p: Uint8Array): Promise<number | null>;
  stat(): Promise<Deno.FileInfo>;
  close(): void;
}

/** What the backup needs from a file system. */
export interface FileSystem {
  lstat(path: string): Promise<Deno.FileInfo>;
  /** Entry names of a folder. */
  readDir(path: string): Promise<string[]>;
  readLink(path: string): Promise<string>;
  open(path: string): Promise<ReadableFile>;
}

/** The real file system through Deno's APIs. */
export const denoFileSystem: FileSystem = {
  lstat: (path) => Deno.lstat(path),
  readDir: async (path) => (await Array.fromAsync(Deno.readDir(path))).map((e) => e.name),
  readLink: (path) => Deno.readLink(path),
  open: (path) => Deno.open(path, { read: true }),
};

/** Joins a folder path and an entry name ("/" + "etc" = "/etc"). */
export function joinPath(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

/** `path` made absolute (against the working folder) and normalized, without resolving symlinks. */
export function absolutePath(path: string, cwd = Deno.cwd()): string {
  const parts: string[] = [];
  for (const p of (path.startsWith("/") ? path : `${cwd}/${path}`).split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") parts.pop();
    else parts.push(p);
  }
  return "/" + parts.join("/");
}
