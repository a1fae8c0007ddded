/**
 * How granary authenticates to etcd: a user and password (etcd's `auth enable`), and
 * TLS with an optional CA and client certificate (etcd's `--client-cert-auth`). The
 * options are plain data (file paths and strings), so they travel to other threads
 * as they are; the files are read once, when a membership or registration is built.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { ConfigError, InvalidArgumentError } from '../errors.js';
import { describe } from './membership-options.js';

/** etcd user and password (`etcdctl user add`, `etcdctl auth enable`). */
export interface EtcdAuthOptions {
  username: string;
  /** Never logged and never part of an error message. */
  password: string;
}

/** TLS to etcd: used for `https://` endpoints. Without `caFile`, the system's CAs are trusted. */
export interface EtcdTlsOptions {
  /** PEM file of the CA that signed etcd's server certificate. */
  caFile?: string | undefined;
  /** PEM client certificate (chain), for an etcd started with `--client-cert-auth`; needs `keyFile`. */
  certFile?: string | undefined;
  /** PEM private key of `certFile`. */
  keyFile?: string | undefined;
}

/** The options every etcd user (worker registration, client membership) shares besides its endpoints. */
export interface EtcdSecurityOptions {
  auth?: EtcdAuthOptions | undefined;
  tls?: EtcdTlsOptions | undefined;
}

/** What etcd3's client takes: `auth` and `credentials` as in its `IOptions`. */
export interface EtcdClientSecurity {
  auth?: { username: string; password: string };
  credentials?: { rootCertificate: Buffer; privateKey?: Buffer; certChain?: Buffer };
  /** Whether any endpoint is `https://`. */
  tls: boolean;
}

function readPem(option: string, file: unknown): Buffer {
  if (typeof file !== 'string' || file === '') {
    throw new InvalidArgumentError(`Expected \`${option}\` to be a file path, got ${describe(file)}`);
  }
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError(`etcd ${option} ${JSON.stringify(file)} cannot be read (${code})`, { cause: err });
  }
}

/**
 * Check `auth` and `tls` against `endpoints` and read the TLS files (once).
 * `https://` endpoints use TLS; `tls` with an `http://` endpoint, or a mix of both
 * schemes, is refused. A missing or unreadable file is a `ConfigError` naming it.
 */
export function resolveEtcdSecurity(endpoints: readonly string[], options: EtcdSecurityOptions): EtcdClientSecurity {
  const https = endpoints.filter((e) => e.startsWith('https:')).length;
  if (https !== 0 && https !== endpoints.length) {
    throw new InvalidArgumentError(`Expected \`endpoints\` to be all http:// or all https://, got ${endpoints.join(',')}`);
  }
  const out: EtcdClientSecurity = { tls: https !== 0 };
  const { auth, tls } = options;
  if (auth !== undefined) {
    if (typeof auth !== 'object' || auth === null || typeof auth.username !== 'string' || auth.username === '') {
      throw new InvalidArgumentError('Expected `etcd.auth` to be { username, password } with a non-empty username');
    }
    // Not `describe(auth.password)`: the password must never reach a message.
    if (typeof auth.password !== 'string' || auth.password === '') {
      throw new InvalidArgumentError('Expected `etcd.auth.password` to be a non-empty string');
    }
    out.auth = { username: auth.username, password: auth.password };
  }
  if (tls !== undefined) {
    if (typeof tls !== 'object' || tls === null) {
      throw new InvalidArgumentError(`Expected \`etcd.tls\` to be { caFile?, certFile?, keyFile? }, got ${describe(tls)}`);
    }
    if (!out.tls) {
      throw new InvalidArgumentError(`\`etcd.tls\` needs https:// endpoints, got ${endpoints.join(',')}`);
    }
    if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
      throw new InvalidArgumentError('Expected `etcd.tls.certFile` and `etcd.tls.keyFile` together');
    }
    const ca = tls.caFile === undefined ? undefined : readPem('tls.caFile', tls.caFile);
    const cert = tls.certFile === undefined ? undefined : readPem('tls.certFile', tls.certFile);
    const key = tls.keyFile === undefined ? undefined : readPem('tls.keyFile', tls.keyFile);
    if (ca !== undefined || cert !== undefined) {
      // etcd3 passes these to grpc.credentials.createSsl, which needs roots alongside a
      // client certificate: without a CA file, Node's bundled CAs.
      out.credentials = {
        rootCertificate: ca ?? Buffer.from(rootCertificates.join('\n')),
        ...(key !== undefined ? { privateKey: key } : {}),
        ...(cert !== undefined ? { certChain: cert } : {}),
      };
    }
  }
  return out;
}

