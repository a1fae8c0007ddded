/**
 * One process of `npm run bench -- load`: `clients` concurrent loops over one
 * `CacheClient`, each making mixed requests for `seconds`, then one JSON line on stdout
 * with the latencies by kind and the errors. argv[2] is the JSON config.
 */
import { CacheClient } from '../src/cache/client.js';
import { SplitMix32 } from '../src/gen/prng.js';
import { KINDS, MIX, type Kind, type LoadClientConfig, type LoadClientResult } from './load-mix.js';

const KiB = 1024;

function pick(rng: SplitMix32): Kind {
  const x = rng.below(100);
  return (MIX.find(([, w]) => x < w) ?? MIX[0]!)[0];
}

async function one(fs: CacheClient, cfg: LoadClientConfig, rng: SplitMix32, kind: Kind): Promise<number> {
  const from = kind.startsWith('cached') ? cfg.hot : cfg.cold;
  const obj = from[rng.below(from.length)]!;
  switch (kind) {
    case 'stat':
      await fs.stat(obj.url);
      return 0;
    case 'list': {
      let n = 0;
      for await (const _ of fs.list(cfg.listPrefix)) n++;
      return n;
    }
    default: {
      // Small: 4-64 KiB; large: 256 KiB - 2 MiB, at a random offset.
      const length = kind.endsWith('small') ? 4 * KiB + rng.below(60 * KiB) : 256 * KiB + rng.below(1792 * KiB);
      const len = Math.min(length, obj.size);
      const offset = rng.below(obj.size - len + 1);
      return (await fs.read(obj.url, offset, len)).byteLength;
    }
  }
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as LoadClientConfig;
  const fs = new CacheClient({ workers: cfg.workers, ufs: { s3: cfg.s3 }, blockSize: 4 * 1024 * KiB, concurrency: 64 });
  const result: LoadClientResult = {
    ops: Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>,
    latenciesMs: Object.fromEntries(KINDS.map((k) => [k, []])) as unknown as Record<Kind, number[]>,
    errors: 0,
    errorSamples: [],
    bytes: 0,
  };
  process.stdout.write('started\n');
  const end = performance.now() + cfg.seconds * 1000;
  const loop = async (i: number): Promise<void> => {
    const rng = new SplitMix32(cfg.seed * 1000 + i);
    while (performance.now() < end) {
      const kind = pick(rng);
      const t = performance.now();
      try {
        // Not `result.bytes += await ...`: that reads `result.bytes` before the await and loses other loops' bytes.
        const n = await one(fs, cfg, rng, kind);
        result.bytes += n;
        result.latenciesMs[kind].push(Math.round((performance.now() - t) * 100) / 100);
        result.ops[kind]++;
      } catch (err) {
        result.errors++;
        if (result.errorSamples.length < 5) result.errorSamples.push(`${kind}: ${String(err)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: cfg.clients }, (_, i) => loop(i)));
  await fs.close();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
