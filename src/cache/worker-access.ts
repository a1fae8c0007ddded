/**
 * What a cache worker may read and who may ask: the store URL policy (`allow`,
 * `fileRoot`, the private-address guard for http(s) stores), the bearer token and the
 * bind check. Everything here runs before the worker touches the store or the network.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { lookup as dnsLookupAsync } from 'node:dns/promises';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { resolve } from 'node:path';
import { ConfigError, ErrorCodes, ForbiddenPrefixError, type GranaryError, InvalidArgumentError, PathEscapeError, UnauthorizedError } from '../errors.js';
import { schemeOf } from '../ufs/url.js';
import { checkString, show } from '../util/validate.js';

/** Why a request was refused: the `reason` label of `granary_worker_refused_total`. */
export type RefusalReason = 'unauthorized' | 'prefix' | 'file_disabled' | 'http_not_allowed' | 'private_address' | 'path_escape';

/**
 * Addresses no default may reach: loopback, link-local (cloud metadata services live at
 * 169.254.169.254 and fd00:ec2::254), private, shared, multicast and reserved ranges.
 */
const NON_PUBLIC = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  NON_PUBLIC.addSubnet(net, bits, 'ipv4');
}
for (const [net, bits] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  NON_PUBLIC.addSubnet(net, bits, 'ipv6');
}

/** Whether an IP address (v4 or v6, IPv4-mapped included) is loopback, link-local, private or reserved. */
export function isNonPublicAddress(address: string): boolean {
  const bare = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  const family = isIP(bare);
  if (family === 0) return false;
  return NON_PUBLIC.check(bare, family === 4 ? 'ipv4' : 'ipv6');
}

/** Whether a bind address only serves this machine. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (bare === 'localhost') return true;
  const family = isIP(bare);
  if (family === 4) return bare.startsWith('127.');
  if (family === 6) return bare === '::1' || /^::ffff:127\./i.test(bare) || /^::ffff:7f[0-9a-f]{2}:/i.test(bare);
  return false;
}

/** An `allow` entry for http(s) stores: the whole scheme, or one origin and a path prefix. */
interface HttpPrefix {
  protocol: 'http:' | 'https:';
  /** `host[:port]` as the URL parser writes it; undefined: any host (the address guard applies). */
  host: string | undefined;
  path: string;
}

function parseHttpPrefix(p: string): HttpPrefix {
  const lower = p.toLowerCase();
  if (lower === 'http://' || lower === 'https://') return { protocol: lower === 'http://' ? 'http:' : 'https:', host: undefined, path: '/' };
  let u: URL;
  try {
    u = new URL(p);
  } catch {
    throw new InvalidArgumentError(`Expected each http(s) \`allow\` prefix to be 'http://', 'https://' or a URL with a host, got \`${p}\``);
  }
  if (u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') {
    throw new InvalidArgumentError(`An http(s) \`allow\` prefix may not carry credentials, a query or a fragment, got \`${p}\``);
  }
  return { protocol: u.protocol as HttpPrefix['protocol'], host: u.host, path: u.pathname };
}

/** `..` or `.` path segments, however encoded: a URL parser resolves them, which would walk out of a prefix. */
function hasDotSegment(url: string): boolean {
  const path = url.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]*/i, '').split(/[?#]/, 1)[0] ?? '';
  return path.split(/[/\\]/).some((seg) => {
    const s = seg.replace(/%2e/gi, '.');
    return s === '..' || s === '.';
  });
}

export interface AccessPolicyOptions {
  /** The worker's id, for messages. */
  id: string;
  allow?: readonly string[] | undefined;
  fileRoot?: string | undefined;
  token?: string | undefined;
  /** Resolve a host name to its addresses (tests substitute one). @default dns.lookup with `all: true` */
  resolveHost?: ((host: string) => Promise<string[]>) | undefined;
}

/**
 * The worker's read policy. Defaults: `s3://` allowed; `file://` refused unless a
 * `fileRoot` is set (and then jailed there by the local store); `http(s)://` refused
 * unless an `allow` prefix names it, and even then never to a loopback, link-local or
 * private address unless the prefix names that very host.
 */
export class AccessPolicy {
  readonly #id: string;
  readonly #allow: readonly string[] | undefined;
  readonly #http: HttpPrefix[];
  /** Hosts an `allow` prefix names outright: their addresses are the operator's choice. */
  readonly #namedHosts: Set<string>;
  readonly fileRoot: string | undefined;
  readonly #tokenDigest: Buffer | undefined;
  readonly #resolveHost: (host: string) => Promise<string[]>;

  constructor(o: AccessPolicyOptions) {
    this.#id = o.id;
    if (o.token !== undefined) this.#tokenDigest = sha256(`Bearer ${checkString('token', o.token)}`);
    if (o.fileRoot !== undefined) this.fileRoot = resolve(checkString('fileRoot', o.fileRoot));
    this.#http = [];
    this.#namedHosts = new Set();
    const allow: unknown = o.allow;
    if (allow !== undefined) {
      if (!Array.isArray(allow)) throw new InvalidArgumentError(`Expected \`allow\` to be an array of URL prefixes, got \`${show(allow)}\` (${typeof allow})`);
      const prefixes = allow.map((p: unknown) => {
        if (typeof p !== 'string') throw new InvalidArgumentError(`Expected each \`allow\` prefix to be a string, got \`${show(p)}\` (${typeof p})`);
        return p;
      });
      for (const p of prefixes) {
        const scheme = schemeOf(p);
        if (scheme === 'http' || scheme === 'https') {
          const hp = parseHttpPrefix(p);
          this.#http.push(hp);
          if (hp.host !== undefined) this.#namedHosts.add(hostOnly(hp.host));
        }
      }
      this.#allow = prefixes;
    }
    this.#resolveHost = o.resolveHost ?? (async (host) => (await dnsLookupAsync(host, { all: true })).map((a) => a.address));
  }

  /** Throws `GRANARY_ERR_UNAUTHORIZED` unless the header carries the token; compared in constant time. */
  authorize(header: string | undefined): void {
    if (this.#tokenDigest === undefined) return;
    if (header === undefined || !timingSafeEqual(sha256(header), this.#tokenDigest)) {
      throw new UnauthorizedError('Missing or wrong bearer token (Authorization: Bearer <token>)');
    }
  }

  /**
   * Throws a coded error (`GRANARY_ERR_FORBIDDEN_PREFIX`, `GRANARY_ERR_PATH_ESCAPE`) unless this worker may read `url`.
   * Checks the text first; for http(s) hosts not named by an `allow` prefix, resolves the
   * name and refuses non-public addresses, all before any request to the store.
   */
  async check(url: string): Promise<void> {
    const scheme = schemeOf(url);
    if (this.#allow !== undefined && !this.#allow.some((p) => url.startsWith(p))) {
      throw this.#refuse('prefix', url, `allowed prefixes: ${this.#allow.join(', ')}`);
    }
    if (scheme === 'file') {
      if (this.fileRoot === undefined) {
        throw this.#refuse('file_disabled', url, 'file:// is off on this worker; start it with a root to serve local files (fileRoot / --file-root DIR)');
      }
      return;
    }
    if (scheme === 'http' || scheme === 'https') await this.#checkHttp(url);
  }

  async #checkHttp(url: string): Promise<void> {
    if (this.#http.length === 0) {
      throw this.#refuse('http_not_allowed', url, 'http(s):// stores are off on this worker unless an allow prefix names them (allow / --allow https://host/path/)');
    }
    if (hasDotSegment(url)) {
      throw new PathEscapeError(`Store URL \`${url}\` contains a \`.\` or \`..\` segment; worker ${this.#id} refuses it`, { url });
    }
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw this.#refuse('http_not_allowed', url, 'not a valid http(s) URL');
    }
    if (u.username !== '' || u.password !== '') throw this.#refuse('http_not_allowed', url, 'credentials in the URL are refused');
    const match = this.#http.filter((p) => p.protocol === u.protocol && (p.host === undefined || p.host === u.host) && u.pathname.startsWith(p.path));
    if (match.length === 0) throw this.#refuse('http_not_allowed', url, 'no http(s) allow prefix names it');
    // A prefix that names this host is the operator's explicit word, private address or not.
    if (match.some((p) => p.host !== undefined)) return;
    const host = hostOnly(u.host);
    const addresses = isIP(host) !== 0 ? [host] : await this.#resolve(host, url);
    const bad = addresses.find(isNonPublicAddress);
    if (bad !== undefined || addresses.length === 0) {
      throw this.#refuse('private_address', url, `${host} is ${bad ?? 'no'} address, loopback, link-local or private; an allow prefix naming the host opens it`);
    }
  }

  async #resolve(host: string, url: string): Promise<string[]> {
    try {
      return await this.#resolveHost(host);
    } catch (err) {
      throw this.#refuse('private_address', url, `cannot resolve ${host}: ${(err as Error).message}`);
    }
  }

  /**
   * A `lookup` for the worker's own HTTP connections: the same address rule at connect
   * time, so a name that resolved to a public address when checked cannot connect to a
   * private one later (DNS rebinding).
   */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, '', 0);
      const list = addresses;
      if (!this.#namedHosts.has(hostname)) {
        const bad = list.find((a) => isNonPublicAddress(a.address));
        if (bad !== undefined) {
          const e = Object.assign(new Error(`worker ${this.#id} refuses to connect to ${hostname} at ${bad.address} (loopback, link-local or private)`), { code: 'EACCES' });
          return callback(e, '', 0);
        }
      }
      if (options.all === true) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, list);
      const first = list[0];
      if (first === undefined) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '', 0);
      callback(null, first.address, first.family);
    });
  };

  #refuse(reason: RefusalReason, url: string, why: string): Error {
    const err = new ForbiddenPrefixError(`Worker ${this.#id} refuses ${url}: ${why}`, { url });
    reasons.set(err, reason);
    return err;
  }
}

const reasons = new WeakMap<object, RefusalReason>();

/** Why the worker refused a request with this error, or undefined when the error is no refusal. */
export function refusalReason(err: GranaryError): RefusalReason | undefined {
  const r = reasons.get(err);
  if (r !== undefined) return r;
  switch (err.code) {
    case ErrorCodes.UNAUTHORIZED:
      return 'unauthorized';
    case ErrorCodes.FORBIDDEN_PREFIX:
      return 'prefix';
    case ErrorCodes.PATH_ESCAPE:
      return 'path_escape';
    default:
      return undefined;
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function hostOnly(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']'));
  const colon = host.lastIndexOf(':');
  return colon === -1 ? host : host.slice(0, colon);
}

/**
 * Refuse to start a worker that serves other machines with no token, unless the caller
 * said `insecure: true`; returns the warning to log when it did.
 */
export function checkBind(host: string, token: string | undefined, insecure: boolean | undefined): string | undefined {
  if (insecure !== undefined && typeof insecure !== 'boolean') {
    throw new InvalidArgumentError(`Expected \`insecure\` to be a boolean, got \`${show(insecure)}\` (${typeof insecure})`);
  }
  if (isLoopbackHost(host) || token !== undefined) return undefined;
  if (insecure !== true) {
    throw new ConfigError(
      `Refusing to serve on ${host} without a token: any machine that reaches it could read through this worker. ` +
        'Set a token (token / --token / GRANARY_TOKEN), bind to 127.0.0.1, or pass insecure: true (--insecure) to accept it',
    );
  }
  return `WARNING: serving on ${host} with no token (insecure): anyone who can reach this port can read every store this worker may read`;
}
