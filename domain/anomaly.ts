/**
 * The change-rate anomaly rule (ransomware early warning): a pure function from the recent backups of one
 * (policy, host) and a new backup to a verdict — flag it or not, with the reasons and the figures. Storage,
 * alerts, the prune freeze and the review flow are in anomalies.ts; this module reads no clock and no KV.
 *
 * ## The figures of a backup
 * - **changed files**: files added + modified + deleted since the previous snapshot (the agent diffs the two
 *   trees, so a full counts its changes too);
 * - **new bytes**: plaintext bytes of content not yet in the repository;
 * - **incompressible share**: of the new bytes, the share that did not compress (stored raw). Ordinary
 *   documents, logs and databases compress; encrypted data does not. Unknown when the repository
 *   compresses nothing (compression "none").
 *
 * ## The baseline
 * The figures of the last `window` (30) accepted backups of the (policy, host): backups that were not flagged,
 * or flagged and then approved as an expected change. For each figure the rule takes the **median** M and
 * the median absolute deviation (MAD) — robust statistics, so one odd day in the window moves neither —
 * with σ = 1.4826·MAD (the MAD scaled to a normal distribution's standard deviation).
 *
 * ## The rule
 * Nothing is flagged before `minHistory` (5) accepted backups: the baseline is still learning. Then a backup
 * is flagged when any of these holds:
 * 1. **changed files** > max(M + k·σ, ratio·M, fileShareFloor·median files, minChangedFiles)
 *    — with k = 20, ratio = 30, fileShareFloor = 5 % of the host's files, minChangedFiles = 10;
 * 2. **new bytes** > max(M + k·σ, ratio·M, byteShareFloor·median protected bytes, minBytesNew)
 *    — byteShareFloor = 5 %, minBytesNew = 16 MiB; judged for incrementals only (a full with deduplication
 *    off stores everything anew, so its new bytes say nothing about change), against incrementals;
 * 3. **incompressible share** ≥ max(M_share + shareMargin, minShare) — shareMargin = 0.4, minShare = 0.6 — and
 *    the incompressible new bytes > max(entropyRatio·their median, minIncompressibleBytes) — entropyRatio = 3,
 *    minIncompressibleBytes = 1 MiB; incrementals only, with at least `minHistory` shares in the baseline.
 *    A host whose new data is mostly incompressible anyway (media) can never trip this one: its threshold is
 *    above 100 %; the volume rules still apply.
 *
 * The relative terms (M + k·σ and ratio·M) scale with the baseline: a host that changes ten times as much
 * has thresholds ten times as high. They are wide on purpose — ordinary churn is heavy-tailed (patch days,
 * month-end jobs): volume alone flags only an order of magnitude beyond the host's habit (30× its median),
 * while the entropy signal, which ordinary churn barely moves, catches smaller encryptions. The floors keep a quiet host (a median of 0 or 1 change a day) from being
 * flagged for a handful of files. The constants are chosen against `deno task bench:anomaly` (90 simulated
 * days of ordinary churn, many hosts: no false positive; docs/performance.md) while a mass encryption of a
 * folder — every file in it modified, its new data incompressible — exceeds them by far.
 */

/** What one backup measured, as the rule reads it. */
export interface RunFigures {
  /** When the backup ended (ISO 8601); only for display. */
  at: string;
  /** Fulls are judged on changed files only (see the rule). */
  kind: "full" | "incremental";
  /** Files in the snapshot. */
  files: number;
  added: number;
  modified: number;
  deleted: number;
  /** Plaintext bytes not yet in the repository. */
  bytesNew: number;
  /** Of `bytesNew`, the bytes that did not compress; null when not measured. */
  bytesNewIncompressible: number | null;
  /** Bytes the snapshot protects (size of its files). */
  protectedBytes: number;
}

/** The rule's constants (see the module's documentation). */
export interface AnomalyRule {
  window: number;
  minHistory: number;
  k: number;
  ratio: number;
  fileShareFloor: number;
  minChangedFiles: number;
  byteShareFloor: number;
  minBytesNew: number;
  shareMargin: number;
  minShare: number;
  entropyRatio: number;
  minIncompressibleBytes: number;
}

export const ANOMALY_RULE: Readonly<AnomalyRule> = Object.freeze({
  window: 30,
  minHistory: 5,
  k: 20,
  ratio: 30,
  fileShareFloor: 0.05,
  minChangedFiles: 10,
  byteShareFloor: 0.05,
  minBytesNew: 16 * 1024 * 1024,
  shareMargin: 0.4,
  minShare: 0.6,
  entropyRatio: 3,
  minIncompressibleBytes: 1024 * 1024,
});

/** The consistency factor that turns a MAD into a normal distribution's standard deviation. */
export const MAD_TO_SIGMA = 1.4826;

export type AnomalySignal = "changed_files" | "bytes_new" | "incompressible_share";

/** One figure compared with its threshold. */
export interface SignalCheck {
  signal: AnomalySignal;
  /** This backup's value (files, bytes, or a share 0–1). */
  value: number;
  /** The baseline's median of the figure. */
  median: number;
  /** Above this (for the share: at or above) the signal fires. */
  threshold: number;
  fired: boolean;
  /** One sentence naming the figures. */
  text: string;
}

export interface AnomalyVerdict {
  flagged: boolean;
  /** "learning": too few accepted backups to judge (never flagged). */
  state: "learning" | "normal" | "flagged";
  /** Backups in the baseline (at most `window`). */
  baselineRuns: number;
  /** Every signal that could be judged, fired or not. */
  checks: SignalCheck[];
  /** The fired ones' sentences. */
  reasons: string[];
  /** This backup's figures, derived. */
  figures: {
    changedFiles: number;
    added: number;
    modified: number;
    deleted: number;
    files: number;
    bytesNew: number;
    incompressibleShare: number | null;
  };
}

/** Files added, modified and deleted. */
export function changedFiles(f: Pick<RunFigures, "added" | "modified" | "deleted">): number {
  return f.added + f.modified + f.deleted;
}

/** The share of new bytes that did not compress (0–1); null when unknown or nothing was new. */
export function incompressibleShare(
  f: Pick<RunFigures, "bytesNew" | "bytesNewIncompressible">,
): number | null {
  if (f.bytesNewIncompressible === null || !(f.bytesNew > 0)) return null;
  return Math.min(1, Math.max(0, f.bytesNewIncompressible / f.bytesNew));
}

/** The median of `values` (0 for none). */
export function median(values: readonly number[]): number {
  if (!values.length) return 0;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** The median absolute deviation from the median. */
export function mad(values: readonly number[]): number {
  const m = median(values);
  return median(values.map((v) => Math.abs(v - m)));
}

/**
 * The volume threshold of a baseline: max(M + k·σ, ratio·M, floor), σ = 1.4826·MAD. Without the floor it is
 * homogeneous: scaling every value by c scales it by c.
 */
export function volumeThreshold(
  values: readonly number[],
  floor: number,
  rule: Pick<AnomalyRule, "k" | "ratio"> = ANOMALY_RULE,
): number {
  const m = median(values);
  return Math.max(m + rule.k * MAD_TO_SIGMA * mad(values), rule.ratio * m, floor);
}

/** The threshold of the incompressible share: max(M + margin, minShare) (may exceed 1: never fires). */
export function shareThreshold(
  shares: readonly number[],
  rule: Pick<AnomalyRule, "shareMargin" | "minShare"> = ANOMALY_RULE,
): number {
  return Math.max(median(shares) + rule.shareMargin, rule.minShare);
}

const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");
const fmtPct = (n: number) => `${Math.round(n * 100)} %`;
function fmtBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) v /= 1024, i++;
  return `${i ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/**
 * The verdict on `run` against `history` (the accepted backups of the same policy and host, oldest first;
 * only the last `rule.window` count). Pure: same input, same verdict.
 */
export function assessRun(
  history: readonly RunFigures[],
  run: RunFigures,
  rule: Readonly<AnomalyRule> = ANOMALY_RULE,
): AnomalyVerdict {
  const base = history.slice(-rule.window);
  const share = incompressibleShare(run);
  const figures = {
    changedFiles: changedFiles(run),
    added: run.added,
    modified: run.modified,
    deleted: run.deleted,
    files: run.files,
    bytesNew: run.bytesNew,
    incompressibleShare: share,
  };
  const verdict = (checks: SignalCheck[], learning = false): AnomalyVerdict => {
    const fired = checks.filter((c) => c.fired);
    return {
      flagged: fired.length > 0,
      state: learning ? "learning" : fired.length ? "flagged" : "normal",
      baselineRuns: base.length,
      checks,
      reasons: fired.map((c) => c.text),
      figures,
    };
  };
  if (base.length < rule.minHistory) return verdict([], true);
  const n = base.length;
  const checks: SignalCheck[] = [];

  // 1. Changed files, against every accepted backup.
  const changed = base.map(changedFiles);
  const fileFloor = Math.max(rule.fileShareFloor * median(base.map((f) => f.files)), rule.minChangedFiles);
  const tFiles = volumeThreshold(changed, fileFloor, rule);
  const cFiles = figures.changedFiles > tFiles;
  checks.push({
    signal: "changed_files",
    value: figures.changedFiles,
    median: median(changed),
    threshold: tFiles,
    fired: cFiles,
    text: `${fmtInt(figures.changedFiles)} files changed (${fmtInt(run.added)} added, ${
      fmtInt(run.modified)
    } modified, ${fmtInt(run.deleted)} deleted) against a median of ${
      fmtInt(median(changed))
    } over the last ${n} backups (threshold ${fmtInt(tFiles)})`,
  });

  // 2 and 3 judge incrementals against incrementals.
  const incrementals = base.filter((f) => f.kind === "incremental");
  if (run.kind === "incremental" && incrementals.length >= rule.minHistory) {
    const bytes = incrementals.map((f) => f.bytesNew);
    const byteFloor = Math.max(
      rule.byteShareFloor * median(incrementals.map((f) => f.protectedBytes)),
      rule.minBytesNew,
    );
    const tBytes = volumeThreshold(bytes, byteFloor, rule);
    checks.push({
      signal: "bytes_new",
      value: run.bytesNew,
      median: median(bytes),
      threshold: tBytes,
      fired: run.bytesNew > tBytes,
      text: `${fmtBytes(run.bytesNew)} of new data against a median of ${
        fmtBytes(median(bytes))
      } over the last ${incrementals.length} incrementals (threshold ${fmtBytes(tBytes)})`,
    });
    const measured = incrementals.filter((f) => incompressibleShare(f) !== null);
    if (share !== null && measured.length >= rule.minHistory) {
      const shares = measured.map((f) => incompressibleShare(f)!);
      const tShare = shareThreshold(shares, rule);
      const raw = measured.map((f) => f.bytesNewIncompressible!);
      const tRaw = Math.max(rule.entropyRatio * median(raw), rule.minIncompressibleBytes);
      const rawNow = run.bytesNewIncompressible!;
      checks.push({
        signal: "incompressible_share",
        value: share,
        median: median(shares),
        threshold: tShare,
        fired: share >= tShare && rawNow > tRaw,
        text: `${fmtPct(share)} of the new data (${fmtBytes(rawNow)}) did not compress, against a median of ${
          fmtPct(median(shares))
        } (threshold ${
          tShare > 1 ? "none: this host's new data rarely compresses" : fmtPct(tShare)
        }, and more than ${fmtBytes(tRaw)} of it)`,
      });
    }
  }
  return verdict(checks);
}
