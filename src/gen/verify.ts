import { createHash, type Hash } from 'node:crypto';
import { CorruptDataError, throwIfAborted } from '../errors.js';
import type { FileInfo, OpOptions, UnderFileSystem } from '../ufs/types.js';
import { parseFileMetaData, type FileMetaDataLayout } from '../loader/parquet-footer.js';
import type { DatasetSummary, GeneratedFile } from './types.js';

const MAGIC = 'PAR1';
/** Non-Parquet files are read in chunks of this size, so memory holds one chunk. */
const CHUNK_BYTES = 8 << 20;

export interface VerifyOptions extends OpOptions {
  /**
   * Files read at once.
   * @default 4
   */
  concurrency?: number | undefined;
}

export interface VerifyResult {
  files: number;
  /** Bytes read back, which equals the dataset's bytes when every file checked out. */
  bytes: number;
  /** Ranged reads issued. */
  reads: number;
  /** Parquet row groups read as separate ranges. */
  rowGroups: number;
}

/** A byte range of a Parquet file, with what it is. */
export interface ParquetRange {
  kind: 'magic' | 'rowGroup' | 'pageIndex' | 'footer' | 'tail';
  offset: number;
  length: number;
}

export interface ParquetLayout {
  ranges: ParquetRange[];
  numRows: number;
  footer: Uint8Array;
  tail: Uint8Array;
}

/**
 * The byte layout of a Parquet file, from two ranged reads at its end (the 8-byte
 * tail, then the footer): the leading magic, each row group, the page indexes and
 * the footer. The ranges must tile the file exactly, or this throws
 * `GRANARY_ERR_CORRUPT` naming the file and the offset where they do not.
 */
export async function parquetLayout(ufs: UnderFileSystem, info: FileInfo, options: OpOptions = {}): Promise<ParquetLayout> {
  const { url, size } = info;
  if (size < 12) throw new CorruptDataError(`Parquet file ${url} is ${size} bytes, too small for magic and footer`, { url });
  const tail = await ufs.read(url, size - 8, 8, { signal: options.signal, etag: info.etag });
  const footerLen = new DataView(tail.buffer, tail.byteOffset, 8).getUint32(0, true);
  if (Buffer.from(tail.subarray(4)).toString('latin1') !== MAGIC) {
    throw new CorruptDataError(`Parquet file ${url} does not end with PAR1 (at offset ${size - 4})`, { url });
  }
  const footerStart = size - 8 - footerLen;
  if (footerStart < 4) throw new CorruptDataError(`Parquet footer length ${footerLen} exceeds file size ${size} of ${url}`, { url });
  const footer = await ufs.read(url, footerStart, footerLen, { signal: options.signal, etag: info.etag });
  const parsed = parseFileMetaData(footer, url);

  const ranges: ParquetRange[] = [{ kind: 'magic', offset: 0, length: 4 }, ...dataRanges(parsed)];
  ranges.push({ kind: 'footer', offset: footerStart, length: footerLen }, { kind: 'tail', offset: size - 8, length: 8 });
  let at = 0;
  for (const r of ranges) {
    if (r.offset !== at) {
      throw new CorruptDataError(`Parquet file ${url}: ${r.kind} starts at offset ${r.offset}, expected ${at} (the layout leaves a gap or overlaps)`, { url });
    }
    at += r.length;
  }
  return { ranges, numRows: parsed.numRows, footer, tail };
}

/**
 * One range per row group (from its first column chunk to the end of its last) and one
 * for the page indexes of all chunks together, which writers put after the data.
 */
function dataRanges(meta: FileMetaDataLayout): ParquetRange[] {
  const out: ParquetRange[] = [];
  let indexStart = Infinity;
  let indexEnd = -Infinity;
  for (const rg of meta.rowGroups) {
    const start = Math.min(...rg.columns.map((c) => c.offset));
    const end = Math.max(...rg.columns.map((c) => c.offset + c.length));
    out.push({ kind: 'rowGroup', offset: rg.columns.length ? start : 0, length: rg.columns.length ? end - start : 0 });
    for (const c of rg.columns) {
      for (const r of [c.offsetIndex, c.columnIndex]) {
        if (!r) continue;
        indexStart = Math.min(indexStart, r.offset);
        indexEnd = Math.max(indexEnd, r.offset + r.length);
      }
    }
  }
  if (indexEnd > indexStart) out.push({ kind: 'pageIndex', offset: indexStart, length: indexEnd - indexStart });
  return out;
}

async function verifyParquet(ufs: UnderFileSystem, expected: GeneratedFile, info: FileInfo, hash: Hash, result: VerifyResult, options: OpOptions): Promise<void> {
  const { ranges, numRows, tail, footer } = await parquetLayout(ufs, info, options);
  result.reads += 2;
  if (numRows !== expected.rows) {
    throw new CorruptDataError(`Parquet file ${info.url} holds ${numRows} rows, expected ${expected.rows}`, { url: info.url });
  }
  const groups = ranges.filter((r) => r.kind === 'rowGroup').length;
  if (groups !== expected.groups) {
    throw new CorruptDataError(`Parquet file ${info.url} holds ${groups} row groups, expected ${expected.groups}`, { url: info.url });
  }
  for (const r of ranges) {
    let bytes: Uint8Array;
    if (r.kind === 'footer') bytes = footer;
    else if (r.kind === 'tail') bytes = tail;
    else {
      bytes = await ufs.read(info.url, r.offset, r.length, { signal: options.signal, etag: info.etag });
      result.reads++;
      if (r.kind === 'rowGroup') result.rowGroups++;
    }
    hash.update(bytes);
    result.bytes += bytes.byteLength;
  }
}

async function verifyWhole(ufs: UnderFileSystem, info: FileInfo, hash: Hash, result: VerifyResult, options: OpOptions): Promise<void> {
  for (let offset = 0; offset < info.size; offset += CHUNK_BYTES) {
    const bytes = await ufs.read(info.url, offset, Math.min(CHUNK_BYTES, info.size - offset), { signal: options.signal, etag: info.etag });
    result.reads++;
    hash.update(bytes);
    result.bytes += bytes.byteLength;
  }
}

/**
 * Read a generated dataset back through `ufs` and check it against what was written:
 * the listing under its prefix names exactly its files with their sizes, `stat`
 * agrees, and every byte hashes to the SHA-256 taken at write time. Parquet files
 * are read the way a loader reads them: footer first, then one range per row group.
 * Any difference throws `GRANARY_ERR_CORRUPT` naming the file.
 */
export async function verifyDataset(ufs: UnderFileSystem, summary: DatasetSummary, options: VerifyOptions = {}): Promise<VerifyResult> {
  const result: VerifyResult = { files: 0, bytes: 0, reads: 0, rowGroups: 0 };
  const listed = new Map<string, FileInfo>();
  for await (const f of ufs.list(summary.prefixUrl, { signal: options.signal })) listed.set(f.url, f);
  const expected = new Map(summary.files.map((f) => [f.url, f]));
  for (const url of listed.keys()) {
    if (!expected.has(url)) throw new CorruptDataError(`Listing of ${summary.prefixUrl} has ${url}, which was not written`, { url });
  }
  const queue = [...summary.files];
  const work = async (): Promise<void> => {
    for (let f = queue.shift(); f; f = queue.shift()) {
      throwIfAborted(options.signal);
      const seen = listed.get(f.url);
      if (!seen) throw new CorruptDataError(`Listing of ${summary.prefixUrl} lacks ${f.url}`, { url: f.url });
      const info = await ufs.stat(f.url, { signal: options.signal });
      if (info.size !== f.size || seen.size !== f.size) {
        throw new CorruptDataError(`${f.url} is ${info.size} bytes (listed as ${seen.size}), but ${f.size} were written`, { url: f.url });
      }
      const hash = createHash('sha256');
      if (summary.format === 'parquet') await verifyParquet(ufs, f, info, hash, result, options);
      else await verifyWhole(ufs, info, hash, result, options);
      const digest = hash.digest('hex');
      if (digest !== f.sha256) {
        throw new CorruptDataError(`${f.url} read back with SHA-256 ${digest}, but ${f.sha256} was written`, { url: f.url });
      }
      result.files++;
    }
  };
  const concurrency = Math.max(1, Math.min(options.concurrency ?? 4, queue.length));
  await Promise.all(Array.from({ length: concurrency }, work));
  return result;
}
