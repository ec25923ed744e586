/**
 * Small byte helpers shared by the format modules (hex, base64, concatenation, little-endian integers).
 * Hex and base64 are the built-ins of Uint8Array (Deno 2.9+), behind names the modules already use.
 */

/** Lower-case hex of `bytes` (the built-in `Uint8Array.prototype.toHex`). */
export function toHex(bytes: Uint8Array): string {
  return bytes.toHex();
}

/** Bytes of a hex string (either case). Throws if `hex` is not an even-length hex string. */
export function fromHex(hex: string): Uint8Array<ArrayBuffer> {
  try {
    return Uint8Array.fromHex(hex);
  } catch {
    throw new Error(`Cannot parse hex "${hex}"`);
  }
}

/** One buffer holding `parts` in order. */
export function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Whether two byte strings are equal (not constant-time; use `timingSafeEqual` for secrets). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Whether every byte of `data` is zero (word-at-a-time where aligned). */
export function isAllZero(data: Uint8Array): boolean {
  let i = 0;
  if (data.byteOffset % 4 === 0) {
    const words = new Uint32Array(data.buffer, data.byteOffset, data.length >>> 2);
    for (let w = 0; w < words.length; w++) if (words[w] !== 0) return false;
    i = words.length * 4;
  }
  for (; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}

/** Standard base64 of `bytes` (the built-in `Uint8Array.prototype.toBase64`). */
export function toBase64(bytes: Uint8Array): string {
  return bytes.toBase64();
}

/** Bytes of a standard base64 string (surrounding white space ignored). Throws if `b64` is not base64. */
export function fromBase64(b64: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.fromBase64(b64.trim());
}

/** A growable little-endian byte writer for the binary formats. */
export class ByteWriter {
  #buf = new Uint8Array(256);
  #view = new DataView(this.#buf.buffer);
  #len = 0;

  #ensure(n: number) {
    if (this.#len + n <= this.#buf.length) return;
    let cap = this.#buf.length * 2;
    while (cap < this.#len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
  u8(v: number): this {
    this.#ensure(1);
    this.#view.setUint8(this.#len++, v);
    return this;
  }
  u16(v: number): this {
    this.#ensure(2);
    this.#view.setUint16(this.#len, v, true);
    this.#len += 2;
    return this;
  }
  u32(v: number): this {
    this.#ensure(4);
    this.#view.setUint32(this.#len, v, true);
    this.#len += 4;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.#ensure(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    return this;
  }
  get length(): number {
    return this.#len;
  }
  /** The bytes written so far (a copy). */
  finish(): Uint8Array<ArrayBuffer> {
    return this.#buf.slice(0, this.#len);
  }
}

/** A little-endian byte reader; throws `RangeError` when reading past the end. */
export class ByteReader {
  #view: DataView;
  pos = 0;
  constructor(readonly data: Uint8Array) {
    this.#view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }
  #need(n: number) {
    if (this.pos + n > this.data.length) {
      throw new RangeError(`Cannot read ${n} bytes at ${this.pos}: past the end`);
    }
  }
  u8(): number {
    this.#need(1);
    return this.#view.getUint8(this.pos++);
  }
  u16(): number {
    this.#need(2);
    const v = this.#view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.#need(4);
    const v = this.#view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  bytes(n: number): Uint8Array {
    this.#need(n);
    const b = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  get remaining(): number {
    return this.data.length - this.pos;
  }
}
