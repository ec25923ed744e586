/**
 * `deno task bench:anomaly [--hosts N] [--days D] [--seed S] [--rule JSON] [--json]`: the anomaly guard's false positive
 * rate over simulated days of ordinary churn, and its detection rate for mass encryption.
 *
 * Each simulated host draws its own size and habits: 500 to 2 million files, a median of 0.1 % to 3 % of them
 * changed a day, 20 KiB to 2 MiB of new data per changed file, 2 % to 70 % of its new data incompressible
 * (media, archives), a weekly full on Sundays (judged on changed files only), a weekend lull on half the
 * hosts. Each day's figures vary around the host's habit: a log-normal factor shared by files and bytes
 * (σ 0.4) and one each (σ 0.25), a busy day (×3: patches, month-end jobs) with probability 3 %, Poisson
 * noise on small counts, the share ±0.07. Every backup goes through `assessRun` against the rolling baseline
 * exactly as the control plane keeps it (anomalies.ts): a normal backup joins it; a flagged one is counted as
 * a false positive and then joins it too, as the operator's approval does.
 *
 * Detection: for each host, on day 60, an attack encrypts a share of its files (1 %, 5 %, 20 %, 100 %):
 * those files are modified, their bytes new and incompressible, on top of the day's ordinary churn.
 */
import { ANOMALY_RULE, type AnomalyRule, assessRun, type RunFigures } from "../domain/anomaly.ts";

const args = Deno.args;
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const HOSTS = flag("hosts", 1000);
const DAYS = flag("days", 90);
const SEED = flag("seed", 21);
const JSON_OUT = args.includes("--json");
/** `--rule '{"ratio": 10}'`: constants to try instead of the shipped ones (ANOMALY_RULE). */
const ruleAt = args.indexOf("--rule");
const RULE: AnomalyRule = { ...ANOMALY_RULE, ...(ruleAt >= 0 ? JSON.parse(args[ruleAt + 1]) : {}) };
const ATTACK_DAY = Math.min(60, DAYS - 1);
const ATTACK_SHARES = [0.01, 0.05, 0.2, 1];

/** mulberry32: a small seeded generator, so a run is reproducible. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(SEED);
const logUniform = (lo: number, hi: number) =>
  Math.exp(Math.log(lo) + rand() * (Math.log(hi) - Math.log(lo)));
const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
function poisson(mean: number): number {
  if (mean > 50) return Math.max(0, Math.round(mean + Math.sqrt(mean) * normal()));
  const l = Math.exp(-mean);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= rand();
  } while (p > l);
  return k - 1;
}

interface Host {
  files: number;
  changeRate: number;
  bytesPerChange: number;
  fileSize: number;
  share: number;
  weekendLull: boolean;
}

function newHost(): Host {
  return {
    files: Math.round(logUniform(500, 2_000_000)),
    changeRate: logUniform(0.001, 0.03),
    bytesPerChange: logUniform(20 * 1024, 2 * 1024 * 1024),
    fileSize: logUniform(50 * 1024, 5 * 1024 * 1024),
    share: 0.02 + rand() * 0.68,
    weekendLull: rand() < 0.5,
  };
}

/** One ordinary day of `h` (day 0 is a Sunday). */
function ordinaryDay(h: Host, day: number): RunFigures {
  const weekday = day % 7;
  const full = weekday === 0;
  let factor = Math.exp(0.4 * normal());
  if (h.weekendLull && (weekday === 0 || weekday === 6)) factor *= 0.3;
  if (rand() < 0.03) factor *= 3;
  const changed = poisson(h.files * h.changeRate * factor * Math.exp(0.25 * normal()));
  const added = Math.round(changed * 0.2);
  const deleted = Math.round(changed * 0.1);
  const bytesNew = Math.round(changed * h.bytesPerChange * Math.exp(0.25 * normal()));
  const share = Math.min(1, Math.max(0, h.share + 0.07 * normal()));
  return {
    at: new Date(Date.UTC(2026, 0, 4 + day)).toISOString(),
    kind: full ? "full" : "incremental",
    files: h.files,
    added,
    modified: changed - added - deleted,
    deleted,
    bytesNew,
    bytesNewIncompressible: Math.round(bytesNew * share),
    protectedBytes: Math.round(h.files * h.fileSize),
  };
}

/** The day's figures with a share `hit` of the files encrypted on top (an incremental). */
function attacked(f: RunFigures, h: Host, hit: number): RunFigures {
  const encrypted = Math.max(1, Math.round(h.files * hit));
  const bytes = Math.round(encrypted * h.fileSize);
  return {
    ...f,
    kind: "incremental",
    modified: f.modified + encrypted,
    bytesNew: f.bytesNew + bytes,
    bytesNewIncompressible: (f.bytesNewIncompressible ?? 0) + bytes,
  };
}

const t0 = performance.now();
let judged = 0;
let learning = 0;
let falsePositives = 0;
const fpBySignal: Record<string, number> = { changed_files: 0, bytes_new: 0, incompressible_share: 0 };
/** The closest an ordinary backup came to each threshold (value / threshold; < 1 is not flagged). */
const closest: Record<string, number> = { changed_files: 0, bytes_new: 0, incompressible_share: 0 };
const detected: Record<string, number> = Object.fromEntries(ATTACK_SHARES.map((s) => [String(s), 0]));
const attackedHosts: Record<string, number> = Object.fromEntries(ATTACK_SHARES.map((s) => [String(s), 0]));
const examples: string[] = [];

for (let i = 0; i < HOSTS; i++) {
  const h = newHost();
  const baseline: RunFigures[] = [];
  for (let day = 0; day < DAYS; day++) {
    const f = ordinaryDay(h, day);
    if (day === 0) continue; // the first backup has nothing to compare with
    if (day === ATTACK_DAY) {
      for (const hit of ATTACK_SHARES) {
        const v = assessRun(baseline, attacked(f, h, hit), RULE);
        if (v.state === "learning") continue;
        attackedHosts[String(hit)]++;
        if (v.flagged) detected[String(hit)]++;
      }
    }
    const v = assessRun(baseline, f, RULE);
    if (v.state === "learning") learning++;
    else judged++;
    for (const c of v.checks) {
      const ratio = c.threshold > 0 ? c.value / c.threshold : 0;
      if (c.signal !== "incompressible_share" || c.threshold <= 1) {
        closest[c.signal] = Math.max(closest[c.signal], ratio);
      }
      if (c.fired) fpBySignal[c.signal]++;
    }
    if (v.flagged) {
      falsePositives++;
      if (examples.length < 5) examples.push(`host ${i} day ${day}: ${v.reasons.join("; ")}`);
    }
    baseline.push(f);
    if (baseline.length > RULE.window) baseline.shift();
  }
}
const ms = performance.now() - t0;

const result = {
  hosts: HOSTS,
  days: DAYS,
  seed: SEED,
  backupsJudged: judged,
  backupsLearning: learning,
  falsePositives,
  falsePositiveRate: judged ? falsePositives / judged : 0,
  falsePositivesBySignal: fpBySignal,
  closestOrdinaryToThreshold: closest,
  detectionRate: Object.fromEntries(
    ATTACK_SHARES.map((
      s,
    ) => [`${s * 100} % of files`, detected[String(s)] / Math.max(1, attackedHosts[String(s)])]),
  ),
  examples,
  assessMicroseconds: Math.round(ms * 1000 / Math.max(1, judged + learning)),
};

if (JSON_OUT) {
  console.log(JSON.stringify(result));
} else {
  const pct = (x: number) => `${(x * 100).toFixed(x && x < 0.01 ? 3 : 1)} %`;
  console.log(`anomaly guard: ${HOSTS} hosts × ${DAYS} days of ordinary churn (seed ${SEED})`);
  console.log(`  backups judged        ${judged.toLocaleString("en-US")} (+ ${learning} while learning)`);
  console.log(`  false positives       ${falsePositives} (${pct(result.falsePositiveRate)})`);
  for (const [s, n] of Object.entries(fpBySignal)) console.log(`    ${s.padEnd(22)}${n}`);
  console.log("  closest ordinary backup to a threshold (value / threshold):");
  for (const [s, r] of Object.entries(closest)) console.log(`    ${s.padEnd(22)}${r.toFixed(2)}`);
  console.log(`  mass encryption on day ${ATTACK_DAY}, detected:`);
  for (const [k, r] of Object.entries(result.detectionRate)) console.log(`    ${k.padEnd(22)}${pct(r)}`);
  for (const e of examples) console.log(`  e.g. ${e}`);
  console.log(`  ${result.assessMicroseconds} µs per assessment`);
}
