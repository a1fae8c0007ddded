/**
 * The hints wire format (`POST /v1/hints`): random JSON, and random well-typed
 * requests with extreme numbers, go through `parseHintRequest` and the registry.
 * A body is accepted or refused with `GRANARY_ERR_BAD_REQUEST`; an accepted one never
 * makes the registry throw or hold more than its limits.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HintRegistry, parseHintRequest } from '../../src/cache/hints.js';
import { ErrorCodes, isGranaryError } from '../../src/errors.js';
import { fuzzParams, fuzzTimeout } from './fuzz.js';

const CI_RUNS = 1000;
const MAX_PAGES = 5000;

function parseOrRefuse(body: unknown): ReturnType<typeof parseHintRequest> | undefined {
  try {
    return parseHintRequest(body);
  } catch (err) {
    if (!isGranaryError(err) || err.code !== ErrorCodes.BAD_REQUEST) throw err;
    return undefined;
  }
}

const num = fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.constantFrom(0, -1, 2 ** 53, 2 ** 53 + 2, Number.MAX_VALUE, 1e300, -0, 0.5));
const access = fc.record(
  {
    url: fc.oneof(fc.constant('s3://bucket/a'), fc.string(), fc.webUrl(), fc.constant('file:///etc/passwd'), fc.constant('s3://bucket/../x')),
    etag: fc.oneof(fc.constant('"e"'), fc.string()),
    offset: num,
    length: num,
    pos: num,
  },
  { requiredKeys: [] },
);
const request = fc.record(
  {
    job: fc.oneof(fc.constant('job'), fc.string({ maxLength: 300 })),
    cursor: num,
    readFrom: num,
    lookahead: num,
    ttlMs: num,
    reset: fc.oneof(fc.boolean(), fc.constant('true')),
    end: fc.oneof(fc.boolean(), fc.constant(1)),
    accesses: fc.oneof(fc.array(access, { maxLength: 20 }), fc.anything()),
  },
  { requiredKeys: [] },
);

describe('the hints wire format', () => {
  it(
    'refuses any JSON value that is not a request with a coded error',
    () => {
      fc.assert(
        fc.property(fc.jsonValue(), (v) => {
          parseOrRefuse(v);
        }),
        fuzzParams(CI_RUNS),
      );
    },
    fuzzTimeout(CI_RUNS, 5),
  );

  it(
    'applies every request it accepts within the registry’s limits',
    () => {
      let now = 0;
      const registry = new HintRegistry({ pageSize: 4096, maxJobs: 4, maxPagesPerJob: MAX_PAGES, now: () => now });
      fc.assert(
        fc.property(fc.array(fc.oneof(request, fc.anything()), { minLength: 1, maxLength: 5 }), fc.nat(100_000), (bodies, dt) => {
          now += dt;
          for (const body of bodies) {
            const req = parseOrRefuse(body);
            if (req === undefined) continue;
            // What a worker's client could send is a string, number or boolean: nothing else survives.
            expect(typeof req.job).toBe('string');
            for (const a of req.accesses ?? []) {
              expect(Number.isSafeInteger(a.offset) && Number.isSafeInteger(a.length) && Number.isSafeInteger(a.pos)).toBe(true);
            }
            const res = registry.apply(req);
            expect(res.accepted + res.dropped).toBeLessThanOrEqual(req.accesses?.length ?? 0);
          }
          const s = registry.stats();
          expect(s.jobs).toBeLessThanOrEqual(4);
          expect(s.pages).toBeLessThanOrEqual(4 * MAX_PAGES);
          expect(registry.prefetchCandidates(100).length).toBeLessThanOrEqual(100);
          expect(registry.horizon()).toBeGreaterThanOrEqual(0);
          registry.nextUse('s3://bucket/a');
        }),
        fuzzParams(CI_RUNS),
      );
    },
    fuzzTimeout(CI_RUNS, 10),
  );
});
