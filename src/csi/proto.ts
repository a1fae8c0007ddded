/**
 * proto/csi.proto loaded with @grpc/proto-loader, and the TypeScript shapes of the
 * messages as the loader hands them over (snake_case keys, enums as their names,
 * int64 as numbers, unset fields as their defaults, `oneofs` naming the set member).
 */
import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type GrpcObject, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type Options } from '@grpc/proto-loader';
import { InternalError } from '../errors.js';

/** src/csi and dist/csi both sit two levels below the package root, where proto/ ships. */
export const PROTO_PATH = fileURLToPath(new URL('../../proto/csi.proto', import.meta.url));

export const LOADER_OPTIONS: Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

export interface CsiServices {
  Identity: ServiceDefinition;
  Node: ServiceDefinition;
  /** The package object, for clients (`new csi.Identity(address, credentials)`). */
  pkg: GrpcObject;
}

let loaded: CsiServices | undefined;

export function csiServices(): CsiServices {
  if (loaded) return loaded;
  const pkg = loadPackageDefinition(loadSync(PROTO_PATH, LOADER_OPTIONS));
  const v1 = (pkg.csi as GrpcObject | undefined)?.v1 as GrpcObject | undefined;
  const service = (name: string): ServiceDefinition => {
    const ctor = v1?.[name] as { service?: ServiceDefinition } | undefined;
    if (!ctor?.service) throw new InternalError(`${PROTO_PATH} has no service csi.v1.${name}`);
    return ctor.service;
  };
  loaded = { Identity: service('Identity'), Node: service('Node'), pkg };
  return loaded;
}

export type AccessModeName =
  | 'UNKNOWN'
  | 'SINGLE_NODE_WRITER'
  | 'SINGLE_NODE_READER_ONLY'
  | 'MULTI_NODE_READER_ONLY'
  | 'MULTI_NODE_SINGLE_WRITER'
  | 'MULTI_NODE_MULTI_WRITER'
  | 'SINGLE_NODE_SINGLE_WRITER'
  | 'SINGLE_NODE_MULTI_WRITER';

export interface VolumeCapability {
  block?: Record<string, never> | null;
  mount?: { fs_type: string; mount_flags: string[]; volume_mount_group: string } | null;
  access_mode?: { mode: AccessModeName } | null;
  access_type?: 'block' | 'mount';
}

export interface NodePublishVolumeRequest {
  volume_id: string;
  publish_context: Record<string, string>;
  staging_target_path: string;
  target_path: string;
  volume_capability?: VolumeCapability | null;
  readonly: boolean;
  secrets: Record<string, string>;
  volume_context: Record<string, string>;
}

export interface NodeUnpublishVolumeRequest {
  volume_id: string;
  target_path: string;
}

export interface NodeGetVolumeStatsRequest {
  volume_id: string;
  volume_path: string;
  staging_target_path: string;
}

export interface VolumeUsage {
  available: number;
  total: number;
  used: number;
  unit: 'UNKNOWN' | 'BYTES' | 'INODES';
}

export interface NodeGetVolumeStatsResponse {
  usage: VolumeUsage[];
  volume_condition: { abnormal: boolean; message: string };
}
