/**
 * The requests the S3 read path makes (GET, HEAD, LIST), behind one small interface:
 * the AWS SDK (src/ufs/s3/sdk.ts) or the lean signed client (src/ufs/s3/lean.ts).
 * Failures are thrown raw, shaped like the SDK's (`name` = S3 error code,
 * `$metadata.httpStatusCode`), and mapped by src/ufs/s3/errors.ts.
 */
import type { S3Location } from '../url.js';

/** A response body: read it to its end (the connection then goes back to the pool) or destroy it. */
export interface S3Body extends AsyncIterable<Uint8Array> {
  destroy(err?: Error): void;
}

export interface S3GetResult {
  etag: string | undefined;
  contentRange: string | undefined;
  contentLength: number | undefined;
  body: S3Body | undefined;
}

export interface S3HeadResult {
  size: number;
  etag: string | undefined;
  lastModified: Date | undefined;
}

export interface S3ListEntry {
  key: string;
  size: number;
  etag: string | undefined;
  lastModified: Date | undefined;
}

export interface S3ListPage {
  contents: S3ListEntry[];
  /** The continuation token of the next page; undefined on the last one. */
  next: string | undefined;
}

export interface S3Transport {
  /** GET an object; `range` is `bytes=a-b` or undefined (the whole object); `ifMatch` an ETag without quotes. */
  get(loc: S3Location, range: string | undefined, ifMatch: string | undefined, signal: AbortSignal): Promise<S3GetResult>;
  head(loc: S3Location, signal: AbortSignal): Promise<S3HeadResult>;
  headBucket(bucket: string, signal: AbortSignal): Promise<void>;
  list(bucket: string, prefix: string, token: string | undefined, signal: AbortSignal): Promise<S3ListPage>;
}
