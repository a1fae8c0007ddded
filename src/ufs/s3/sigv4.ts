/**
 * AWS Signature Version 4 for S3 requests without a body (GET, HEAD): the canonical
 * request, the string to sign and the derived signing key (cached per day), with
 * node:crypto. Signs `host`, `x-amz-content-sha256`, `x-amz-date` and, with temporary
 * credentials, `x-amz-security-token`; other headers (Range, If-Match) travel unsigned.
 */
import { createHash, createHmac } from 'node:crypto';
import type { S3Credentials } from './options.js';

/** SHA-256 of the empty payload. */
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** RFC 3986 percent-encoding of every byte but the unreserved ones; `/` kept when `keepSlash`. */
export function uriEncode(s: string, keepSlash: boolean): string {
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte);
    if ((byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || c === '-' || c === '.' || c === '_' || c === '~' || (keepSlash && c === '/')) {
      out += c;
    } else {
      out += `%${byte < 16 ? '0' : ''}${byte.toString(16).toUpperCase()}`;
    }
  }
  return out;
}

export interface SignInput {
  method: 'GET' | 'HEAD';
  host: string;
  /** The encoded path, as sent. */
  path: string;
  /** Query parameters, unencoded. */
  query: ReadonlyArray<readonly [string, string]>;
  now: Date;
}

export class SigV4Signer {
  readonly #credentials: S3Credentials;
  readonly #region: string;
  #keyDate = '';
  #key: Buffer = Buffer.alloc(0);

  constructor(credentials: S3Credentials, region: string) {
    this.#credentials = credentials;
    this.#region = region;
  }

  #signingKey(date: string): Buffer {
    if (date !== this.#keyDate) {
      const kDate = createHmac('sha256', `AWS4${this.#credentials.secretAccessKey}`).update(date).digest();
      const kRegion = createHmac('sha256', kDate).update(this.#region).digest();
      const kService = createHmac('sha256', kRegion).update('s3').digest();
      this.#key = createHmac('sha256', kService).update('aws4_request').digest();
      this.#keyDate = date;
    }
    return this.#key;
  }

  /** The headers that authenticate the request: add them to it as they are. */
  sign(req: SignInput): Record<string, string> {
    const amzDate = req.now.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
    const date = amzDate.slice(0, 8);
    const token = this.#credentials.sessionToken;
    const query = req.query
      .map(([k, v]) => [uriEncode(k, false), uriEncode(v, false)] as const)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`)
      .join('&');
    const headers: Array<[string, string]> = [
      ['host', req.host],
      ['x-amz-content-sha256', EMPTY_SHA256],
      ['x-amz-date', amzDate],
    ];
    if (token !== undefined) headers.push(['x-amz-security-token', token]);
    const signedHeaders = headers.map(([k]) => k).join(';');
    const canonical = `${req.method}\n${req.path}\n${query}\n${headers.map(([k, v]) => `${k}:${v.trim()}\n`).join('')}\n${signedHeaders}\n${EMPTY_SHA256}`;
    const scope = `${date}/${this.#region}/s3/aws4_request`;
    const toSign = `AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${createHash('sha256').update(canonical).digest('hex')}`;
    const signature = createHmac('sha256', this.#signingKey(date)).update(toSign).digest('hex');
    const out: Record<string, string> = {
      'x-amz-content-sha256': EMPTY_SHA256,
      'x-amz-date': amzDate,
      authorization: `AWS4-HMAC-SHA256 Credential=${this.#credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`,
    };
    if (token !== undefined) out['x-amz-security-token'] = token;
    return out;
  }
}
