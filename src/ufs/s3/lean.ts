/**
 * The read path's requests (GET, HEAD, ListObjectsV2) as plain SigV4-signed HTTP
 * requests over the adapter's keep-alive agents: a fraction of the AWS SDK's CPU per
 * request (measured in bench/NOTES.md), which decides small-file speed on a worker.
 * Used when the credentials are static (given, or in the environment); the SDK's
 * provider chain (profiles, SSO, instance metadata) keeps the SDK path.
 */
import { request as httpRequest, type Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';
import type { RequestCounter } from '../counters.js';
import type { S3Location } from '../url.js';
import type { S3Credentials } from './options.js';
import { SigV4Signer, uriEncode } from './sigv4.js';
import type { S3GetResult, S3HeadResult, S3ListPage, S3Transport } from './transport.js';
import { parseError, parseListPage } from './xml.js';

/** An S3 error response, shaped like the SDK's exceptions for src/ufs/s3/errors.ts. */
export class S3ResponseError extends Error {
  readonly $metadata: { httpStatusCode: number };

  constructor(name: string, message: string, status: number) {
    super(message);
    this.name = name;
    this.$metadata = { httpStatusCode: status };
  }
}

const STATUS_NAMES: Record<number, string> = { 304: 'NotModified', 403: 'Forbidden', 404: 'NotFound', 412: 'PreconditionFailed', 416: 'InvalidRange' };

/** Static credentials: the given ones, else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`; undefined when the SDK's provider chain is needed. */
export function staticCredentials(given: S3Credentials | undefined): S3Credentials | undefined {
  if (given !== undefined) return given;
  const { AWS_ACCESS_KEY_ID: id, AWS_SECRET_ACCESS_KEY: secret, AWS_SESSION_TOKEN: token } = process.env;
  if (!id || !secret) return undefined;
  return token ? { accessKeyId: id, secretAccessKey: secret, sessionToken: token } : { accessKeyId: id, secretAccessKey: secret };
}

export interface LeanOptions {
  endpoint: string | undefined;
  region: string;
  forcePathStyle: boolean;
  credentials: S3Credentials;
  agents: [HttpAgent, HttpsAgent];
  counter: RequestCounter;
}

export class LeanTransport implements S3Transport {
  readonly #signer: SigV4Signer;
  readonly #https: boolean;
  readonly #host: string;
  readonly #hostname: string;
  readonly #port: number | undefined;
  /** The endpoint's own path (an S3 store mounted under a prefix), without a trailing slash. */
  readonly #basePath: string;
  readonly #pathStyle: boolean;
  readonly #agents: [HttpAgent, HttpsAgent];
  readonly #counter: RequestCounter;

  constructor(o: LeanOptions) {
    const u = new URL(o.endpoint ?? `https://s3.${o.region}.amazonaws.com`);
    this.#https = u.protocol === 'https:';
    this.#host = u.host;
    this.#hostname = u.hostname;
    this.#port = u.port === '' ? undefined : Number(u.port);
    this.#basePath = u.pathname.replace(/\/+$/, '');
    this.#pathStyle = o.forcePathStyle;
    this.#signer = new SigV4Signer(o.credentials, o.region);
    this.#agents = o.agents;
    this.#counter = o.counter;
  }

  #send(method: 'GET' | 'HEAD', bucket: string, key: string | undefined, query: Array<[string, string]>, extra: Record<string, string>, signal: AbortSignal): Promise<IncomingMessage> {
    // Virtual-hosted style, except for bucket names with dots (TLS wildcards do not cover them).
    const virtual = !this.#pathStyle && !bucket.includes('.');
    const host = virtual ? `${bucket}.${this.#host}` : this.#host;
    const hostname = virtual ? `${bucket}.${this.#hostname}` : this.#hostname;
    const keyPath = key === undefined ? '' : `/${uriEncode(key, true)}`;
    const path = this.#basePath + (virtual ? keyPath || '/' : `/${uriEncode(bucket, false)}${keyPath}`);
    const qs = query.map(([k, v]) => `${uriEncode(k, false)}=${uriEncode(v, false)}`).join('&');
    const headers = { ...extra, ...this.#signer.sign({ method, host, path, query, now: new Date() }) };
    const request = this.#https ? httpsRequest : httpRequest;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = request({
        method,
        hostname,
        ...(this.#port !== undefined ? { port: this.#port } : {}),
        path: qs === '' ? path : `${path}?${qs}`,
        headers: { ...headers, host },
        agent: this.#https ? this.#agents[1] : this.#agents[0],
        signal,
      });
      req.once('response', resolve);
      req.once('error', reject);
      req.end();
    });
  }

  /** Reject a non-2xx response with its S3 error code (read from the error document, if any). */
  async #check(res: IncomingMessage): Promise<IncomingMessage> {
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) return res;
    const chunks: Buffer[] = [];
    for await (const c of res as AsyncIterable<Buffer>) chunks.push(c);
    const { code, message } = parseError(Buffer.concat(chunks).toString('utf8'));
    const name = code ?? STATUS_NAMES[status] ?? `Http${status}`;
    throw new S3ResponseError(name, message ?? `HTTP ${status}`, status);
  }

  async get(loc: S3Location, range: string | undefined, ifMatch: string | undefined, signal: AbortSignal): Promise<S3GetResult> {
    const extra: Record<string, string> = {};
    if (range !== undefined) extra.range = range;
    if (ifMatch !== undefined) extra['if-match'] = `"${ifMatch}"`;
    this.#counter.count('get');
    const res = await this.#check(await this.#send('GET', loc.bucket, loc.key, [], extra, signal));
    const len = res.headers['content-length'];
    return { etag: res.headers.etag, contentRange: res.headers['content-range'], contentLength: len === undefined ? undefined : Number(len), body: res };
  }

  async head(loc: S3Location, signal: AbortSignal): Promise<S3HeadResult> {
    this.#counter.count('stat');
    const res = await this.#check(await this.#send('HEAD', loc.bucket, loc.key, [], {}, signal));
    res.resume();
    const lm = res.headers['last-modified'];
    const t = lm === undefined ? Number.NaN : Date.parse(lm);
    return { size: Number(res.headers['content-length'] ?? '0'), etag: res.headers.etag, lastModified: Number.isFinite(t) ? new Date(t) : undefined };
  }

  async headBucket(bucket: string, signal: AbortSignal): Promise<void> {
    this.#counter.count('stat');
    const res = await this.#check(await this.#send('HEAD', bucket, undefined, [], {}, signal));
    res.resume();
  }

  async list(bucket: string, prefix: string, token: string | undefined, signal: AbortSignal): Promise<S3ListPage> {
    const query: Array<[string, string]> = [['list-type', '2']];
    if (prefix.length > 0) query.push(['prefix', prefix]);
    if (token !== undefined) query.push(['continuation-token', token]);
    this.#counter.count('list');
    const res = await this.#check(await this.#send('GET', bucket, undefined, query, {}, signal));
    const chunks: Buffer[] = [];
    for await (const c of res as AsyncIterable<Buffer>) chunks.push(c);
    return parseListPage(Buffer.concat(chunks).toString('utf8'));
  }
}
