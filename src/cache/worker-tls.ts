/**
 * TLS between clients and cache workers. A worker given a certificate and key serves
 * HTTPS (same HTTP/1.1 keep-alive server, over `node:https`); its URL is then
 * `https://…`, in static lists and in its etcd registration alike. A client verifies
 * every worker's certificate, against `tlsCa` when given, else the system's CAs; there
 * is no option to skip verification.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { ConfigError, InvalidArgumentError } from '../errors.js';
import { show } from '../util/validate.js';

/** The worker's own certificate: PEM files, read once at start (restart the worker to rotate them). */
export interface WorkerTlsOptions {
  /** PEM certificate (chain) the worker presents; its subjectAltName must match the host clients use. */
  certFile: string;
  /** PEM private key of `certFile`. */
  keyFile: string;
}

/** The key material of a worker's TLS, read from its files. */
export interface ServerTls {
  cert: Buffer;
  key: Buffer;
}

function readPem(what: string, file: unknown): Buffer {
  if (typeof file !== 'string' || file === '') throw new InvalidArgumentError(`Expected \`${what}\` to be a file path, got \`${show(file)}\` (${typeof file})`);
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    // The path, never the content: a key file's bytes must not reach a message.
    throw new ConfigError(`${what} ${JSON.stringify(file)} cannot be read (${code})`, { cause: err });
  }
}

/** Check `tls` and read its files; undefined when the worker serves plain HTTP. */
export function loadServerTls(tls: unknown): ServerTls | undefined {
  if (tls === undefined) return undefined;
  if (typeof tls !== 'object' || tls === null) throw new InvalidArgumentError(`Expected \`tls\` to be { certFile, keyFile }, got \`${show(tls)}\` (${typeof tls})`);
  const o = tls as Partial<WorkerTlsOptions>;
  if (o.certFile === undefined || o.keyFile === undefined) throw new InvalidArgumentError('Expected `tls.certFile` and `tls.keyFile` together');
  return { cert: readPem('tls.certFile', o.certFile), key: readPem('tls.keyFile', o.keyFile) };
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * The worker's server: HTTPS when `tls` is given, else HTTP; the same handler and options
 * either way. A TLS handshake must finish within `handshakeTimeoutMs` (the headers
 * timeout), so a peer cannot hold a connection by trickling its handshake instead.
 */
export function createWorkerServer(tls: ServerTls | undefined, options: ServerOptions & { handshakeTimeoutMs: number }, handler: Handler): Server {
  const { handshakeTimeoutMs, ...http } = options;
  if (tls === undefined) return createHttpServer(http, handler);
  try {
    // https.Server has every http.Server method the worker uses (closeIdleConnections & co.).
    return createHttpsServer({ ...http, cert: tls.cert, key: tls.key, handshakeTimeout: handshakeTimeoutMs }, handler);
  } catch (err) {
    throw new ConfigError(`The worker's TLS certificate or key is not usable: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The CA a client verifies workers against, read from `tlsCa`; undefined: the system's
 * CAs (Node's bundled list plus NODE_EXTRA_CA_CERTS).
 */
export function loadClientCa(tlsCa: unknown): Buffer | undefined {
  return tlsCa === undefined ? undefined : readPem('tlsCa', tlsCa);
}

/** OpenSSL's codes for a certificate the client cannot verify, or that names another host. */
const CERT_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** What went wrong connecting to a worker, in words that name a certificate problem as one. */
export function describeConnectError(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown; cause?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (code !== undefined && CERT_CODES.has(code)) {
    return `its TLS certificate is not trusted (${code}: ${message}); give the CA that signed it as tlsCa (--tls-ca, GRANARY_TLS_CA)`;
  }
  if (e?.cause !== undefined && e.cause !== err) {
    const inner = (e.cause as { code?: unknown }).code;
    if (typeof inner === 'string' && CERT_CODES.has(inner)) return describeConnectError(e.cause);
  }
  return message;
}
