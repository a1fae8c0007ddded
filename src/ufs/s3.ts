import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { Readable } from 'node:stream';
import type { S3ClientConfig } from '@aws-sdk/client-s3';
import {
  ClosedError,
  InvalidArgumentError,
  NoSuchBucketError,
  NotFoundError,
  RangeNotSatisfiableError,
  TimeoutError,
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
import { mapS3Error, normalizeEtag } from './s3/errors.js';
import { portableS3Options, type S3UfsOptions } from './s3/options.js';
import { linkAbort, readRange as readS3Range, readWhole, type ReadContext } from './s3/read.js';
import { LeanTransport, staticCredentials } from './s3/lean.js';
import { buildSdkClients, s3Region, sdkConfig, SdkTransport, type SdkClients } from './s3/sdk.js';
import type { S3Transport } from './s3/transport.js';

export { normalizeEtag } from './s3/errors.js';
export { portableS3Options, type S3Credentials, type S3UfsOptions } from './s3/options.js';

const MiB = 1024 * 1024;
/** S3's smallest multipart part (except the last). */
const MIN_UPLOAD_PART = 5 * MiB;

/**
 * S3 and S3-compatible stores through @aws-sdk/client-s3.
 *
 * Requests run with the SDK's own retries off: this adapter's loop retries with
 * full-jitter backoff, so `requestCounts()` counts every request actually sent.
 * Reads (src/ufs/s3/read.ts) use exact ranges, verify the length, size and ETag of
 * every response, and split large reads into parallel ranged GETs pinned to one
 * version with `If-Match`.
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
  readonly #transport: S3Transport;
  readonly #reader: ReadContext;
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
    this.#config = sdkConfig(options, this.#agents, this.#timeoutMs);
    if (options.leanReads !== undefined && typeof options.leanReads !== 'boolean') {
      throw new InvalidArgumentError(`Expected S3 option \`leanReads\` to be a boolean, got \`${String(options.leanReads)}\` (${typeof options.leanReads})`);
    }
    const credentials = options.leanReads === false ? undefined : staticCredentials(options.credentials);
    this.#transport = credentials
      ? new LeanTransport({
          endpoint: options.endpoint,
          region: s3Region(options),
          forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
          credentials,
          agents: this.#agents,
          counter: this.#counter,
        })
      : new SdkTransport(() => this.#sdk());
    this.#reader = {
      transport: this.#transport,
      counter: this.#counter,
      partSize: this.#partSize,
      parallelism: this.#parallelism,
      retry: (url, op, signal, fn) => this.#retry(url, op, signal, fn),
      stat: (url, signal) => this.stat(url, { signal }),
    };
  }

  /** The SDK clients, built on first use (the SDK is imported then). */
  #sdk(): Promise<SdkClients> {
    this.#clients ??= buildSdkClients(this.#config, this.#maxAttempts, this.#counter).then((clients) => {
      if (this.#closed) {
        clients.client.destroy();
        clients.uploadClient.destroy();
      }
      return clients;
    });
    return this.#clients;
  }

  requestCounts(): RequestCounts {
    return this.#counter.snapshot();
  }

  /** `portableSpec()` for the rebuild protocol (src/ufs/portable.ts). */
  [toPortable](): PortableSpec | undefined {
    return this.portableSpec();
  }

  /**
   * The options this adapter was built with, as plain data for rebuilding it in another
   * thread (`src/loader/portable-fs.ts`); undefined when credentials are not a plain object.
   */
  portableSpec(): { kind: 's3'; options: S3UfsOptions } | undefined {
    const options = portableS3Options(this.#options);
    return options && { kind: 's3', options };
  }

  async stat(url: string, options: OpOptions = {}): Promise<FileInfo> {
    const loc = this.#open(url);
    throwIfAborted(options.signal);
    try {
      const res = await this.#retry(url, 'stat', options.signal, (signal) => this.#transport.head(loc, signal));
      return { url, size: res.size, etag: normalizeEtag(res.etag) ?? '', mtimeMs: res.lastModified?.getTime() };
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
      const page = await this.#retry(prefixUrl, 'list', options.signal, (signal) => this.#transport.list(loc.bucket, loc.key, continuation, signal));
      for (const o of page.contents) {
        yield { url: formatS3Url(loc.bucket, o.key), size: o.size, etag: normalizeEtag(o.etag) ?? '', mtimeMs: o.lastModified?.getTime() };
      }
      token = page.next;
    } while (token !== undefined);
  }

  async read(url: string, offset?: number, length?: number, options: ReadOptions = {}): Promise<Uint8Array> {
    const range = readRange(url, offset, length);
    const loc = this.#open(url);
    throwIfAborted(options.signal);
    if (options.size !== undefined) checkRange(url, 0, options.size);
    const target = { url, loc, etag: options.etag, size: options.size, signal: options.signal };
    if (range === undefined) return readWhole(this.#reader, target);
    if (range.length > 0) return readS3Range(this.#reader, target, range.offset, range.length);
    const info = await this.stat(url, options);
    if (options.etag !== undefined && normalizeEtag(options.etag) !== info.etag) {
      throw new VersionChangedError(`Object ${url} changed: expected version ${options.etag}, store has ${info.etag}`, { url });
    }
    if (options.size !== undefined && options.size !== info.size) {
      throw new VersionChangedError(`Object ${url} changed: expected size ${options.size}, store has ${info.size} bytes`, { url });
    }
    if (range.offset > info.size) {
      throw new RangeNotSatisfiableError(`Range ${range.offset}+0 is past the end of ${url} (size ${info.size})`, { url });
    }
    return new Uint8Array(0);
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
    const unlink = linkAbort(options.signal, ctl);
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
      unlink();
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
      await this.#retry(url, 'stat', signal, (s) => this.#transport.headBucket(loc.bucket, s));
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
    return mapS3Error(err, { url, op, attempt, maxAttempts: this.#maxAttempts, endpoint: this.#endpoint });
  }
}
