import assert from "node:assert/strict";
import { h } from "preact";
import { renderToString } from "preact-render-to-string";
import {
  absoluteTime,
  dateTimeText,
  describeTime,
  NowContext,
  relativeTime,
  Time,
  timeText,
} from "../../components/time.tsx";

const NOW = new Date("2026-11-22T05:11:30Z");
const ago = (ms: number) => new Date(NOW.getTime() - ms);

Deno.test("relativeTime() rounds down to whole minutes, hours, days and years, past and future", () => {
  assert.equal(relativeTime(ago(0), NOW), "just now");
  assert.equal(relativeTime(ago(59_000), NOW), "just now");
  assert.equal(relativeTime(ago(6 * 60_000 + 25_000), NOW), "6 min ago");
  assert.equal(relativeTime(ago(59 * 60_000 + 59_000), NOW), "59 min ago");
  assert.equal(relativeTime(ago(3_600_000), NOW), "1 h ago");
  assert.equal(relativeTime(ago(23 * 3_600_000 + 3_599_000), NOW), "23 h ago");
  assert.equal(relativeTime(ago(2 * 86_400_000), NOW), "2 d ago");
  assert.equal(relativeTime(ago(400 * 86_400_000), NOW), "1 y ago");
  assert.equal(relativeTime(ago(-30_000), NOW), "in less than a minute");
  assert.equal(relativeTime(ago(-5 * 60_000), NOW), "in 5 min");
  assert.equal(relativeTime(ago(-3 * 86_400_000), NOW), "in 3 d");
});

Deno.test("absoluteTime() omits the date on the same UTC day only", () => {
  assert.equal(absoluteTime(new Date("2026-11-22T05:05:59Z"), NOW), "05:05 UTC");
  assert.equal(absoluteTime(new Date("2026-11-22T00:00:00Z"), NOW), "00:00 UTC");
  assert.equal(absoluteTime(new Date("2026-11-21T23:59:00Z"), NOW), "2026-11-21 23:59 UTC");
  assert.equal(absoluteTime(new Date("2025-11-22T05:05:00Z"), NOW), "2025-11-22 05:05 UTC");
});

Deno.test("describeTime() reads like “6 min ago · 05:05 UTC”; never raw ISO", () => {
  assert.deepEqual(describeTime("2026-11-22T05:05:10.123Z", NOW), {
    text: "6 min ago · 05:05 UTC",
    full: "2026-11-22 05:05:10 UTC",
  });
  // A time written with an offset is read as the instant it names.
  assert.equal(describeTime("2026-11-22T07:05:10+02:00", NOW)?.text, "6 min ago · 05:05 UTC");
  assert.equal(describeTime("2026-11-19T02:00:00Z", NOW)?.text, "3 d ago · 2026-11-19 02:00 UTC");
  assert.equal(describeTime(null, NOW), null);
  assert.equal(describeTime("", NOW), null);
  assert.equal(describeTime("not a time", NOW), null);
  assert.equal(timeText(undefined, NOW), "—");
  assert.equal(timeText(undefined, NOW, "never"), "never");
  assert.equal(dateTimeText("2026-11-19T02:00:09.5Z"), "2026-11-19 02:00 UTC");
  assert.equal(dateTimeText(null), "—");
  for (const iso of ["2026-11-22T05:05:10.123Z", "2026-01-02T03:04:05Z"]) {
    assert.doesNotMatch(describeTime(iso, NOW)!.text, /T\d\d:|Z\b|\.\d{3}/, "no ISO in the words");
  }
});

Deno.test("<Time> renders a <time> with the ISO in datetime and the full time on hover, at the context's now", () => {
  const html = renderToString(
    h(NowContext.Provider, { value: NOW }, h(Time, { iso: "2026-11-22T05:05:10Z" })),
  );
  assert.equal(
    html,
    '<time datetime="2026-11-22T05:05:10.000Z" title="2026-11-22 05:05:10 UTC">6 min ago · 05:05 UTC</time>',
  );
  assert.equal(renderToString(h(Time, { iso: null, now: NOW })), "—");
  assert.equal(renderToString(h(Time, { iso: null, now: NOW, empty: "never" })), "never");
  // An explicit now wins over the context's.
  const explicit = renderToString(
    h(NowContext.Provider, { value: NOW }, h(Time, { iso: "2026-11-22T05:05:10Z", now: ago(-3_600_000) })),
  );
  assert.match(explicit, />1 h ago · 05:05 UTC</);
});
