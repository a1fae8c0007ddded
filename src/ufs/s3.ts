import { setMaxListeners } from 'node:events';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { Readable } from 'node:stream';
import type * as ClientS3Module from '@aws-sdk/client-s3';
import type { GetObjectCommandOutput, S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import type * as LibStorageModule from '@aws-sdk/lib-storage';
import {
  AccessDeniedError,
  ClosedError,
  GranaryError,
  InternalError,
  InvalidArgumentError,
  NoSuchBucketError,
  NotFoundError,
  RangeNotSatisfiableError,
  TimeoutError,
  UnavailableError,
  VersionChangedError,
  isRetryableError,
  throwIfAborted,
} from '../errors.js';
import { retry } from '../util/retry.js';
import { optionalInt } from '../util/validate.js';
import { RequestCounter } from './counters.js';
import { checkRange, readRange, formatS3Url, parseS3Url, schemeOf, type S3Location } from './url.js';
import type { FileInfo, OpOptions, ReadOptions, RequestCounts, StoreAdapter, WriteData } from './types.js';
import { toPortable, type PortableSpec } from './portable.js';

const MiB = 1024 * 1024;

type ClientS3 = typeof ClientS3Module;
type LibStorage = typeof LibStorageModule;

/**
 * The AWS SDK, loaded on first use: it is most of a granary process's heap otherwise
 * (~8 MiB), and every thread that only reads files or the cache would pay for it.
 */
let sdkModules: Promise<{ s3: ClientS3; storage: LibStorage }> | undefined;
function loadSdk(): Promise<{ s3: ClientS3; storage: LibStorage }> {
  sdkModules ??= Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/lib-storage')]).then(([s3, storage]) => ({ s3, storage }));
  return sdkModules;
}

interface SdkClients {
  s3: ClientS3;
  storage: LibStorage;
  client: S3Client;
  /** lib-storage's Upload cannot share our retry loop, so its parts retry inside the SDK. */
  uploadClient: S3Client;
}
/** S3's smallest multipart part (except the last). */
const MIN_UPLOAD_PART = 5 * MiB;

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
}

export interface S3UfsOptions {
  /**
   * The S3 endpoint, for S3-compatible stores.
   * @default AWS's regional endpoint
   * @example 'http://127.0.0.1:4568'
   */
  endpoint?: string | undefined;
  /**
   * @default `AWS_REGION`, then `AWS_DEFAULT_REGION`, then `'us-east-1'`
   */
  region?: string | undefined;
  /**
   * Static credentials. When absent, the standard AWS chain applies (environment,
   * shared config/credentials files, SSO, container and instance metadata).
   */
  credentials?: S3Credentials | undefined;
  /**
   * Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`.
   * @default true when `endpoint` is set, else false
   */
  forcePathStyle?: boolean | undefined;
  /**
   * Deadline for each request attempt, body included. An attempt that passes it fails
   * with `GRANARY_ERR_TIMEOUT` (retried like a 5xx while attempts remain).
   * @default 30000
   */
  timeoutMs?: number | undefined;
  /**
   * Attempts per request, first included. Retried: 5xx, 503 SlowDown, 429, connection
   * resets, timeouts, short bodies. Never retried: other 4xx.
   * @default 4
   */
  maxAttempts?: number | undefined;
  /**
   * Full-jitter backoff: before attempt n+1 sleep a random time in
   * `[0, min(retryMaxDelayMs, retryBaseDelayMs * 2^(n-1)))`.
   * @default 100
   */
  retryBaseDelayMs?: number | undefined;
  /** @default 5000 */
  retryMaxDelayMs?: number | undefined;
  /**
   * Reads longer than this are split into ranged GETs of this size, run in parallel;
   * writes longer than this (and every stream) go as multipart uploads with parts of
   * `max(partSize, 5 MiB)`.
   * @default 8388608 (8 MiB)
   */
  partSize?: number | undefined;
  /**
   * Ranged GETs in flight per read (and upload parts in flight per write).
   * @default 8
   */
  parallelism?: number | undefined;
  /**
   * Keep-alive sockets per host, shared by all calls on this adapter.
   * @default max(64, parallelism * 8)
   */
  maxSockets?: number | undefined;
}

type CountKind = 'list' | 'stat' | 'get' | 'put' | 'delete';

const COMMAND_KIND: Record<string, CountKind> = {
  GetObjectCommand: 'get',
  HeadObjectCommand: 'stat',
  HeadBucketCommand: 'stat',
  ListObjectsV2Command: 'list',
  PutObjectCommand: 'put',
  CreateMultipartUploadCommand: 'put',
  UploadPartCommand: 'put',
  CompleteMultipartUploadCommand: 'put',
  AbortMultipartUploadCommand: 'put',
  DeleteObjectCommand: 'delete',
};

const RETRYABLE_S3_CODES = new Set([
  'SlowDown',
  'InternalError',
  'ServiceUnavailable',
  'RequestTimeout',
  'Throttling',
  'ThrottlingException',
  'RequestLimitExceeded',
  'TooManyRequestsException',
]);
const ACCESS_CODES = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'Forbidden', 'InvalidToken', 'ExpiredToken']);
const NETWORK_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'ERR_STREAM_PREMATURE_CLOSE']);

interface SdkErrorShape {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: number };
}

/** `"abc"` and `W/"abc"` → `abc`. */
export function normalizeEtag(etag: string | undefined): string | undefined {
  if (etag === undefined) return undefined;
  let e = etag.trim();
  if (e.startsWith('W/')) e = e.slice(2);
  if (e.length >= 2 && e.startsWith('"') && e.endsWith('"')) e = e.slice(1, -1);
  return e;
}

function parseContentRange(v: string | undefined): { start: number; end: number; total: number | undefined } | undefined {
  if (!v) return undefined;
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(v.trim());
  if (!m?.[1] || !m[2] || !m[3]) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

/**
 * Abort `child` when `parent` aborts; returns the unlink function. Used instead of
 * `AbortSignal.any`, which on Node 20 keeps every combined signal reachable from a
 * long-lived parent (a loader's signal passed to thousands of reads).
 */
function linkAbort(parent: AbortSignal | undefined, child: AbortController): () => void {
  if (!parent) return () => undefined;
  if (parent.aborted) {
    child.abort(parent.reason);
    return () => undefined;
  }
  const onAbort = (): void => child.abort(parent.reason);
  parent.addEventListener('abort', onAbort, { once: true });
  return () => parent.removeEventListener('abort', onAbort);
}

type SdkBody = AsyncIterable<Uint8Array> & { destroy(err?: Error): void };

/**
 * A plain copy of S3 options that another thread can rebuild the adapter from, or
 * undefined when they hold something that is not data (a credentials provider function).
 */
export function portableS3Options(options: S3UfsOptions): S3UfsOptions | undefined {
  const c: unknown = options.credentials;
  if (c !== undefined && (c === null || typeof c !== 'object')) return undefined;
  const out: S3UfsOptions = { ...options };
  if (options.credentials !== undefined) {
    const { accessKeyId, secretAccessKey, sessionToken } = options.credentials;
    out.credentials = sessionToken === undefined ? { accessKeyId, secretAccessKey } : { accessKeyId, secretAccessKey, sessionToken };
  }
  return out;
}

/**
 * S3 and S3-compatible stores through @aws-sdk/client-s3.
 *
 * Requests run with the SDK's own retries off: this adapter's loop retries with
 * full-jitter backoff, so `requestCounts()` counts every request actually sent.
 * Reads use exact `bytes=a-b` ranges (never suffix ranges, which some S3 clones get
 * wrong), verify the length and the ETag of every response, and split large reads
 * into parallel ranged GETs pinned to one version with `If-Match`.
 */
export class S3Ufs implements StoreAdapter {
  readonly schemes: readonly string[] = ['s3'];
  readonly #config: S3ClientConfig;
  #clients: Promise<SdkClients> | undefined;
  readonly #agents: [HttpAgent, HttpsAgent];
  readonly #counter = new RequestCounter();
  readonly #timeoutMs: number;
  readonly #maxAttempts: number;
  readonly #retryBaseDelayMs: number;
  readonly #retryMaxDelayMs: number;
  readonly #partSize: number;
  readonly #parallelism: number;
  readonly #endpoint: string;
  readonly #options: S3UfsOptions;
  #closed = false;

  constructor(options: S3UfsOptions = {}) {
    this.#options = options;
    this.#timeoutMs = optionalInt('s3.timeoutMs', options.timeoutMs, 30_000);
    this.#maxAttempts = optionalInt('s3.maxAttempts', options.maxAttempts, 4);
    this.#retryBaseDelayMs = optionalInt('s3.retryBaseDelayMs', options.retryBaseDelayMs, 100, 0);
    this.#retryMaxDelayMs = optionalInt('s3.retryMaxDelayMs', options.retryMaxDelayMs, 5000, 0);
    this.#partSize = optionalInt('s3.partSize', options.partSize, 8 * MiB);
    this.#parallelism = optionalInt('s3.parallelism', options.parallelism, 8);
    const maxSockets = optionalInt('s3.maxSockets', options.maxSockets, Math.max(64, this.#parallelism * 8));
    if (options.endpoint !== undefined && (typeof options.endpoint !== 'string' || !/^https?:\/\//.test(options.endpoint))) {
      throw new InvalidArgumentError(`Expected S3 option \`endpoint\` to be an http(s):// URL, got \`${String(options.endpoint)}\``);
    }
    this.#endpoint = options.endpoint ?? 'AWS S3';
    this.#agents = [new HttpAgent({ keepAlive: true, maxSockets }), new HttpsAgent({ keepAlive: true, maxSockets })];
    const base: S3ClientConfig = {
      region: options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
      // Without these, the SDK adds CRC trailers that s3rver stores as part of the
      // object (streamed uploads come back corrupted) and validates checksums it did not ask for.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        httpAgent: this.#agents[0],
        httpsAgent: this.#agents[1],
        connectionTimeout: Math.min(this.#timeoutMs, 10_000),
        // An idle-socket deadline for requests our own abort signal does not cover (upload parts).
        socketTimeout: this.#timeoutMs,
      },
    };
    if (options.endpoint !== undefined) base.endpoint = options.endpoint;
    if (options.credentials !== undefined) {
      const c = options.credentials;
      if (typeof c.accessKeyId !== 'string' || typeof c.secretAccessKey !== 'string') {
        throw new InvalidArgumentError('Expected S3 option `credentials` to have string `accessKeyId` and `secretAccessKey`');
      }
      base.credentials = c.sessionToken === undefined ? { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey } : { ...c, sessionToken: c.sessionToken };
    }
    this.#config = base;
  }

  /** The SDK clients, built on first use (the SDK is imported then). */
  #sdk(): Promise<SdkClients> {
    this.#clients ??= loadSdk().then(({ s3, storage }) => {
      const client = new s3.S3Client({ ...this.#config, maxAttempts: 1 });
      const uploadClient = new s3.S3Client({ ...this.#config, maxAttempts: this.#maxAttempts });
      for (const c of [client, uploadClient]) {
        // Innermost step: runs once per request handed to the HTTP handler, retries included.
        c.middlewareStack.add(
          (next, context) => (args) => {
            const kind = COMMAND_KIND[context.commandName ?? ''];
            if (kind) this.#counter.count(kind);
            return next(args);
          },
          { step: 'deserialize', priority: 'low', name: 'granaryRequestCounter' },
        );
      }
      if (this.#closed) {
        client.destroy();
        uploadClient.destroy();
      }
      return { s3, storage, client, uploadClient };
    });
    return this.#clients;
  }

  requestCounts(): RequestCounts {
    return this.#counter.snapshot();
  }

  /**
   * The options this adapter was built with, as plain data for rebuilding it in another
   * thread (`src/loader/portable-fs.ts`); undefined when credentials are not a plain object.
   */
  /** `portableSpec()` for the rebuild protocol (src/ufs/portable.ts). */
  [toPortable](): PortableSpec | undefined {
    return this.portableSpec();
  }

  portableSpec(): { kind: 's3'; options: S3UfsOptions } | undefined {
    const options = portableS3Options(this.#options);
    return options && { kind: 's3', options };
  }

  async stat(url: string, options: OpOptions = {}): Promise<FileInfo> {
    const loc = this.#open(url);
    throwIfAborted(options.signal);
    try {
      const res = await this.#retry(url, 'stat', options.signal, async (signal) => {
        const { s3, client } = await this.#sdk();
        return client.send(new s3.HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }), { abortSignal: signal });
      });
      return { url, size: res.ContentLength ?? 0, etag: normalizeEtag(res.ETag) ?? '', mtimeMs: res.LastModified?.getTime() };
    } catch (err) {
      // HEAD responses have no body, so a missing bucket looks like a missing key.
      if (err instanceof NotFoundError) await this.#checkBucket(url, loc, options.signal);
      throw err;
    }
  }

  async *list(prefixUrl: string, options: OpOptions = {}): AsyncIterable<FileInfo> {
    if (this.#closed) throw new ClosedError(`S3 adapter is closed (listing ${prefixUrl})`, { url: prefixUrl });
    schemeOf(prefixUrl);
    const loc = parseS3Url(prefixUrl, { requireKey: false });
    let token: string | undefined;
    do {
      throwIfAborted(options.signal);
      if (this.#closed) throw new ClosedError(`S3 adapter was closed while listing ${prefixUrl}`, { url: prefixUrl });
      const continuation = token;
      const page = await this.#retry(prefixUrl, 'list', options.signal, async (signal) => {
        const { s3, client } = await this.#sdk();
        return client.send(
          new s3.ListObjectsV2Command({
            Bucket: loc.bucket,
            ...(loc.key.length > 0 ? { Prefix: loc.key } : {}),
            ...(continuation !== undefined ? { ContinuationToken: continuation } : {}),
          }),
          { abortSignal: signal },
        );
      });
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        yield { url: formatS3Url(loc.bucket, o.Key), size: o.Size ?? 0, etag: normalizeEtag(o.ETag) ?? '', mtimeMs: o.LastModified?.getTime() };
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async read(url: string, offset?: number, length?: number, options: ReadOptions = {}): Promise<Uint8Array> {
    const range = readRange(url, offset, length);
    if (range === undefined) {
      const info = await this.stat(url, options);
      return this.read(url, 0, info.size, { ...options, etag: options.etag ?? info.etag });
    }
    ({ offset, length } = range);
    const loc = this.#open(url);
    checkRange(url, offset, length);
    throwIfAborted(options.signal);
    const wanted = options.etag;
    if (length === 0) {
      const info = await this.stat(url, options);
      if (wanted !== undefined && normalizeEtag(wanted) !== info.etag) {
        throw new VersionChangedError(`Object ${url} changed: expected version ${wanted}, store has ${info.etag}`, { url });
      }
      if (offset > info.size) {
        throw new RangeNotSatisfiableError(`Range ${offset}+0 is past the end of ${url} (size ${info.size})`, { url });
      }
      return new Uint8Array(0);
    }
    // allocUnsafeSlow: not from Buffer's shared pool, so the result owns its ArrayBuffer
    // (cheap to transfer to a worker thread); every byte is overwritten below.
    const buf = Buffer.allocUnsafeSlow(length);
    const out = new Uint8Array(buf.buffer, buf.byteOffset, length);
    if (length <= this.#partSize) {
      await this.#readPart(url, loc, offset, out, wanted === undefined ? undefined : normalizeEtag(wanted), options.signal);
      return out;
    }
    await this.#readParallel(url, loc, offset, out, wanted === undefined ? undefined : normalizeEtag(wanted), options.signal);
    return out;
  }

  async write(url: string, data: WriteData, options: OpOptions = {}): Promise<FileInfo> {
    const loc = this.#open(url);
    throwIfAborted(options.signal);
    const uploadPart = Math.max(this.#partSize, MIN_UPLOAD_PART);
    if (data instanceof Uint8Array && data.byteLength <= uploadPart) {
      const res = await this.#retry(url, 'write', options.signal, async (signal) => {
        const { s3, client } = await this.#sdk();
        return client.send(new s3.PutObjectCommand({ Bucket: loc.bucket, Key: loc.key, Body: data, ContentLength: data.byteLength }), {
          abortSignal: signal,
        });
      });
      this.#counter.written(data.byteLength);
      return this.#written(url, data.byteLength, res.ETag, options);
    }
    let size = 0;
    const counter = this.#counter;
    const body =
      data instanceof Uint8Array
        ? data
        : Readable.from(
            (async function* () {
              for await (const chunk of data) {
                size += chunk.byteLength;
                counter.written(chunk.byteLength);
                yield chunk;
              }
            })(),
          );
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const { storage, uploadClient } = await this.#sdk();
      const upload = new storage.Upload({
        client: uploadClient,
        params: { Bucket: loc.bucket, Key: loc.key, Body: body },
        partSize: uploadPart,
        queueSize: this.#parallelism,
        leavePartsOnError: false,
        abortController: ctl,
      });
      const res = await upload.done();
      if (data instanceof Uint8Array) {
        size = data.byteLength;
        this.#counter.written(size);
      }
      return await this.#written(url, size, res.ETag, options);
    } catch (err) {
      if (options.signal?.aborted) throw options.signal.reason;
      // The upload client retried each part itself, up to maxAttempts.
      throw this.#mapError(err, url, 'write', this.#maxAttempts);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  async delete(url: string, options: OpOptions = {}): Promise<void> {
    const loc = this.#open(url);
    throwIfAborted(options.signal);
    try {
      await this.#retry(url, 'delete', options.signal, async (signal) => {
        const { s3, client } = await this.#sdk();
        return client.send(new s3.DeleteObjectCommand({ Bucket: loc.bucket, Key: loc.key }), { abortSignal: signal });
      });
    } catch (err) {
      if (err instanceof NotFoundError) return;
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Clients still being built are destroyed by #sdk() when it sees #closed.
    const clients = await this.#clients?.catch(() => undefined);
    clients?.client.destroy();
    clients?.uploadClient.destroy();
    for (const a of this.#agents) a.destroy();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #open(url: string): S3Location {
    if (this.#closed) throw new ClosedError(`S3 adapter is closed (used for ${url})`, { url });
    schemeOf(url);
    return parseS3Url(url);
  }

  async #written(url: string, size: number, etag: string | undefined, options: OpOptions): Promise<FileInfo> {
    const e = normalizeEtag(etag);
    if (e === undefined || e.length === 0) return this.stat(url, options);
    return { url, size, etag: e };
  }

  async #checkBucket(url: string, loc: S3Location, signal: AbortSignal | undefined): Promise<void> {
    try {
      await this.#retry(url, 'stat', signal, async (s) => {
        const { s3, client } = await this.#sdk();
        return client.send(new s3.HeadBucketCommand({ Bucket: loc.bucket }), { abortSignal: s });
      });
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new NoSuchBucketError(`Bucket ${loc.bucket} does not exist at ${this.#endpoint} (reading ${url})`, { url, cause: err });
      }
      // Anything else: keep the original "not found" for the key.
    }
  }

  /**
   * Run one request with a per-attempt deadline, retrying retryable failures with
   * full-jitter backoff. A caller abort rejects with `signal.reason` at once.
   */
  async #retry<T>(url: string, op: string, callerSignal: AbortSignal | undefined, fn: (signal: AbortSignal, attempt: number) => Promise<T>): Promise<T> {
    return retry(
      async (attempt) => {
        if (this.#closed) throw new ClosedError(`S3 adapter was closed during ${op} of ${url}`, { url });
        const deadline = new AbortController();
        const timedOut = new TimeoutError(`S3 ${op} of ${url} timed out after ${this.#timeoutMs} ms (attempt ${attempt} of ${this.#maxAttempts})`, { url });
        const timer = setTimeout(() => deadline.abort(timedOut), this.#timeoutMs);
        const link = linkAbort(callerSignal, deadline);
        try {
          return await fn(deadline.signal, attempt);
        } catch (err) {
          if (callerSignal?.aborted) throw callerSignal.reason;
          if (this.#closed) throw new ClosedError(`S3 adapter was closed during ${op} of ${url}`, { url, cause: err });
          throw deadline.signal.reason === timedOut ? timedOut : this.#mapError(err, url, op, attempt);
        } finally {
          clearTimeout(timer);
          link();
        }
      },
      {
        attempts: this.#maxAttempts,
        baseMs: this.#retryBaseDelayMs,
        maxMs: this.#retryMaxDelayMs,
        signal: callerSignal,
        retryable: (err) => isRetryableError(err),
      },
    );
  }

  #mapError(err: unknown, url: string, op: string, attempt: number): unknown {
    if (err instanceof GranaryError) return err;
    const e = (err ?? {}) as SdkErrorShape;
    const name = typeof e.name === 'string' ? e.name : '';
    const code = typeof e.code === 'string' ? e.code : '';
    const status = e.$metadata?.httpStatusCode;
    const detail = `${name}${status !== undefined ? ` (HTTP ${status})` : ''}${typeof e.message === 'string' && e.message && e.message !== name ? `: ${e.message}` : ''}`;
    const where = `S3 ${op} of ${url} at ${this.#endpoint}`;
    const opts = { url, cause: err };
    if (name === 'NoSuchBucket') return new NoSuchBucketError(`${where} failed: bucket does not exist (${detail})`, opts);
    if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) return new NotFoundError(`${where} failed: no such object (${detail})`, opts);
    if (ACCESS_CODES.has(name) || status === 403 || status === 401 || name === 'CredentialsProviderError') {
      return new AccessDeniedError(`${where} was denied: ${detail}`, opts);
    }
    if (name === 'PreconditionFailed' || status === 412) return new VersionChangedError(`${where} failed: the object changed (If-Match did not hold: ${detail})`, opts);
    if (name === 'InvalidRange' || status === 416) return new RangeNotSatisfiableError(`${where} failed: range not satisfiable (${detail})`, opts);
    const retryable =
      RETRYABLE_S3_CODES.has(name) ||
      (status !== undefined && (status >= 500 || status === 429)) ||
      NETWORK_CODES.has(code) ||
      isRetryableError(err) ||
      name === 'TimeoutError';
    if (retryable) {
      const msg = `${where} failed on attempt ${attempt} of ${this.#maxAttempts}: ${detail || code || String(err)}`;
      return name === 'TimeoutError' || code === 'ETIMEDOUT' ? new TimeoutError(msg, opts) : new UnavailableError(msg, opts);
    }
    if (status !== undefined && status >= 400) return new InvalidArgumentError(`${where} was rejected: ${detail}`, opts);
    return new InternalError(`${where} failed unexpectedly: ${detail || String(err)}`, opts);
  }

  /**
   * Read `out.byteLength` bytes at `offset` into `out` with one ranged GET (retried;
   * a retry asks only for the bytes still missing). Resolves with the version read.
   * `onHeaders` fires once, when the first response's headers are in.
   */
  async #readPart(
    url: string,
    loc: S3Location,
    offset: number,
    out: Uint8Array,
    etag: string | undefined,
    callerSignal: AbortSignal | undefined,
    onHeaders?: (etag: string, total: number | undefined) => void,
  ): Promise<string> {
    let filled = 0;
    let version = etag;
    let headersSent = false;
    await this.#retry(url, 'read', callerSignal, async (signal) => {
      const start = offset + filled;
      const end = offset + out.byteLength - 1;
      const pinned = version;
      const { s3, client } = await this.#sdk();
      const res: GetObjectCommandOutput = await client.send(
        new s3.GetObjectCommand({
          Bucket: loc.bucket,
          Key: loc.key,
          Range: `bytes=${start}-${end}`,
          ...(pinned !== undefined ? { IfMatch: `"${pinned}"` } : {}),
        }),
        { abortSignal: signal },
      );
      const body = res.Body as SdkBody | undefined;
      const fail = (e: Error): never => {
        body?.destroy();
        throw e;
      };
      const got = normalizeEtag(res.ETag);
      // Checked even with If-Match sent: not every S3 clone honours it (s3rver does not).
      if (pinned !== undefined && got !== undefined && got !== pinned) {
        fail(new VersionChangedError(`Object ${url} changed: expected version ${pinned}, store returned ${got}`, { url }));
      }
      const cr = parseContentRange(res.ContentRange);
      const total = cr ? cr.total : res.ContentLength;
      if (total !== undefined && offset + out.byteLength > total) {
        fail(new RangeNotSatisfiableError(`Range ${offset}+${out.byteLength} is past the end of ${url} (size ${total})`, { url }));
      }
      // A 200 without Content-Range is the whole object from byte 0: skip to `start`.
      const bodyStart = cr ? cr.start : 0;
      if (bodyStart > start || (cr && cr.end < end && (total === undefined || cr.end + 1 < total))) {
        fail(new UnavailableError(`S3 returned bytes ${res.ContentRange ?? 'of the whole object'} for range ${start}-${end} of ${url}`, { url }));
      }
      if (version === undefined && got !== undefined) version = got;
      if (!headersSent) {
        headersSent = true;
        onHeaders?.(got ?? '', total);
      }
      if (!body) fail(new UnavailableError(`S3 returned no body for range ${start}-${end} of ${url}`, { url }));
      const onAbort = (): void => body?.destroy(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
      signal.addEventListener('abort', onAbort, { once: true });
      let pos = bodyStart;
      const stop = offset + out.byteLength;
      try {
        if (body) {
          for await (const chunk of body) {
            const from = Math.max(pos, offset + filled);
            const to = Math.min(pos + chunk.byteLength, stop);
            if (to > from) {
              out.set(chunk.subarray(from - pos, to - pos), from - offset);
              const n = to - from;
              filled += n;
              this.#counter.read(n);
            }
            pos += chunk.byteLength;
            if (pos >= stop) break;
          }
        }
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
      if (signal.aborted) throw signal.reason;
      if (filled < out.byteLength) {
        throw new UnavailableError(`S3 body for ${url} ended early: got ${filled} of ${out.byteLength} bytes from offset ${offset}`, { url });
      }
    });
    return version ?? '';
  }

  /**
   * Split a large read into `partSize` ranges. The first GET fixes the version (its
   * ETag, or the caller's) and reveals the object size; the rest follow with
   * `If-Match`, `parallelism` at a time, each writing straight into its slice of `out`.
   */
  async #readParallel(url: string, loc: S3Location, offset: number, out: Uint8Array, etag: string | undefined, callerSignal: AbortSignal | undefined): Promise<void> {
    const parts: Array<[number, number]> = [];
    for (let at = 0; at < out.byteLength; at += this.#partSize) parts.push([at, Math.min(this.#partSize, out.byteLength - at)]);
    const stopAll = new AbortController();
    // Every part in flight listens on this one signal: `parallelism` listeners are expected.
    setMaxListeners(0, stopAll.signal);
    const unlink = linkAbort(callerSignal, stopAll);
    const signal = stopAll.signal;
    let firstError: unknown;
    const failed = (err: unknown): void => {
      if (firstError === undefined) firstError = err;
      stopAll.abort(err);
    };
    const [first] = parts;
    if (!first) return;
    let version = etag;
    let onHeaders!: (total: number | undefined) => void;
    const headers = new Promise<number | undefined>((resolve) => {
      onHeaders = resolve;
    });
    const queue = parts.slice(1);
    const run = async (): Promise<void> => {
      for (let p = queue.shift(); p !== undefined && firstError === undefined; p = queue.shift()) {
        const [at, len] = p;
        try {
          await this.#readPart(url, loc, offset + at, out.subarray(at, at + len), version, signal);
        } catch (err) {
          failed(err);
        }
      }
    };
    const firstPart = this.#readPart(url, loc, offset, out.subarray(0, first[1]), etag, signal, (e, total) => {
      if (version === undefined && e.length > 0) version = e;
      onHeaders(total);
    }).then(
      () => onHeaders(undefined),
      (err: unknown) => {
        failed(err);
        onHeaders(undefined);
      },
    );
    const workers: Array<Promise<void>> = [firstPart.then(run)];
    const total = await headers;
    if (total !== undefined && offset + out.byteLength > total) {
      failed(new RangeNotSatisfiableError(`Range ${offset}+${out.byteLength} is past the end of ${url} (size ${total})`, { url }));
    }
    for (let i = 1; i < this.#parallelism && firstError === undefined; i++) workers.push(run());
    await Promise.allSettled(workers);
    unlink();
    if (callerSignal?.aborted) throw callerSignal.reason;
    if (firstError !== undefined) throw firstError;
  }
}
