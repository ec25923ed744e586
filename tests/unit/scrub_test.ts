/**
 * Secrets are scrubbed from vendor text in every encoding the connectors send them in (and that a
 * vendor or proxy may echo them in): raw, URL-encoded (`%20` and `+`, either hex case), JSON-escaped,
 * HTML character references, base64 of the secret and of `user:secret` (Basic), and base64 blobs that
 * carry the secret at any offset. Property-tested over random passwords with `+ / & ! %`, spaces,
 * quotes and unicode.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { HttpTransport } from "../../domain/connectors/types.ts";
import { REDACTED, SecretScrubber, WITHHELD } from "../../domain/scrub.ts";

const utf8 = new TextEncoder();

function b64(text: string): string {
  let binary = "";
  for (const b of utf8.encode(text)) binary += String.fromCharCode(b);
  return btoa(binary);
}
const urlSafe = (s: string) => s.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
const lowerHex = (s: string) => s.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase());

/** The secret as a vendor may echo it, computed here independently of the scrubber. */
function formsOf(secret: string, username: string): string[] {
  const form = new URLSearchParams({ password: secret }).toString().slice("password=".length);
  const json = JSON.stringify(secret).slice(1, -1);
  const asciiJson = json.replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  const forms = [
    secret,
    form,
    lowerHex(form),
    form.replaceAll("+", "%20"),
    json,
    asciiJson,
    asciiJson.replace(/\\u([0-9a-f]{4})/g, (_, hex: string) => `\\u${hex.toUpperCase()}`),
    b64(secret),
    b64(secret).replace(/=+$/, ""),
    urlSafe(b64(secret)),
    b64(`${username}:${secret}`),
    urlSafe(b64(`${username}:${secret}`)),
  ];
  if (secret.isWellFormed()) {
    const uri = encodeURIComponent(secret);
    forms.push(uri, lowerHex(uri), uri.replaceAll("%20", "+"));
  }
  return [...new Set(forms)];
}

/** True when a run of base64 in `text`, decoded at any alignment, holds the secret's bytes. */
function base64Reveals(text: string, secret: string): boolean {
  const needle = [...utf8.encode(secret)].map((b) => String.fromCharCode(b)).join("");
  if (needle.length < 4) return false;
  for (const run of text.replaceAll("-", "+").replaceAll("_", "/").match(/[A-Za-z0-9+/]{4,}/g) ?? []) {
    for (let offset = 0; offset < 4; offset++) {
      const body = run.slice(offset);
      try {
        if (atob(body.slice(0, body.length - (body.length % 4))).includes(needle)) return true;
      } catch {
        // not base64 at this alignment
      }
    }
  }
  return false;
}

const special = fc.constantFrom(
  "+",
  "/",
  "&",
  " ",
  "!",
  "%",
  "=",
  '"',
  "\\",
  "'",
  "<",
  ">",
  "#",
  "?",
  ":",
  "~",
  "*",
  "\t",
  "é",
  "ß",
  "€",
  "😀",
  "\ud800",
);
const passwordChar = fc.oneof(
  special,
  fc.string({ unit: "grapheme-ascii", minLength: 1, maxLength: 1 }),
  fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
);
const password = fc.string({ unit: passwordChar, minLength: 1, maxLength: 24 });
const username = fc.string({ unit: "grapheme-ascii", minLength: 1, maxLength: 12 }).filter((u) =>
  !u.includes(":")
);
/** Text around an echo, as vendors write it. */
const context = fc.constantFrom(
  ["Bad request body: grant_type=password&username=svc&password=", "&scope=api"],
  ['{"error":"invalid_grant","body":{"password":"', '"}}'],
  ["Authorization: Basic ", "\r\nHost: vbr01"],
  ["<p>Invalid credentials for ", "</p>"],
  ["", ""],
);

function assertClean(out: string, secret: string, user: string, where: string) {
  for (const form of formsOf(secret, user)) {
    assert.ok(
      !out.includes(form),
      `${where}: ${JSON.stringify(form)} of ${JSON.stringify(secret)} in ${out}`,
    );
  }
  assert.ok(!base64Reveals(out, secret), `${where}: a base64 run still decodes to the secret: ${out}`);
}

Deno.test("property: no encoding of a random password survives the scrubber, alone or all at once", () => {
  fc.assert(
    fc.property(password, username, context, (secret, user, [before, after]) => {
      const scrubber = new SecretScrubber();
      scrubber.add(secret, { username: user });
      const forms = formsOf(secret, user);
      for (const form of forms) {
        assertClean(scrubber.scrub(`${before}${form}${after}`), secret, user, "one form");
      }
      assertClean(scrubber.scrub(forms.join(" | ")), secret, user, "every form");
      // A base64 blob (a whole request body, encoded) carries the secret at some offset.
      for (const prefix of ["", "p=", '{"pw":"']) {
        const blob = b64(`${prefix}${secret}","user":"${user}"}`);
        assertClean(scrubber.scrub(`echo ${blob} end`), secret, user, `base64 blob after ${prefix}`);
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("property: HttpTransport.clean() (what a connector puts in its errors) keeps no form of the password", () => {
  fc.assert(
    fc.property(password, username, context, (secret, user, [before, after]) => {
      const http = new HttpTransport("Veeam", "https://vbr.example", {
        endpoint: "https://vbr.example",
        username: user,
        password: secret,
      });
      for (const form of formsOf(secret, user)) {
        const out = http.clean(`${before}${form}${after}`);
        assertClean(out, secret, user, "clean");
        // The echo itself is gone, not just shortened: what the vendor said around it stays readable.
        if ([...secret].length >= 4 && !`${before}${after}${REDACTED}${WITHHELD}`.includes(secret)) {
          assert.ok(out.includes(REDACTED) || out === WITHHELD || out === "", out);
        }
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("the forms the connectors send are scrubbed: form body, JSON body, Basic header, access token", () => {
  const password = "p+a/s&s w!rd";
  const http = new HttpTransport("Veeam", "https://vbr.example", {
    endpoint: "https://vbr.example",
    username: "svc",
    password,
  });
  const form = new URLSearchParams({ grant_type: "password", username: "svc", password }).toString();
  assert.equal(
    http.clean(`cannot parse ${form}`),
    `cannot parse grant_type=password&username=svc&password=${REDACTED}`,
  );
  assert.equal(
    http.clean(`bad json ${JSON.stringify({ username: "svc", password: 'é"' + password })}`),
    `bad json {"username":"svc","password":"é\\"${REDACTED}"}`,
  );
  assert.equal(
    http.clean(`Authorization: Basic ${b64(`svc:${password}`)}`),
    `Authorization: Basic ${REDACTED}`,
  );
  assert.equal(http.clean(`lower hex p%2ba%2fs%26s%20w%21rd`), `lower hex ${REDACTED}`);
  assert.equal(http.clean(`html p+a/s&amp;s w&#33;rd`), `html ${REDACTED}`);
  http.addSecret("eyJhbGciOi.token-value");
  assert.equal(http.clean("header Bearer eyJhbGciOi.token-value"), `header Bearer ${REDACTED}`);
  assert.equal(http.clean("an ordinary message stays as it is"), "an ordinary message stays as it is");
});

Deno.test("a short secret is not cut out of a text (that would mangle it): the text is withheld", () => {
  const scrubber = new SecretScrubber();
  scrubber.add("a+b");
  assert.equal(scrubber.scrub("password=a%2Bb rejected"), WITHHELD);
  assert.equal(scrubber.scrub("nothing secret here"), "nothing secret here");
  // A secret that the marker itself would spell is never shown either.
  const odd = new SecretScrubber();
  odd.add("edac");
  assert.ok(!odd.scrub("x edac y").includes("edac"));
});
