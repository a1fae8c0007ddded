/**
 * Checking CSI requests before anything is mounted: required fields, the volume
 * capability, the `volume_context` keys and the `secrets` keys. Every failure is an
 * InvalidArgumentError naming the field; secret values never appear in a message.
 */
import { isAbsolute, normalize } from 'node:path';
import { InvalidArgumentError } from '../errors.js';
import { validateEndpoints, validateWorkerUrl } from '../cache/membership-options.js';
import { schemeOf } from '../ufs/url.js';
import { EPHEMERAL_CONTEXT_KEY, KUBELET_CONTEXT_PREFIX, SECRET_ENV, SECRET_KEYS, VOLUME_CONTEXT_KEYS } from './constants.js';
import type { NodePublishVolumeRequest } from './proto.js';
import type { MountSpec } from './state.js';

export function requireField(value: string, name: string, rpc: string): string {
  if (value === '') throw new InvalidArgumentError(`${rpc}: ${name} is required`);
  return value;
}

/** A target path: absolute, normalised, no trailing slash (the mount table's spelling). */
export function checkPath(value: string, name: string, rpc: string): string {
  requireField(value, name, rpc);
  if (!isAbsolute(value) || value.includes('\0')) throw new InvalidArgumentError(`${rpc}: ${name} must be an absolute path, got ${JSON.stringify(value)}`);
  const p = normalize(value);
  return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
}

function splitList(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

const CONTEXT_KEYS = new Set<string>(Object.values(VOLUME_CONTEXT_KEYS));

/** The mount a NodePublishVolume asks for, checked. */
export function publishSpec(req: NodePublishVolumeRequest): MountSpec {
  const rpc = 'NodePublishVolume';
  const cap = req.volume_capability;
  if (!cap) throw new InvalidArgumentError(`${rpc}: volume_capability is required`);
  if (cap.access_type === 'block' || cap.block) throw new InvalidArgumentError(`${rpc}: block access is not supported: granary volumes are file systems (use a mount volume_capability)`);
  if (!cap.mount) throw new InvalidArgumentError(`${rpc}: volume_capability needs access_type mount`);
  const mode = cap.access_mode?.mode ?? 'UNKNOWN';
  if (mode === 'UNKNOWN') throw new InvalidArgumentError(`${rpc}: volume_capability.access_mode is required`);
  const ctx = req.volume_context;
  const unknown = Object.keys(ctx).filter((k) => !CONTEXT_KEYS.has(k) && !k.startsWith(KUBELET_CONTEXT_PREFIX));
  if (unknown.length > 0) throw new InvalidArgumentError(`${rpc}: unknown volume_context key(s) ${unknown.join(', ')} (known: ${[...CONTEXT_KEYS].join(', ')})`);
  const source = ctx[VOLUME_CONTEXT_KEYS.source];
  if (source === undefined || source === '') throw new InvalidArgumentError(`${rpc}: volume_context.source (the store prefix URL to mount) is required`);
  schemeOf(source);
  const workers = ctx[VOLUME_CONTEXT_KEYS.workers] || undefined;
  const etcd = ctx[VOLUME_CONTEXT_KEYS.etcd] || undefined;
  const cluster = ctx[VOLUME_CONTEXT_KEYS.cluster] || undefined;
  if (workers !== undefined && etcd !== undefined) throw new InvalidArgumentError(`${rpc}: volume_context gives both workers and etcd; give one`);
  if (cluster !== undefined && etcd === undefined) throw new InvalidArgumentError(`${rpc}: volume_context.cluster needs volume_context.etcd`);
  if (workers !== undefined) {
    const list = splitList(workers);
    if (list.length === 0) throw new InvalidArgumentError(`${rpc}: volume_context.workers names no worker URL`);
    list.forEach((u, i) => validateWorkerUrl(u, `volume_context.workers[${i}]`));
  }
  if (etcd !== undefined) validateEndpoints(splitList(etcd), 'volume_context.etcd');
  return {
    source: source.endsWith('/') ? source : `${source}/`,
    workers,
    etcd,
    cluster,
    readonly: req.readonly,
    accessMode: mode,
    ephemeral: ctx[EPHEMERAL_CONTEXT_KEY] === 'true',
  };
}

const SECRET_KEY_SET = new Set<string>(Object.values(SECRET_KEYS));

/** The secrets as the mount's environment variables. Unknown keys are refused, by name only. */
export function secretEnv(secrets: Readonly<Record<string, string>>): Record<string, string> {
  const unknown = Object.keys(secrets).filter((k) => !SECRET_KEY_SET.has(k));
  if (unknown.length > 0) throw new InvalidArgumentError(`NodePublishVolume: unknown secret key(s) ${unknown.join(', ')} (known: ${[...SECRET_KEY_SET].join(', ')})`);
  const env: Record<string, string> = {};
  for (const [key, name] of Object.entries(SECRET_ENV)) {
    const v = secrets[SECRET_KEYS[key as keyof typeof SECRET_KEYS]];
    if (v !== undefined && v !== '') env[name] = v;
  }
  return env;
}

/** A function that replaces every occurrence of each secret value with `***`. */
export function redactor(values: Iterable<string>): (text: string) => string {
  const list = [...values].filter((v) => v.length >= 4).sort((a, b) => b.length - a.length);
  return (text) => list.reduce((t, v) => t.split(v).join('***'), text);
}
