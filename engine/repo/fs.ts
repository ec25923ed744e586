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

/**
 * Flushes folder `dir` itself to disk, so that a file just created or renamed in it survives a crash
 * (fsync of the folder, as POSIX requires for a rename to be durable). One `open` and one `fsync`: cheap.
 * Where folders cannot be opened or synced (Windows, some network file systems answer EINVAL), it does
 * nothing: there the rename is as durable as the platform makes it.
 */
export async function syncDir(dir: string): Promise<void> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(dir, { read: true });
  } catch (e) {
    if (Deno.build.os === "windows") return;
    throw e;
  }
  try {
    await f.sync();
  } catch (e) {
    if (!(e instanceof Deno.errors.NotSupported) && !/Invalid argument|EINVAL/.test((e as Error).message)) {
      throw e;
    }
  } finally {
    f.close();
  }
}

/** The folder holding `path` ("/a/b" → "/a"; "/a" → "/"). */
export function parentDir(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}
