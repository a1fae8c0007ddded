import type { Schema } from 'apache-arrow';
import { Footer } from 'apache-arrow/ipc/metadata/file';
import { Message } from 'apache-arrow/ipc/metadata/message';
import { CorruptDataError } from '../errors.js';
import type { FileInfo, UnderFileSystem } from '../ufs/types.js';

/**
 * Arrow IPC file format: "ARROW1" + padding, the stream (schema message, dictionary
 * and record batch messages), a flatbuffer footer listing every block, its length
 * (int32) and "ARROW1". Partitions are record batches; their row counts live in each
 * batch's metadata message, read at open with one small range read per batch.
 */

export interface ArrowBlock {
  offset: number;
  metaDataLength: number;
  bodyLength: number;
  rows: number;
}

export interface ArrowFileMeta {
  url: string;
  etag: string;
  size: number;
  schema: Schema;
  /** The schema as an encapsulated IPC message (continuation, length, flatbuffer, padding). */
  schemaMessage: Uint8Array;
  /** Every dictionary batch message (metadata + body), prepended to each partition's stream. */
  dictionaries: Uint8Array[];
  batches: ArrowBlock[];
}

const MAGIC = Buffer.from('ARROW1');
const PROBE = 64 * 1024;

function corrupt(url: string, what: string): InstanceType<typeof CorruptDataError> {
  return new CorruptDataError(`Corrupt Arrow IPC file ${url}: ${what}`, { url });
}

/** Length-prefixed flatbuffer of an encapsulated message (continuation marker optional). */
function messageFlatbuffer(url: string, bytes: Uint8Array, at: number): Uint8Array {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  let len = v.getInt32(pos, true);
  if (len === -1) {
    pos = 4;
    len = v.getInt32(pos, true);
  }
  if (len < 0 || pos + 4 + len > bytes.byteLength) throw corrupt(url, `message at offset ${at} claims ${len} metadata bytes`);
  return bytes.subarray(pos + 4, pos + 4 + len);
}

export async function readArrowFile(fs: UnderFileSystem, info: FileInfo, signal?: AbortSignal): Promise<ArrowFileMeta> {
  const { url, size, etag } = info;
  if (size < 18) throw corrupt(url, `file of ${size} bytes is too small to be an Arrow IPC file`);
  const probe = Math.min(size, PROBE);
  let tail = await fs.read(url, size - probe, probe, { etag, signal });
  if (!Buffer.from(tail.subarray(tail.byteLength - 6)).equals(MAGIC)) throw corrupt(url, `no ARROW1 magic at offset ${size - 6}`);
  const footerLen = new DataView(tail.buffer, tail.byteOffset, tail.byteLength).getInt32(tail.byteLength - 10, true);
  if (footerLen <= 0 || footerLen + 18 > size) throw corrupt(url, `footer length ${footerLen} at offset ${size - 10} does not fit the file size ${size}`);
  if (footerLen + 10 > tail.byteLength) tail = await fs.read(url, size - 10 - footerLen, footerLen + 10, { etag, signal });
  const footerBytes = tail.subarray(tail.byteLength - 10 - footerLen, tail.byteLength - 10);
  let footer: Footer;
  try {
    footer = Footer.decode(footerBytes);
  } catch (err) {
    throw corrupt(url, `footer at offset ${size - 10 - footerLen} does not parse: ${(err as Error).message}`);
  }
  // Encoded from the footer's schema: writers differ on whether the file repeats it at offset 8 (arrow JS does not).
  const schemaMessage = encapsulate(Message.encode(Message.from(footer.schema)));

  const dataEnd = size - 10 - footerLen;
  const dictionaries: Uint8Array[] = [];
  for (const d of footer.dictionaryBatches()) {
    if (d.offset < 8 || d.offset + d.metaDataLength + d.bodyLength > dataEnd) throw corrupt(url, `dictionary block at offset ${d.offset} is outside the file`);
    dictionaries.push(await fs.read(url, d.offset, d.metaDataLength + d.bodyLength, { etag, signal }));
  }
  const batches: ArrowBlock[] = [];
  for (const b of footer.recordBatches()) {
    const { offset, metaDataLength, bodyLength } = b;
    if (offset < 8 || metaDataLength <= 0 || offset + metaDataLength + bodyLength > dataEnd) {
      throw corrupt(url, `record batch block at offset ${offset} (${metaDataLength}+${bodyLength} bytes) is outside the data region 0..${dataEnd}`);
    }
    const metaBytes = await fs.read(url, offset, metaDataLength, { etag, signal });
    let rows: number;
    try {
      const msg = Message.decode(messageFlatbuffer(url, metaBytes, offset));
      if (!msg.isRecordBatch()) throw new Error(`message type ${msg.headerType} is not a record batch`);
      rows = msg.header().length;
    } catch (err) {
      if (err instanceof CorruptDataError) throw err;
      throw corrupt(url, `record batch metadata at offset ${offset} does not parse: ${(err as Error).message}`);
    }
    batches.push({ offset, metaDataLength, bodyLength, rows });
  }
  return { url, etag, size, schema: footer.schema, schemaMessage, dictionaries, batches };
}

function encapsulate(flatbuffer: Uint8Array): Uint8Array {
  const padded = (flatbuffer.byteLength + 7) & ~7;
  const out = new Uint8Array(8 + padded);
  const v = new DataView(out.buffer);
  v.setInt32(0, -1, true);
  v.setInt32(4, padded, true);
  out.set(flatbuffer, 8);
  return out;
}
