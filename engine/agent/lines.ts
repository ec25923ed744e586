/** Splits a byte stream into lines of UTF-8 text (without their "\n"); a last line without one is kept. */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true });
    let i: number;
    while ((i = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, i).replace(/\r$/, "");
      buffered = buffered.slice(i + 1);
    }
  }
  buffered += decoder.decode();
  if (buffered.length > 0) yield buffered;
}
