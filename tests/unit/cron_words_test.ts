import assert from "node:assert/strict";
import fc from "fast-check";
import { compileCron, nextRuns } from "../../domain/cron_rules.ts";
import { describeCron, readCron } from "../../domain/cron_words.ts";

Deno.test("readCron() reads steps in every time field", () => {
  assert.equal(readCron("*/2 * * * *"), "Every 2 minutes");
  assert.equal(readCron("*/1 * * * *"), "Every minute");
  assert.equal(readCron("0-30/5 * * * *"), "Every 5 minutes from minute 0 to 30");
  assert.equal(readCron("0 */6 * * *"), "Every 6 hours at minute 0");
  assert.equal(readCron("0 8-18/2 * * *"), "Every 2 hours from 08:00 to 18:00");
  assert.equal(readCron("*/5 */2 * * *"), "Every 5 minutes during every 2nd hour");
  assert.equal(readCron("0 2 */2 * *"), "Every 2 days from day 1 of every month at 02:00");
  assert.equal(readCron("0 2 * */3 *"), "Every day in January, April, July and October at 02:00");
  assert.equal(readCron("0 2 * * 0/2"), "On Sunday, Tuesday, Thursday and Saturday at 02:00");
});

Deno.test("readCron() reads ranges", () => {
  assert.equal(readCron("30 1 * * 1-6"), "Monday to Saturday at 01:30");
  assert.equal(readCron("0 9-17 * * 1-5"), "Every hour from 09:00 to 17:00, Monday to Friday");
  assert.equal(readCron("*/15 9-17 * * 1-5"), "Every 15 minutes from 09:00 to 17:59, Monday to Friday");
  assert.equal(readCron("10-20 * * * *"), "Every minute from minute 10 to 20");
  assert.equal(readCron("0 1-3 * * *"), "Every day at 01:00, 02:00 and 03:00");
  assert.equal(readCron("0 2 1-7 * *"), "On days 1 to 7 of every month at 02:00");
  assert.equal(readCron("0 2 1 3-10 *"), "On day 1 of each month from March to October at 02:00");
  assert.equal(readCron("0 2 ? * MON-FRI"), "Monday to Friday at 02:00");
  assert.equal(readCron("0 2 * JAN-MAR MON"), "Every Monday from January to March at 02:00");
});

Deno.test("readCron() reads lists", () => {
  assert.equal(readCron("0 2,14 * * *"), "Every day at 02:00 and 14:00");
  assert.equal(readCron("0,30 * * * *"), "Every hour at minutes 0 and 30");
  assert.equal(readCron("15,45 8,20 * * *"), "Every day at 08:15, 08:45, 20:15 and 20:45");
  assert.equal(readCron("0 0 * * 1,3,5"), "On Monday, Wednesday and Friday at 00:00");
  assert.equal(readCron("0 2 * * 1,2,3,5"), "On Monday to Wednesday and Friday at 02:00");
  assert.equal(readCron("0 2 1,15 * *"), "On days 1 and 15 of every month at 02:00");
  assert.equal(readCron("0 2 1 1,7 *"), "On day 1 of January and July at 02:00");
  assert.equal(readCron("0 0-6,22,23 * * *"), "At minute 0 past hours 00, 01, 02, 03, 04, 05, 06, 22 and 23");
});

Deno.test("readCron() reads single values, names and croner's L, W, # and +", () => {
  assert.equal(readCron("0 2 * * 0"), "Every Sunday at 02:00");
  assert.equal(readCron("0 2 * * 7"), "Every Sunday at 02:00");
  assert.equal(readCron("0 2 * * *"), "Every day at 02:00");
  assert.equal(readCron("* * * * *"), "Every minute");
  assert.equal(readCron("5 * * * *"), "Every hour at minute 5");
  assert.equal(readCron("0 2 15 * *"), "On day 15 of every month at 02:00");
  assert.equal(readCron("0 2 L * *"), "On the last day of every month at 02:00");
  assert.equal(readCron("0 2 15W * *"), "On the weekday nearest day 15 of every month at 02:00");
  assert.equal(readCron("0 2 * * 5#2"), "On the second Friday of the month at 02:00");
  assert.equal(readCron("0 2 * * FRI#L"), "On the last Friday of the month at 02:00");
  assert.equal(readCron("0 2 1 * 1"), "On day 1 of the month or on Monday at 02:00");
  assert.equal(readCron("0 2 1-7 * +1"), "On days 1 to 7 of the month when it is a Monday at 02:00");
});

Deno.test("readCron() gives null for what it cannot read; describeCron() then shows the expression once", () => {
  assert.equal(readCron("0 2 * *"), null);
  assert.equal(readCron("0 2 * * * *"), null);
  assert.equal(readCron("61 2 * * *"), null);
  assert.equal(readCron("0 2 * * MON#9"), null);
  assert.equal(describeCron("0 2 * * MON#9"), "0 2 * * MON#9");
});

/** A random list item of a field: a value, a range, a step over the whole field, or a stepped range. */
function item(min: number, max: number) {
  return fc.oneof(
    fc.integer({ min, max }).map(String),
    fc.tuple(fc.integer({ min, max }), fc.integer({ min, max })).map(([a, b]) =>
      `${Math.min(a, b)}-${Math.max(a, b)}`
    ),
    fc.integer({ min: 1, max: Math.min(12, max) }).map((n) => `*/${n}`),
    fc.tuple(fc.integer({ min, max }), fc.integer({ min, max }), fc.integer({ min: 1, max: 6 })).map((
      [a, b, n],
    ) => `${Math.min(a, b)}-${Math.max(a, b)}/${n}`),
  );
}

function field(min: number, max: number) {
  return fc.oneof(
    { weight: 2, arbitrary: fc.constant("*") },
    {
      weight: 3,
      arbitrary: fc.array(item(min, max), { minLength: 1, maxLength: 3 }).map((a) => a.join(",")),
    },
  );
}

Deno.test("readCron() reads every 5-field expression made of values, ranges, steps and lists", () => {
  fc.assert(
    fc.property(
      field(0, 59),
      field(0, 23),
      field(1, 28),
      field(1, 12),
      field(0, 6),
      (m, h, dom, mon, dow) => {
        const expression = `${m} ${h} ${dom} ${mon} ${dow}`;
        fc.pre(compileCron(expression).ok);
        const words = readCron(expression);
        assert.ok(words, `no reading for ${expression}`);
        // Plain words: no cron syntax, and never the expression itself.
        assert.doesNotMatch(words, /[*/#?]/, `${expression} → ${words}`);
        assert.ok(!words.includes(expression));
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("readCron()'s fixed times are the times croner fires at on a day", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 59 }), { minLength: 1, maxLength: 2 }),
      fc.array(fc.integer({ min: 0, max: 23 }), { minLength: 1, maxLength: 3 }),
      (minutes, hours) => {
        const expression = `${minutes.join(",")} ${hours.join(",")} * * *`;
        const words = readCron(expression)!;
        const listed = [...words.matchAll(/\d\d:\d\d/g)].map((m) => m[0]);
        const fired = nextRuns(expression, new Date("2026-03-01T23:59:59Z"), 7)
          .filter((d) => d.toISOString().startsWith("2026-03-02"))
          .map((d) => d.toISOString().slice(11, 16));
        if (listed.length === 0) {
          assert.equal(fired.length, 7, `${expression} → ${words}: a repetition only for more than 6 times`);
        } else assert.deepEqual(listed.sort(), fired.sort(), `${expression} → ${words}`);
      },
    ),
    { numRuns: 300 },
  );
});
