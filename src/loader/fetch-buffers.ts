/**
 * Reusable memory for the column chunks a loader reads and hands to a decode thread.
 *
 * Every byte of a freshly allocated buffer costs a page fault when first written (one
 * per 4 KiB page: 2–9 µs each on the development VM, more than copying the page), and a
 * large buffer is fresh memory every time (glibc maps allocations over 32 MiB anew and
 * unmaps them when freed). Reading a 37 MiB row group into a fresh buffer took ~2x the
 * CPU of reading it into a reused one (docs/BENCHMARKS.md, sixth session). So the
 * loader reads large chunks into buffers from here, the decode thread hands them back
 * with the decoded row group (transferred both ways, never copied), and the next chunk
 * is read into the same pages.
 *
 * A chunk must be handed to the decoder as an ArrayBuffer of exactly its length (the
 * decoder copies the whole buffer into its memory), so the buffers are resizable: a
 * buffer is resized to each chunk's length. Shrinking gives back the pages past the new
 * length, so a chunk takes the free buffer closest to its length.
 */

interface Resizable extends ArrayBuffer {
  readonly resizable: boolean;
  readonly maxByteLength: number;
  resize(length: number): void;
}

type ResizableCtor = new (length: number, options: { maxByteLength: number }) => Resizable;

const MiB = 1024 * 1024;

/** Chunks smaller than this come from malloc's reused heap anyway; they are not pooled. */
export const FETCH_BUFFER_MIN = MiB;

/**
 * Unused buffers a dataset keeps (on top of the prefetch budget, which bounds the ones in
 * flight): at least this many bytes, and at least `KEEP_LARGEST` chunks as long as the
 * longest one read so far. Reads overlap (a partition's chunks, the next epoch's first
 * partitions), so one kept chunk is not enough; buffers handed back beyond it are dropped.
 */
export const FETCH_BUFFERS_KEPT = 64 * MiB;
const KEEP_LARGEST = 3;

export class FetchBuffers {
  readonly #free: Resizable[] = [];
  #freeBytes = 0;
  #taken = 0;
  #reused = 0;
  #largest = 0;

  /**
   * @param maxFreeBytes the most memory kept while unused (buffers handed back beyond
   *   it are dropped): the prefetch byte budget bounds what is in flight, this what waits.
   * @param minLength chunks below this are left to the reader to allocate.
   */
  constructor(
    readonly maxFreeBytes: number,
    readonly minLength = FETCH_BUFFER_MIN,
  ) {}

  /**
   * A buffer for a chunk of `length` bytes: a view of a whole (resizable) ArrayBuffer of
   * exactly that length, or undefined when `length` is below `minLength`.
   */
  take(length: number): Uint8Array | undefined {
    if (length < this.minLength) return undefined;
    this.#taken++;
    this.#largest = Math.max(this.#largest, length);
    let best = -1;
    for (let i = 0; i < this.#free.length; i++) {
      const b = this.#free[i] as Resizable;
      if (b.maxByteLength < length) continue;
      if (best < 0 || Math.abs(b.byteLength - length) < Math.abs((this.#free[best] as Resizable).byteLength - length)) best = i;
    }
    let buf: Resizable;
    if (best >= 0) {
      buf = this.#free.splice(best, 1)[0] as Resizable;
      this.#freeBytes -= buf.byteLength;
      buf.resize(length);
      this.#reused++;
    } else {
      // Room to grow by a quarter: the next row group's chunk is about as long, rarely exactly.
      buf = new (ArrayBuffer as unknown as ResizableCtor)(length, { maxByteLength: Math.ceil((length * 1.25) / MiB) * MiB });
    }
    return new Uint8Array(buf, 0, length);
  }

  /** Buffers back from a decode thread (or unused): kept for the next `take` while there is room. */
  give(buffers: readonly ArrayBufferLike[]): void {
    for (const b of buffers) {
      const r = b as Resizable;
      // A buffer that was transferred away again reads as 0 bytes long.
      if (!(b instanceof ArrayBuffer) || !r.resizable || r.byteLength === 0) continue;
      if (this.#free.includes(r) || this.#freeBytes + r.byteLength > this.#cap()) continue;
      this.#free.push(r);
      this.#freeBytes += r.byteLength;
    }
  }

  /** At least `maxFreeBytes`, and room for `KEEP_LARGEST` chunks as long as the longest seen. */
  #cap(): number {
    return Math.max(this.maxFreeBytes, KEEP_LARGEST * this.#largest);
  }

  /** Buffers handed out, how many of them were reused, and the bytes kept now. */
  stats(): { taken: number; reused: number; freeBytes: number; free: number } {
    return { taken: this.#taken, reused: this.#reused, freeBytes: this.#freeBytes, free: this.#free.length };
  }

  /** Drop every kept buffer. */
  clear(): void {
    this.#free.length = 0;
    this.#freeBytes = 0;
  }
}
