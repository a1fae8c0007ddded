/**
 * The AWS SDK side of the S3 adapter: loaded on first use, one client for the adapter's
 * own retry loop (SDK retries off) and one for lib-storage's multipart uploads.
 */
import type { Agent as HttpAgent } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import type * as ClientS3Module from '@aws-sdk/client-s3';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import type * as LibStorageModule from '@aws-sdk/lib-storage';
import { InvalidArgumentError } from '../../errors.js';
import type { RequestCounter } from '../counters.js';
import type { S3Location } from '../url.js';
import type { S3UfsOptions } from './options.js';
import type { S3Body, S3GetResult, S3HeadResult, S3ListPage, S3Transport } from './transport.js';

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

export interface SdkClients {
  s3: ClientS3;
  storage: LibStorage;
  client: S3Client;
  /** lib-storage's Upload cannot share our retry loop, so its parts retry inside the SDK. */
  uploadClient: S3Client;
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

/** The region the adapter signs for. */
export function s3Region(options: S3UfsOptions): string {
  return options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1';
}

/** The SDK client configuration for these options, validating the credentials. */
export function sdkConfig(options: S3UfsOptions, agents: [HttpAgent, HttpsAgent], timeoutMs: number): S3ClientConfig {
  const base: S3ClientConfig = {
    region: s3Region(options),
    forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
    // Without these, the SDK adds CRC trailers that s3rver stores as part of the
    // object (streamed uploads come back corrupted) and validates checksums it did not ask for.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      httpAgent: agents[0],
      httpsAgent: agents[1],
      connectionTimeout: Math.min(timeoutMs, 10_000),
      // An idle-socket deadline for requests our own abort signal does not cover (upload parts).
      socketTimeout: timeoutMs,
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
  return base;
}

/** Build both clients, each counting every request it hands to the HTTP handler (retries included). */
export async function buildSdkClients(config: S3ClientConfig, maxAttempts: number, counter: RequestCounter): Promise<SdkClients> {
  const { s3, storage } = await loadSdk();
  const client = new s3.S3Client({ ...config, maxAttempts: 1 });
  const uploadClient = new s3.S3Client({ ...config, maxAttempts });
  for (const c of [client, uploadClient]) {
    c.middlewareStack.add(
      (next, context) => (args) => {
        const kind = COMMAND_KIND[context.commandName ?? ''];
        if (kind) counter.count(kind);
        return next(args);
      },
      { step: 'deserialize', priority: 'low', name: 'granaryRequestCounter' },
    );
  }
  return { s3, storage, client, uploadClient };
}

/** The read path's requests through the SDK. */
export class SdkTransport implements S3Transport {
  readonly #clients: () => Promise<SdkClients>;

  constructor(clients: () => Promise<SdkClients>) {
    this.#clients = clients;
  }

  async get(loc: S3Location, range: string | undefined, ifMatch: string | undefined, signal: AbortSignal): Promise<S3GetResult> {
    const { s3, client } = await this.#clients();
    const res = await client.send(
      new s3.GetObjectCommand({
        Bucket: loc.bucket,
        Key: loc.key,
        ...(range !== undefined ? { Range: range } : {}),
        ...(ifMatch !== undefined ? { IfMatch: `"${ifMatch}"` } : {}),
      }),
      { abortSignal: signal },
    );
    return { etag: res.ETag, contentRange: res.ContentRange, contentLength: res.ContentLength, body: res.Body as S3Body | undefined };
  }

  async head(loc: S3Location, signal: AbortSignal): Promise<S3HeadResult> {
    const { s3, client } = await this.#clients();
    const res = await client.send(new s3.HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }), { abortSignal: signal });
    return { size: res.ContentLength ?? 0, etag: res.ETag, lastModified: res.LastModified };
  }

  async headBucket(bucket: string, signal: AbortSignal): Promise<void> {
    const { s3, client } = await this.#clients();
    await client.send(new s3.HeadBucketCommand({ Bucket: bucket }), { abortSignal: signal });
  }

  async list(bucket: string, prefix: string, token: string | undefined, signal: AbortSignal): Promise<S3ListPage> {
    const { s3, client } = await this.#clients();
    const page = await client.send(
      new s3.ListObjectsV2Command({
        Bucket: bucket,
        ...(prefix.length > 0 ? { Prefix: prefix } : {}),
        ...(token !== undefined ? { ContinuationToken: token } : {}),
      }),
      { abortSignal: signal },
    );
    const contents = [];
    for (const o of page.Contents ?? []) {
      if (o.Key === undefined) continue;
      contents.push({ key: o.Key, size: o.Size ?? 0, etag: o.ETag, lastModified: o.LastModified });
    }
    return { contents, next: page.IsTruncated === true ? page.NextContinuationToken : undefined };
  }
}
