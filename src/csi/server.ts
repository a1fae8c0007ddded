/**
 * The gRPC side of the plugin: the Identity and Node services on a unix socket, each
 * call logged in one line (method, volume, target, outcome; never secrets, never the
 * request), and granary's coded errors turned into the gRPC status codes a CO expects.
 */
import { lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { ConfigError, ErrorCodes, isGranaryError } from '../errors.js';
import { DRIVER_NAME } from './constants.js';
import type { NodeService } from './node.js';
import { redactor } from './validate.js';
import { csiServices, type NodeGetVolumeStatsRequest, type NodePublishVolumeRequest, type NodeUnpublishVolumeRequest } from './proto.js';

/** The gRPC status for an error thrown while serving a call. */
export function grpcStatusOf(err: unknown): status {
  if (!isGranaryError(err)) return status.INTERNAL;
  switch (err.code) {
    case ErrorCodes.INVALID_ARGUMENT:
    case ErrorCodes.INVALID_URL:
    case ErrorCodes.UNSUPPORTED_SCHEME:
    case ErrorCodes.CONFIG:
      return status.INVALID_ARGUMENT;
    case ErrorCodes.NOT_FOUND:
    case ErrorCodes.NO_SUCH_BUCKET:
      return status.NOT_FOUND;
    case ErrorCodes.ALREADY_EXISTS:
      return status.ALREADY_EXISTS;
    case ErrorCodes.ACCESS_DENIED:
    case ErrorCodes.UNAUTHORIZED:
    case ErrorCodes.FORBIDDEN_PREFIX:
      return status.PERMISSION_DENIED;
    case ErrorCodes.TIMEOUT:
      return status.DEADLINE_EXCEEDED;
    case ErrorCodes.UNAVAILABLE:
      return status.UNAVAILABLE;
    case ErrorCodes.UNSUPPORTED_OPERATION:
      return status.FAILED_PRECONDITION;
    default:
      return status.INTERNAL;
  }
}

/** `unix:///abs/path` or `unix:/abs/path` -> the socket path. */
export function socketPathOf(endpoint: string): string {
  const m = /^unix:\/\/(\/.*)$/.exec(endpoint) ?? /^unix:(\/.*)$/.exec(endpoint);
  if (!m?.[1]) throw new ConfigError(`--endpoint must be unix:///absolute/path.sock, got ${JSON.stringify(endpoint)}`);
  return m[1];
}

export interface CsiServerOptions {
  endpoint: string;
  node: NodeService;
  version: string;
  log: (line: string) => void;
}

export interface CsiServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

type Handler = (req: Record<string, unknown>) => Promise<object>;

function describeCall(method: string, req: Record<string, unknown>): string {
  const parts = [method];
  for (const key of ['volume_id', 'target_path', 'volume_path']) {
    const v = req[key];
    if (typeof v === 'string' && v !== '') parts.push(`${key}=${v}`);
  }
  return parts.join(' ');
}

function unary(method: string, fn: Handler, log: (line: string) => void, quiet = false) {
  return (call: ServerUnaryCall<Record<string, unknown>, object>, callback: sendUnaryData<object>): void => {
    const what = describeCall(method, call.request);
    fn(call.request).then(
      (res) => {
        if (!quiet) log(`${what}: OK`);
        callback(null, res);
      },
      (err: unknown) => {
        const code = grpcStatusOf(err);
        // Whatever an error says, no secret of the request leaves in it.
        const secrets = call.request.secrets;
        const redact = redactor(secrets && typeof secrets === 'object' ? Object.values(secrets as Record<string, string>) : []);
        const message = redact(err instanceof Error ? err.message : String(err));
        log(`${what}: ${status[code]}: ${isGranaryError(err) ? `${err.code}: ` : ''}${message}`);
        callback({ code, details: message });
      },
    );
  };
}

/** Listen on the endpoint's unix socket (a stale socket file from a killed plugin is replaced). */
export async function startCsiServer(o: CsiServerOptions): Promise<CsiServer> {
  const socketPath = socketPathOf(o.endpoint);
  mkdirSync(dirname(socketPath), { recursive: true });
  try {
    if (lstatSync(socketPath).isSocket()) unlinkSync(socketPath);
    else throw new ConfigError(`${socketPath} exists and is not a socket`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const { Identity, Node } = csiServices();
  const { node, log } = o;
  const identity: UntypedServiceImplementation = {
    GetPluginInfo: unary('GetPluginInfo', () => Promise.resolve({ name: DRIVER_NAME, vendor_version: o.version, manifest: {} }), log, true),
    // A node-only plugin: no Controller service, no topology constraints.
    GetPluginCapabilities: unary('GetPluginCapabilities', () => Promise.resolve({ capabilities: [] }), log, true),
    Probe: unary('Probe', () => Promise.resolve({ ready: { value: true } }), log, true),
  };
  const nodeImpl: UntypedServiceImplementation = {
    NodeGetCapabilities: unary('NodeGetCapabilities', () => Promise.resolve({ capabilities: [{ rpc: { type: 'GET_VOLUME_STATS' } }, { rpc: { type: 'VOLUME_CONDITION' } }] }), log, true),
    NodeGetInfo: unary('NodeGetInfo', () => Promise.resolve({ node_id: node.nodeId, max_volumes_per_node: node.maxVolumes }), log, true),
    NodePublishVolume: unary('NodePublishVolume', async (req) => (await node.publish(req as unknown as NodePublishVolumeRequest), {}), log),
    NodeUnpublishVolume: unary('NodeUnpublishVolume', async (req) => (await node.unpublish(req as unknown as NodeUnpublishVolumeRequest), {}), log),
    NodeGetVolumeStats: unary('NodeGetVolumeStats', (req) => node.stats(req as unknown as NodeGetVolumeStatsRequest), log, true),
  };
  const server = new Server();
  server.addService(Identity, identity);
  server.addService(Node, nodeImpl);
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix:${socketPath}`, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
  let closed: Promise<void> | undefined;
  return {
    socketPath,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
      })),
  };
}
