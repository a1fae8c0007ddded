/**
 * The fault proxy's byte flipper: it follows the HTTP/1.1 responses going back to
 * the client on one connection and flips one byte in the body of chosen ones, the way
 * a faulty NIC, a bad cable past its checksum, or a buggy middlebox would. Headers and
 * framing are left alone, so the client gets a well-formed answer with wrong bytes:
 * what only an end-to-end checksum can catch.
 *
 * It reads framing from `content-length`; a chunked response (or one with a head over
 * 64 KiB) makes it stop following that connection, which then passes through unchanged.
 * Answers to HEAD requests carry a length without a body, so point it at servers whose
 * clients send GET and POST (cache workers), not at an S3 endpoint.
 */

export interface BodyFlipOptions {
  /**
   * Flip a byte in every Nth matching body on each connection (1: every one).
   * @default 1
   */
  every?: number;
  /**
   * Only bodies whose `content-type` starts with this are candidates.
   * @default 'application/octet-stream'
   */
  contentType?: string;
}

const MAX_HEAD = 64 * 1024;
const HEAD_END = '\r\n\r\n';

/** One connection's response stream, followed chunk by chunk. */
export class BodyFlipper {
  #head = '';
  #bodyLeft = 0;
  #bodyLength = 0;
  /** Index in the current body of the byte to flip, -1 for none. */
  #flipAt = -1;
  #matching = 0;
  #opaque = false;

  constructor(
    readonly options: () => BodyFlipOptions | null,
    readonly onFlip: () => void,
  ) {}

  /** The chunk as it should go on: the same buffer, or a copy with one byte flipped. */
  process(chunk: Buffer): Buffer {
    if (this.#opaque) return chunk;
    let out = chunk;
    let pos = 0;
    while (pos < chunk.byteLength && !this.#opaque) {
      if (this.#bodyLeft > 0) {
        const take = Math.min(this.#bodyLeft, chunk.byteLength - pos);
        const bodyPos = this.#bodyLength - this.#bodyLeft;
        if (this.#flipAt >= bodyPos && this.#flipAt < bodyPos + take) {
          if (out === chunk) out = Buffer.from(chunk);
          const i = pos + this.#flipAt - bodyPos;
          out[i] = (out[i] as number) ^ 0xff;
          this.#flipAt = -1;
          this.onFlip();
        }
        this.#bodyLeft -= take;
        pos += take;
        continue;
      }
      // In a head: gather it up to the blank line.
      const before = this.#head.length;
      this.#head += chunk.toString('latin1', pos, Math.min(chunk.byteLength, pos + MAX_HEAD));
      const end = this.#head.indexOf(HEAD_END);
      if (end < 0) {
        if (this.#head.length > MAX_HEAD) this.#opaque = true;
        return out;
      }
      pos += end + HEAD_END.length - before;
      this.#startBody(this.#head.slice(0, end));
      this.#head = '';
    }
    return out;
  }

  #startBody(head: string): void {
    const lines = head.split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? Number.NaN);
    let length = 0;
    let type = '';
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      if (c <= 0) continue;
      const name = l.slice(0, c).trim().toLowerCase();
      const value = l.slice(c + 1).trim();
      if (name === 'content-length') length = Number(value);
      else if (name === 'content-type') type = value.toLowerCase();
      else if (name === 'transfer-encoding') this.#opaque = true;
    }
    if (!Number.isSafeInteger(length) || length < 0 || Number.isNaN(status)) this.#opaque = true;
    if (this.#opaque || status === 204 || status === 304 || status < 200) return;
    this.#bodyLeft = length;
    this.#bodyLength = length;
    this.#flipAt = -1;
    const o = this.options();
    if (o === null || length === 0 || !type.startsWith((o.contentType ?? 'application/octet-stream').toLowerCase())) return;
    if (this.#matching++ % Math.max(1, o.every ?? 1) !== 0) return;
    this.#flipAt = length >> 1;
  }
}
