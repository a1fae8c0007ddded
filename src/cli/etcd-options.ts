/**
 * The command line's etcd security flags (`--etcd-user`, `--etcd-password-file`,
 * `--etcd-ca`, `--etcd-cert`, `--etcd-key`) and how their values, with the
 * `GRANARY_ETCD_*` environment variables and the config file's `cluster` keys, become
 * the library's `etcd.auth` and `etcd.tls`. The password has no flag (a command line
 * shows in `ps`): `GRANARY_ETCD_PASSWORD`, a config file, or `--etcd-password-file`.
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import type { EtcdSecurityOptions } from '../cache/etcd-security.js';
import { ConfigError } from '../errors.js';

/** The etcd security values after flags, environment and config file are settled. */
export interface EtcdSecurityValues {
  etcdUser?: string | undefined;
  etcdPassword?: string | undefined;
  etcdPasswordFile?: string | undefined;
  etcdCa?: string | undefined;
  etcdCert?: string | undefined;
  etcdKey?: string | undefined;
}

/** The config keys (section `cluster`) these flags set. */
export const ETCD_SECURITY_KEYS = ['etcdUser', 'etcdPassword', 'etcdPasswordFile', 'etcdCa', 'etcdCert', 'etcdKey'] as const;

/** Add the etcd security flags to `cmd`. */
export function addEtcdSecurityOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--etcd-user <name>', 'etcd user (etcd with auth enabled); the password comes from GRANARY_ETCD_PASSWORD or --etcd-password-file'))
    .addOption(new Option('--etcd-password-file <file>', 'file holding the etcd password (one line)'))
    .addOption(new Option('--etcd-ca <file>', 'PEM CA that signed etcd\'s certificate (https:// endpoints; default: the system CAs)'))
    .addOption(new Option('--etcd-cert <file>', 'PEM client certificate for etcd (an etcd with --client-cert-auth); needs --etcd-key'))
    .addOption(new Option('--etcd-key <file>', 'PEM private key of --etcd-cert'));
}

/** `etcd.auth` and `etcd.tls` from the settled values; a password file that cannot be read is a ConfigError naming it. */
export function etcdSecurityFrom(v: EtcdSecurityValues): EtcdSecurityOptions {
  const out: EtcdSecurityOptions = {};
  let password = v.etcdPassword;
  if (password !== undefined && v.etcdPasswordFile !== undefined) {
    throw new ConfigError('Give the etcd password by GRANARY_ETCD_PASSWORD (or the config file) or by --etcd-password-file, not both');
  }
  if (v.etcdPasswordFile !== undefined) {
    try {
      password = readFileSync(v.etcdPasswordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
      throw new ConfigError(`--etcd-password-file ${JSON.stringify(v.etcdPasswordFile)} cannot be read (${code})`, { cause: err });
    }
    if (password === '') throw new ConfigError(`--etcd-password-file ${JSON.stringify(v.etcdPasswordFile)} is empty`);
  }
  if (v.etcdUser !== undefined) {
    if (password === undefined) throw new ConfigError('--etcd-user needs a password: GRANARY_ETCD_PASSWORD or --etcd-password-file');
    out.auth = { username: v.etcdUser, password };
  } else if (password !== undefined) {
    throw new ConfigError('An etcd password needs --etcd-user (or GRANARY_ETCD_USER)');
  }
  if (v.etcdCa !== undefined || v.etcdCert !== undefined || v.etcdKey !== undefined) {
    if ((v.etcdCert === undefined) !== (v.etcdKey === undefined)) throw new ConfigError('--etcd-cert and --etcd-key go together');
    out.tls = { caFile: v.etcdCa, certFile: v.etcdCert, keyFile: v.etcdKey };
  }
  return out;
}
