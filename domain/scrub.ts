/**
 * Removing secrets from text a remote server wrote. A vendor that echoes a request back in an error
 * ("invalid request: grant_type=password&username=…&password=…") hands us the secret in the encoding
 * we sent it in, not as the user typed it: URL-encoded in a form body (`%2B`, `+` for a space),
 * JSON-escaped in a JSON body (`\"`, `\u00e9`), base64 in a Basic `Authorization` header. A proxy may
 * re-encode it again (lower-case hex, `%20`, HTML entities in an error page). The scrubber therefore
 * matches every form at once: each character of the secret may appear raw, percent-encoded (either
 * hex case, once or twice), as a JSON escape or as an HTML character reference, a space also as `+`;
 * and the base64 of the secret, of `user:secret`, and of its URL and JSON encodings — whole, or as the
 * characters that only the secret determines when it sits at any offset inside a longer base64 blob.
 *
 * A secret shorter than MIN_SCRUB_LENGTH characters is not cut out of a text (every "a" of a message
 * would go): a text that contains any form of it is withheld whole instead. After scrubbing, the result
 * is checked once more; should the replacement marker and its neighbours spell a form of the secret
 * again, the text is withheld.
 */

/** What a secret is replaced with. */
export const REDACTED = "[redacted]";
/** What replaces a whole text that cannot be scrubbed piecewise. */
export const WITHHELD = "[the server's message is withheld: it may contain a secret]";
/** Secrets shorter than this (in characters) withhold a text that contains them rather than being cut out. */
export const MIN_SCRUB_LENGTH = 4;
/** Shortest run of base64 characters matched for a secret inside a longer base64 blob. */
const MIN_BASE64_CORE = 4;

interface Entry {
  /** Global regex over every form (longest alternatives first). */
  pattern: RegExp;
  short: boolean;
}

/** Scrubs the secrets added to it from any text; see the module comment for the forms matched. */
export class SecretScrubber {
  readonly #entries: Entry[] = [];
  readonly #seen = new Set<string>();

  /**
   * Adds a secret. `username` also covers the Basic form (`base64(username:secret)`) of a password.
   * Empty secrets are ignored.
   */
  add(secret: string, options: { username?: string } = {}): void {
    const id = `${options.username ?? ""}\u0000${secret}`;
    if (!secret || this.#seen.has(id)) return;
    this.#seen.add(id);
    const short = [...secret].length < MIN_SCRUB_LENGTH;
    this.#entries.push({ pattern: new RegExp(secretPattern(secret, options.username), "g"), short });
  }

  /** `text` without any form of the secrets added (or WITHHELD, or "" when even that would show one). */
  scrub(text: string): string {
    let out = text;
    for (const e of this.#entries) {
      if (e.short) {
        if (this.#contains(out, e)) return this.#withheld();
      } else out = out.replace(e.pattern, REDACTED);
    }
    return this.#entries.some((e) => this.#contains(out, e)) ? this.#withheld() : out;
  }

  /** True when `text` holds any form of any secret added. */
  contains(text: string): boolean {
    return this.#entries.some((e) => this.#contains(text, e));
  }

  #contains(text: string, e: Entry): boolean {
    e.pattern.lastIndex = 0;
    return e.pattern.test(text);
  }

  #withheld(): string {
    return this.contains(WITHHELD) ? "" : WITHHELD;
  }
}

const REGEX_SPECIALS = /[\\^$.*+?()[\]{}|\/-]/g;

function escapeRegex(text: string): string {
  return text.replace(REGEX_SPECIALS, "\\$&");
}

/** One hex digit, in either case. */
function hexDigit(d: string): string {
  return /[a-f]/i.test(d) ? `[${d.toLowerCase()}${d.toUpperCase()}]` : d;
}

/** `n` as hex digits (at least `width`), each in either case. */
function hexRegex(n: number, width: number): string {
  return n.toString(16).padStart(width, "0").split("").map(hexDigit).join("");
}

const JSON_SHORT_ESCAPES: Record<string, string> = {
  '"': '\\\\"',
  "\\": "\\\\\\\\",
  "/": "\\\\/",
  "\b": "\\\\b",
  "\f": "\\\\f",
  "\n": "\\\\n",
  "\r": "\\\\r",
  "\t": "\\\\t",
};

const HTML_NAMED: Record<string, string> = {
  "&": "&(?:amp|AMP);",
  "<": "&(?:lt|LT);",
  ">": "&(?:gt|GT);",
  '"': "&(?:quot|QUOT);",
  "'": "&apos;",
};

const utf8 = new TextEncoder();

/** Every way one character (a code point, or a lone surrogate) of a secret may be written. */
function characterForms(ch: string): string {
  const forms = new Set<string>([escapeRegex(ch)]);
  const code = ch.codePointAt(0)!;
  const lone = ch.length === 1 && code >= 0xd800 && code <= 0xdfff;
  // A lone surrogate is sent as U+FFFD by URL encoders (TextEncoder does the same).
  if (lone) forms.add("\\uFFFD");
  forms.add([...utf8.encode(ch)].map((b) => `%(?:25)?${hexRegex(b, 2)}`).join(""));
  if (ch === " ") forms.add("\\+");
  const units = Array.from({ length: ch.length }, (_, i) => ch.charCodeAt(i));
  forms.add(units.map((u) => `\\\\u${hexRegex(u, 4)}`).join(""));
  if (JSON_SHORT_ESCAPES[ch]) forms.add(JSON_SHORT_ESCAPES[ch]);
  if (HTML_NAMED[ch]) forms.add(HTML_NAMED[ch]);
  forms.add(`&#0*${code};`);
  forms.add(`&#[xX]0*${hexRegex(code, 1)};`);
  return `(?:${[...forms].join("|")})`;
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

const toUrlAlphabet = (b64: string) => b64.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");

/**
 * The base64 characters that depend on `bytes` alone when they sit at each of the three offsets (mod
 * 3) inside a longer base64-encoded buffer; runs shorter than MIN_BASE64_CORE are left out.
 */
function base64Cores(bytes: Uint8Array): string[] {
  const out: string[] = [];
  for (let lead = 0; lead < 3; lead++) {
    const buffer = new Uint8Array(lead + bytes.length);
    buffer.set(bytes, lead);
    const encoded = base64(buffer);
    // Character i holds bits [6i, 6i + 6) of the buffer; the secret holds bits [8·lead, 8·(lead + n)).
    const first = Math.ceil((8 * lead) / 6);
    const last = Math.floor((8 * (lead + bytes.length) - 6) / 6);
    if (last - first + 1 >= MIN_BASE64_CORE) out.push(encoded.slice(first, last + 1));
  }
  return out;
}

/** The secret as it is sent in URL forms and JSON bodies (what a vendor may base64 a second time). */
function sentForms(secret: string): string[] {
  const forms = [
    secret,
    new URLSearchParams({ s: secret }).toString().slice(2),
    JSON.stringify(secret).slice(1, -1),
  ];
  if (secret.isWellFormed()) forms.push(encodeURIComponent(secret));
  return forms;
}

/** The regex source matching every form of `secret` (see the module comment). */
function secretPattern(secret: string, username: string | undefined): string {
  const literal = new Set<string>();
  const whole = [utf8.encode(secret)];
  if (username !== undefined) whole.push(utf8.encode(`${username}:${secret}`));
  for (const bytes of whole) {
    const b64 = base64(bytes);
    for (const form of [b64, b64.replace(/=+$/, ""), toUrlAlphabet(b64)]) literal.add(form);
  }
  for (const form of sentForms(secret)) {
    for (const core of base64Cores(utf8.encode(form))) {
      literal.add(core);
      literal.add(toUrlAlphabet(core));
    }
  }
  const textual = [...secret].map(characterForms).join("");
  // Longer alternatives first, so a whole Basic credential goes rather than a part of it.
  const alternatives = [...literal].sort((a, b) => b.length - a.length).map(escapeRegex);
  return [...alternatives, textual].join("|");
}
