import { InvalidArgumentError, InvalidUrlError, UnsupportedSchemeError } from '../errors.js';

export const SUPPORTED_SCHEMES = ['s3', 'file', 'http', 'https'] as const;
export type Scheme = (typeof SUPPORTED_SCHEMES)[number];

/** The scheme of a store URL, validated. */
export function schemeOf(url: string): Scheme {
  if (typeof url !== 'string' || url.length === 0) {
    throw new InvalidUrlError(`Expected a store URL string, got \`${String(url)}\` (${typeof url})`, { url: String(url) });
  }
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(url);
  if (!m?.[1]) throw new InvalidUrlError(`Invalid store URL \`${url}\`: no scheme (expected s3://, file:// or http(s)://)`, { url });
  const scheme = m[1].toLowerCase();
  if (!(SUPPORTED_SCHEMES as readonly string[]).includes(scheme)) {
    throw new UnsupportedSchemeError(`Unsupported scheme \`${scheme}:\` in \`${url}\` (supported: s3://, file://, http://, https://)`, {
      url,
    });
  }
  return scheme as Scheme;
}

/** An S3 URL split into bucket and key. The key is the raw text after the bucket (not percent-decoded). */
export interface S3Location {
  bucket: string;
  key: string;
}

const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * Parse `s3://bucket/key`. Keys are taken literally (spaces and non-ASCII allowed,
 * `%` not decoded), so a URL round-trips through `list` and `read` unchanged.
 */
export function parseS3Url(url: string, { requireKey = true } = {}): S3Location {
  if (!url.startsWith('s3://')) throw new InvalidUrlError(`Expected an s3:// URL, got \`${url}\``, { url });
  const rest = url.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash === -1 ? rest : rest.slice(0, slash);
  const key = slash === -1 ? '' : rest.slice(slash + 1);
  if (!BUCKET_RE.test(bucket)) throw new InvalidUrlError(`Invalid bucket name \`${bucket}\` in \`${url}\``, { url });
  if (requireKey && key.length === 0) throw new InvalidUrlError(`S3 URL \`${url}\` names no object key`, { url });
  return { bucket, key };
}

export function formatS3Url(bucket: string, key: string): string {
  return `s3://${bucket}/${key}`;
}

/**
 * Validate a byte range. Offsets and lengths are non-negative safe integers; the
 * message names the URL and the values that came in.
 */
export function checkRange(url: string, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new InvalidArgumentError(`Expected \`offset\` to be an integer from 0 and up, got \`${offset}\` (${typeof offset}) reading ${url}`, {
      url,
    });
  }
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new InvalidArgumentError(`Expected \`length\` to be an integer from 0 and up, got \`${length}\` (${typeof length}) reading ${url}`, {
      url,
    });
  }
}

/**
 * The range a `read(url, offset?, length?)` names: `undefined` for the whole object
 * (both omitted), else the checked range. One without the other is an invalid argument.
 */
export function readRange(url: string, offset: number | undefined, length: number | undefined): { offset: number; length: number } | undefined {
  if (offset === undefined && length === undefined) return undefined;
  if (offset === undefined || length === undefined) {
    throw new InvalidArgumentError(`Expected both \`offset\` and \`length\` (a range) or neither (the whole object), got offset \`${String(offset)}\` and length \`${String(length)}\` reading ${url}`, {
      url,
    });
  }
  checkRange(url, offset, length);
  return { offset, length };
}
