import { ParquetFile } from 'parquet-wasm';
import type { UfsSpec } from './portable-fs.js';
import type { DatasetReadStats } from './read-stats.js';

/**
 * Decoding one row group from only its bytes. parquet-wasm's `readParquet` copies
 * its whole input into wasm and ignores `columns`; its `ParquetFile.fromFile` instead
 * reads through a Blob-like object (`size`, `slice(a, b).arrayBuffer()`) and asks only
 * for the footer and the projected column chunks. We hand it a sparse "file": the
 * fetched chunks at their original offsets and a rewritten one-row-group footer
 * appended after the original end, so no offset needs adjusting.
 */

export interface Piece {
  offset: number;
  bytes: Uint8Array;
}

export interface ParquetDecodeTask {
  kind: 'parquet';
  url: string;
  /** The original file's size; the rewritten footer starts there. */
  size: number;
  /** Rewritten FileMetaData + length + magic. */
  footer: Uint8Array;
  pieces: Piece[];
  /** Top-level columns to decode; undefined for all. */
  columns?: string[] | undefined;
  /** Rows the row group holds (0 for a schema-only task). */
  numRows: number;
  /** Only decode the schema. */
  schemaOnly?: boolean | undefined;
  /**
   * Read the pieces in the decode thread instead (`pieces` is then empty): through a
   * client rebuilt from `fs`, one per thread and spec. See `FetchedDecode`.
   */
  fetch?: { fs: UfsSpec; ranges: FetchRange[]; done: SharedArrayBuffer } | undefined;
}

/** One byte range a decode thread reads for its row group. */
export interface FetchRange {
  url: string;
  etag: string | undefined;
  offset: number;
  length: number;
}

/** What a decode thread that read its own bytes answers. */
export type FetchedDecode =
  | { ipc: Uint8Array; bytes: number; fetchMs: number; decodeMs: number; stats: DatasetReadStats }
  | { fetchError: { code: string | undefined; name: string; message: string; url: string | undefined }; stats: DatasetReadStats };

class SparseBlob {
  readonly size: number;
  readonly #pieces: Piece[];

  constructor(size: number, pieces: Piece[]) {
    this.size = size;
    this.#pieces = pieces;
  }

  slice(start: number, end: number): { arrayBuffer(): Promise<ArrayBuffer> } {
    const s = Math.max(0, Math.min(start, this.size));
    const e = Math.max(s, Math.min(end, this.size));
    // The reader asks for whole column chunks, which are exactly the pieces we fetched:
    // hand over the piece itself (this thread owns it) instead of a copy.
    for (const p of this.#pieces) {
      const b = p.bytes;
      if (p.offset === s && b.byteLength === e - s && b.byteOffset === 0 && b.buffer.byteLength === b.byteLength && b.buffer instanceof ArrayBuffer) {
        return { arrayBuffer: async () => b.buffer as ArrayBuffer };
      }
    }
    const out = new Uint8Array(e - s);
    // Holes read as zeros: a reader that coalesces nearby ranges may span an
    // unprojected chunk, whose bytes it then never decodes.
    for (const p of this.#pieces) {
      const ps = p.offset;
      const pe = p.offset + p.bytes.byteLength;
      const a = Math.max(s, ps);
      const b = Math.min(e, pe);
      if (a < b) out.set(p.bytes.subarray(a - ps, b - ps), a - s);
    }
    return { arrayBuffer: async () => out.buffer };
  }
}

/** Decode to Arrow IPC stream bytes (one record batch, or schema only). */
export async function decodeParquet(task: ParquetDecodeTask): Promise<Uint8Array> {
  const pieces = [...task.pieces, { offset: task.size, bytes: task.footer }];
  const blob = new SparseBlob(task.size + task.footer.byteLength, pieces);
  const file = await ParquetFile.fromFile(blob as unknown as Blob);
  try {
    if (task.schemaOnly) {
      const schema = file.schema();
      try {
        return schema.intoIPCStream();
      } finally {
        /* intoIPCStream consumed the schema */
      }
    }
    const table = await file.read({
      rowGroups: [0],
      batchSize: Math.max(1, task.numRows),
      ...(task.columns ? { columns: task.columns } : {}),
    });
    return table.intoIPCStream();
  } finally {
    file.free();
  }
}
