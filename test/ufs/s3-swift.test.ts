import { S3Ufs, type S3UfsOptions } from '../../src/ufs/s3.js';
import { requireOrSkip } from '../support/services.js';
import { startSwift, swiftUnavailableReason } from '../support/swift.js';
import { describeConformance } from './conformance.js';

const reason = swiftUnavailableReason();
const available = requireOrSkip('OpenStack Swift', reason === undefined, reason ?? '');

describeConformance('s3 (OpenStack Swift s3api)', { writable: true, buckets: true, credentials: true }, async () => {
  if (!available) return undefined;
  const swift = await startSwift({ buckets: ['conformance'] });
  if (!swift) return undefined;
  const options: S3UfsOptions = {
    endpoint: swift.endpoint,
    region: swift.region,
    credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: swift.secretAccessKey },
    partSize: 1024 * 1024,
    parallelism: 4,
  };
  const ufs = new S3Ufs(options);
  return {
    ufs,
    base: 's3://conformance/suite/',
    listable: true,
    missingBucketUrl: 's3://no-such-bucket-here/x.bin',
    // Swift verifies SigV4 signatures, so a wrong secret for a real user is refused.
    badCredentials: () => new S3Ufs({ ...options, credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: 'wrong-secret' } }),
    async close() {
      await ufs.close();
      await swift.close();
    },
  };
});
