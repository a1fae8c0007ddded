import { afterEach, describe, expect, it } from 'vitest';
import { staticCredentials } from '../../src/ufs/s3/lean.js';
import { SigV4Signer, uriEncode } from '../../src/ufs/s3/sigv4.js';
import { decodeXml, parseError, parseListPage } from '../../src/ufs/s3/xml.js';

describe('SigV4 signing of S3 requests', () => {
  it('matches the GET Bucket example of the AWS Signature Version 4 documentation', () => {
    const signer = new SigV4Signer({ accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' }, 'us-east-1');
    const headers = signer.sign({
      method: 'GET',
      host: 'examplebucket.s3.amazonaws.com',
      path: '/',
      query: [
        ['prefix', 'J'],
        ['max-keys', '2'],
      ],
      now: new Date('2013-05-24T00:00:00Z'),
    });
    expect(headers).toEqual({
      'x-amz-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
      'x-amz-date': '20130524T000000Z',
      authorization:
        'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7',
    });
  });

  it('signs and sends the session token of temporary credentials', () => {
    const signer = new SigV4Signer({ accessKeyId: 'AKID', secretAccessKey: 'secret', sessionToken: 'tok en' }, 'eu-west-1');
    const headers = signer.sign({ method: 'HEAD', host: 'h', path: '/b/k', query: [], now: new Date('2020-01-02T03:04:05Z') });
    expect(headers['x-amz-security-token']).toBe('tok en');
    expect(headers.authorization).toContain('SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token');
    expect(headers.authorization).toContain('Credential=AKID/20200102/eu-west-1/s3/aws4_request');
  });

  it('percent-encodes keys byte by byte, keeping only unreserved characters and slashes', () => {
    expect(uriEncode('odd/with space+plus%pct~._-', true)).toBe('odd/with%20space%2Bplus%25pct~._-');
    expect(uriEncode('a/b', false)).toBe('a%2Fb');
    expect(uriEncode('ü文', true)).toBe('%C3%BC%E6%96%87');
  });
});

describe('S3 XML answers', () => {
  it('parses a ListObjectsV2 page, decoding escaped keys and ETags', () => {
    const xml = `<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>
<Contents><Key>p/a&amp;b&lt;c&gt;.bin</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified><ETag>&quot;abc&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>p/&#x4E2D;&#20013;</Key><LastModified>2026-01-02T03:04:05.000Z</LastModified><ETag>"def-2"</ETag><Size>0</Size></Contents>
<NextContinuationToken>tok/+=</NextContinuationToken></ListBucketResult>`;
    const page = parseListPage(xml);
    expect(page.contents).toEqual([
      { key: 'p/a&b<c>.bin', size: 12, etag: '"abc"', lastModified: new Date('2026-01-02T03:04:05.000Z') },
      { key: 'p/中中', size: 0, etag: '"def-2"', lastModified: new Date('2026-01-02T03:04:05.000Z') },
    ]);
    expect(page.next).toBe('tok/+=');
    expect(parseListPage(xml.replace('<IsTruncated>true', '<IsTruncated>false')).next).toBeUndefined();
    expect(parseListPage('<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>')).toEqual({ contents: [], next: undefined });
  });

  it('reads the code and message of an error document', () => {
    expect(parseError('<?xml version="1.0"?><Error><Code>NoSuchKey</Code><Message>The key &quot;x&quot; does not exist.</Message></Error>')).toEqual({
      code: 'NoSuchKey',
      message: 'The key "x" does not exist.',
    });
    expect(parseError('')).toEqual({ code: undefined, message: undefined });
    expect(decodeXml('a &unknown; b')).toBe('a &unknown; b');
  });
});

describe('static credentials for lean requests', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });

  it('takes given credentials first, then the environment, else leaves the SDK chain', () => {
    process.env.AWS_ACCESS_KEY_ID = 'ENVID';
    process.env.AWS_SECRET_ACCESS_KEY = 'ENVSECRET';
    delete process.env.AWS_SESSION_TOKEN;
    expect(staticCredentials({ accessKeyId: 'a', secretAccessKey: 'b' })).toEqual({ accessKeyId: 'a', secretAccessKey: 'b' });
    expect(staticCredentials(undefined)).toEqual({ accessKeyId: 'ENVID', secretAccessKey: 'ENVSECRET' });
    process.env.AWS_SESSION_TOKEN = 'T';
    expect(staticCredentials(undefined)).toEqual({ accessKeyId: 'ENVID', secretAccessKey: 'ENVSECRET', sessionToken: 'T' });
    delete process.env.AWS_SECRET_ACCESS_KEY;
    expect(staticCredentials(undefined)).toBeUndefined();
  });
});
