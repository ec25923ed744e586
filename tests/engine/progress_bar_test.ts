import assert from "node:assert/strict";
import {
  displayWidth,
  fitPath,
  formatBytes,
  ProgressBar,
  REDRAW_INTERVAL_MS,
  renderProgress,
} from "../../engine/progress_bar.ts";

const MIB = 1024 * 1024;

Deno.test("formatBytes() uses binary units with one decimal", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(12 * 1024 * MIB), "12.0 GiB");
});

Deno.test("fitPath() keeps the end of a long path and neutralises control characters", () => {
  assert.equal(fitPath("/home/a/report.pdf", 40), "/home/a/report.pdf");
  assert.equal(fitPath("/home/a/report.pdf", 10), "…eport.pdf");
  assert.equal(fitPath("/tmp/evil\x1b[2Jname\n", 40), "/tmp/evil?[2Jname?");
  // Wide characters take two columns.
  assert.equal(fitPath("/日本語/ファイル", 9), "…ファイル");
  assert.equal(fitPath("/日本語/ファイル", 10), "…/ファイル");
  assert.equal(displayWidth("a日😀"), 5);
  assert.equal(fitPath("/x", 0), "");
});

Deno.test("renderProgress() of a file backup shows files, bytes, rate and the path", () => {
  const line = renderProgress({
    verb: "backup",
    files: 1204,
    bytes: 300 * MIB,
    currentPath: "/home/a/report.pdf",
    elapsedMs: 2000,
  }, 80);
  assert.equal(line, "backup  1,204 files  300.0 MiB  150.0 MiB/s  /home/a/report.pdf");
});

Deno.test("renderProgress() with a known total draws a bar and a percentage", () => {
  const s = {
    verb: "restore",
    files: 0,
    bytes: 512 * MIB,
    totalBytes: 2048 * MIB,
    currentPath: "/dev/sdb",
    elapsedMs: 4000,
  };
  assert.equal(
    renderProgress(s, 120),
    "restore   25%  [#######---------------------]  512.0 MiB / 2.0 GiB  128.0 MiB/s  /dev/sdb",
  );
  // Narrower: the bar shrinks, then goes; the path is cut at its start; nothing exceeds the width.
  assert.equal(renderProgress(s, 80), "restore   25%  [#------]  512.0 MiB / 2.0 GiB  128.0 MiB/s  /dev/sdb");
  assert.equal(renderProgress(s, 75), "restore   25%  512.0 MiB / 2.0 GiB  128.0 MiB/s  /dev/sdb");
  assert.equal(renderProgress(s, 55), "restore   25%  512.0 MiB / 2.0 GiB  128.0 MiB/s  …v/sdb");
  assert.equal(renderProgress(s, 30), "restore   25%  512.0 MiB / 2.0");
  for (let w = 0; w <= 120; w++) {
    assert.ok(displayWidth(renderProgress(s, w)) <= w, `width ${w}`);
    const wide = { ...s, totalBytes: undefined, currentPath: "/日本/".repeat(30) };
    assert.ok(displayWidth(renderProgress(wide, w)) <= w, `width ${w}`);
  }
  assert.match(renderProgress({ ...s, bytes: s.totalBytes * 2 }, 100), /100% {2}\[#{28}\]/);
  assert.match(renderProgress({ ...s, elapsedMs: 0 }, 100), / - /);
});

Deno.test("ProgressBar redraws at most every 100 ms and clears its line", () => {
  const out: string[] = [];
  let t = 0;
  const bar = new ProgressBar("backup", { write: (s) => out.push(s), columns: () => 60, now: () => t });
  bar.clear();
  assert.equal(out.length, 0, "nothing to clear before the first draw");
  for (let i = 0; i < 100; i++) {
    bar.update({ files: i, bytes: i * 1000, currentPath: `/f${i}` });
    t += 7; // 100 updates over 700 ms
  }
  assert.equal(out.length, 7);
  assert.ok(out.every((s) => s.startsWith("\r") && s.endsWith("\x1b[K")));
  assert.ok(out.every((s) => displayWidth(s.slice(1, -3)) <= 59));
  assert.match(out[0], /^\rbackup {2}0 files/);
  bar.clear();
  assert.equal(out.at(-1), "\r\x1b[K");
  assert.equal(REDRAW_INTERVAL_MS, 100);
});
