/**
 * The plugin's request checks and error mapping, without mounting: what reaches the
 * mount from volume_context and secrets, what is refused, and which gRPC status each
 * granary code becomes.
 */
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { DRIVER_NAME } from '../../src/csi/constants.js';
import { mountArgs, type MounterOptions } from '../../src/csi/mounter.js';
import type { NodePublishVolumeRequest } from '../../src/csi/proto.js';
import { grpcStatusOf, socketPathOf } from '../../src/csi/server.js';
import { checkPath, publishSpec, redactor, secretEnv } from '../../src/csi/validate.js';
import { AlreadyExistsError, ConfigError, InvalidUrlError, NotFoundError, TimeoutError, UnavailableError } from '../../src/errors.js';

const req = (over: Partial<NodePublishVolumeRequest> = {}): NodePublishVolumeRequest => ({
  volume_id: 'v',
  publish_context: {},
  staging_target_path: '',
  target_path: '/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount',
  volume_capability: { mount: { fs_type: '', mount_flags: [], volume_mount_group: '' }, access_mode: { mode: 'MULTI_NODE_READER_ONLY' }, access_type: 'mount' },
  readonly: true,
  secrets: {},
  volume_context: { source: 's3://datasets/train' },
  ...over,
});

const mounter: MounterOptions = { granary: ['node', 'main.js'], defaults: { etcd: 'http://etcd:2379', cluster: 'prod' }, extraArgs: ['--s3-region', 'eu-west-1'], secretEnv: {}, mountTimeoutMs: 1000, commandTimeoutMs: 1000, mountCgroup: 'off', requireMountCgroup: false };

describe('NodePublishVolume checks', () => {
  it('takes the source as a prefix and ignores the keys the kubelet adds', () => {
    const spec = publishSpec(req({ volume_context: { source: 's3://datasets/train', 'csi.storage.k8s.io/ephemeral': 'true', 'csi.storage.k8s.io/pod.name': 'p' } }));
    expect(spec).toMatchObject({ source: 's3://datasets/train/', ephemeral: true, readonly: true, accessMode: 'MULTI_NODE_READER_ONLY' });
  });

  it('refuses unknown keys, a missing or unsupported source, both workers and etcd, and cluster without etcd', () => {
    expect(() => publishSpec(req({ volume_context: { source: 's3://a/', sorce: 'x' } }))).toThrow(/unknown volume_context key\(s\) sorce/);
    expect(() => publishSpec(req({ volume_context: {} }))).toThrow(/source .* is required/);
    expect(() => publishSpec(req({ volume_context: { source: 'gs://a/' } }))).toThrow(/Unsupported scheme/);
    expect(() => publishSpec(req({ volume_context: { source: 's3://a/', workers: 'http://w:1', etcd: 'http://e:2379' } }))).toThrow(/both workers and etcd/);
    expect(() => publishSpec(req({ volume_context: { source: 's3://a/', cluster: 'prod' } }))).toThrow(/cluster needs volume_context.etcd/);
    expect(() => publishSpec(req({ volume_context: { source: 's3://a/', workers: 'ftp://w' } }))).toThrow(/workers\[0\]/);
  });

  it('refuses block access and a capability without an access mode', () => {
    expect(() => publishSpec(req({ volume_capability: { block: {}, access_mode: { mode: 'MULTI_NODE_READER_ONLY' }, access_type: 'block' } }))).toThrow(/block access/);
    expect(() => publishSpec(req({ volume_capability: { mount: { fs_type: '', mount_flags: [], volume_mount_group: '' }, access_mode: null } }))).toThrow(/access_mode/);
    expect(() => publishSpec(req({ volume_capability: null }))).toThrow(/volume_capability is required/);
  });

  it('normalises target paths and refuses relative ones', () => {
    expect(checkPath('/a/b/../c/', 'target_path', 'X')).toBe('/a/c');
    expect(() => checkPath('a/b', 'target_path', 'X')).toThrow(/absolute path/);
  });
});

describe('secrets', () => {
  it('become the mount environment variables and nothing else', () => {
    expect(secretEnv({ token: 't0k', awsAccessKeyId: 'AK', awsSecretAccessKey: 'SK', etcdPassword: 'pw' })).toEqual({
      GRANARY_TOKEN: 't0k',
      AWS_ACCESS_KEY_ID: 'AK',
      AWS_SECRET_ACCESS_KEY: 'SK',
      GRANARY_ETCD_PASSWORD: 'pw',
    });
  });

  it('with an unknown key are refused by the key alone', () => {
    expect(() => secretEnv({ tokn: 'very-secret-value' })).toThrow(/tokn/);
    try {
      secretEnv({ tokn: 'very-secret-value' });
    } catch (err) {
      expect((err as Error).message).not.toContain('very-secret-value');
    }
  });

  it('are replaced in any text by the redactor, longest first', () => {
    const redact = redactor(['abcd1234', 'abcd1234xyz', 'ab']);
    expect(redact('x abcd1234xyz y abcd1234 ab')).toBe('x *** y *** ab');
  });

  it('never go into the mount command line', () => {
    const args = mountArgs({ ...mounter, secretEnv: { GRANARY_TOKEN: 'plugin-token' } }, publishSpec(req()), '/state/mnt-1', '/state/mount.log');
    expect(args.join(' ')).not.toContain('plugin-token');
    expect(args).toEqual(['mount', 's3://datasets/train/', '/state/mnt-1', '--log-file', '/state/mount.log', '--etcd', 'http://etcd:2379', '--cluster', 'prod', '--s3-region', 'eu-west-1']);
  });
});

describe('the mount command line', () => {
  it("uses the volume's own workers instead of the plugin's etcd", () => {
    const spec = publishSpec(req({ volume_context: { source: 's3://a/', workers: 'http://w1:7070,http://w2:7070' } }));
    expect(mountArgs(mounter, spec, '/s', '/l')).toEqual(['mount', 's3://a/', '/s', '--log-file', '/l', '--workers', 'http://w1:7070,http://w2:7070', '--s3-region', 'eu-west-1']);
  });
});

describe('errors to the CO', () => {
  it('map granary codes to gRPC status codes', () => {
    expect(grpcStatusOf(new AlreadyExistsError('x'))).toBe(status.ALREADY_EXISTS);
    expect(grpcStatusOf(new NotFoundError('x'))).toBe(status.NOT_FOUND);
    expect(grpcStatusOf(new InvalidUrlError('x'))).toBe(status.INVALID_ARGUMENT);
    expect(grpcStatusOf(new ConfigError('x'))).toBe(status.INVALID_ARGUMENT);
    expect(grpcStatusOf(new TimeoutError('x'))).toBe(status.DEADLINE_EXCEEDED);
    expect(grpcStatusOf(new UnavailableError('x'))).toBe(status.UNAVAILABLE);
    expect(grpcStatusOf(new Error('x'))).toBe(status.INTERNAL);
  });

  it('read unix endpoints in both spellings', () => {
    expect(socketPathOf('unix:///csi/csi.sock')).toBe('/csi/csi.sock');
    expect(socketPathOf('unix:/csi/csi.sock')).toBe('/csi/csi.sock');
    expect(() => socketPathOf('tcp://0.0.0.0:1')).toThrow(/unix:/);
    expect(DRIVER_NAME.length).toBeLessThanOrEqual(63);
  });
});
