/**
 * Value kinds of configuration keys, as zod schemas that take what each source gives:
 * a string from the environment, any JSON value from the config file, an already
 * parsed value from a command-line flag. Each produces one typed value or one issue
 * whose message says what was expected.
 */
import { z } from 'zod';

export type ValueSchema<T> = z.ZodType<T, unknown>;

function kind<T>(expected: string, parse: (v: unknown) => T | undefined): ValueSchema<T> {
  return z.unknown().transform((v, ctx) => {
    const out = parse(v);
    if (out === undefined) {
      ctx.addIssue({ code: 'custom', message: `expected ${expected}` });
      return z.NEVER;
    }
    return out;
  });
}

const INT_RE = /^\d+(?:_\d+)*$/;

function range(min: number, max: number): string {
  return max === Number.MAX_SAFE_INTEGER ? `from ${min} and up` : `from ${min} to ${max}`;
}

/** An integer: a JSON number, or digits (`_` allowed as a separator). */
export function int(min: number, max = Number.MAX_SAFE_INTEGER): ValueSchema<number> {
  return kind(`an integer ${range(min, max)}`, (v) => {
    const n = typeof v === 'number' ? v : typeof v === 'string' && INT_RE.test(v.trim()) ? Number(v.trim().replaceAll('_', '')) : NaN;
    return Number.isSafeInteger(n) && n >= min && n <= max ? n : undefined;
  });
}

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
const SIZE_RE = /^(\d+(?:_\d+)*)\s*([kmgt]?)(?:i?b)?$/i;

/** Parse a byte size the way every granary flag does: `4096`, `64k`, `8MiB`, `2GB` (units are powers of 1024). */
export function parseBytes(v: unknown): number {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v : NaN;
  if (typeof v !== 'string') return NaN;
  const m = SIZE_RE.exec(v.trim());
  return m?.[1] === undefined ? NaN : Number(m[1].replaceAll('_', '')) * (UNITS[(m[2] ?? '').toLowerCase()] ?? NaN);
}

/** A byte size: a JSON number of bytes, or `64k`, `8MiB`, `2GB` (powers of 1024). */
export function bytes(min: number, max = Number.MAX_SAFE_INTEGER): ValueSchema<number> {
  return kind(`a byte size ${range(min, max)} (like 4096, 64k, 8MiB)`, (v) => {
    const n = parseBytes(v);
    return Number.isSafeInteger(n) && n >= min && n <= max ? n : undefined;
  });
}

const DURATION_RE = /^(\d+(?:_\d+)*)\s*(ms|s|m|h)$/;
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration in ms: a JSON number of milliseconds, or `500ms`, `10s`, `2m`, `1h`. */
export function duration(minMs: number, maxMs = Number.MAX_SAFE_INTEGER): ValueSchema<number> {
  return kind(`a duration ${range(minMs, maxMs)} ms (like 500ms, 10s, 2m)`, (v) => {
    let n = NaN;
    if (typeof v === 'number') n = v;
    else if (typeof v === 'string') {
      const t = v.trim();
      const m = DURATION_RE.exec(t);
      n = t === '0' ? 0 : m?.[1] === undefined ? NaN : Number(m[1].replaceAll('_', '')) * (DURATION_UNITS[m[2] ?? ''] ?? NaN);
    }
    return Number.isSafeInteger(n) && n >= minMs && n <= maxMs ? n : undefined;
  });
}

/** A boolean: JSON true/false, or `true`, `false`, `1`, `0`, `yes`, `no`. */
export function bool(): ValueSchema<boolean> {
  return kind('true or false', (v) => {
    if (typeof v === 'boolean') return v;
    if (typeof v !== 'string') return undefined;
    const t = v.trim().toLowerCase();
    if (['true', '1', 'yes'].includes(t)) return true;
    if (['false', '0', 'no'].includes(t)) return false;
    return undefined;
  });
}

/** A non-empty string. */
export function str(): ValueSchema<string> {
  return kind('a non-empty string', (v) => (typeof v === 'string' && v.length > 0 ? v : undefined));
}

/** One of a fixed set of words. */
export function oneOf<T extends string>(choices: readonly T[]): ValueSchema<T> {
  return kind(`one of ${choices.join(', ')}`, (v) => (typeof v === 'string' && (choices as readonly string[]).includes(v) ? (v as T) : undefined));
}

/** A list of strings: a JSON array, or a comma-separated string. Empty items are dropped; the list may not be empty. */
export function list(): ValueSchema<string[]> {
  return kind('a comma-separated list (or a JSON array) of non-empty strings', (v) => {
    const items = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',') : undefined;
    if (!items || !items.every((i) => typeof i === 'string')) return undefined;
    const out = items.map((s) => s.trim()).filter((s) => s.length > 0);
    return out.length > 0 ? out : undefined;
  });
}

/** A list of http(s) URLs (etcd endpoints, worker URLs). */
export function urlList(): ValueSchema<string[]> {
  return kind('a comma-separated list (or a JSON array) of http:// or https:// URLs', (v) => {
    const items = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',') : undefined;
    if (!items || !items.every((i) => typeof i === 'string')) return undefined;
    const out = items.map((s) => s.trim()).filter((s) => s.length > 0);
    if (out.length === 0) return undefined;
    for (const u of out) {
      try {
        const p = new URL(u);
        if (p.protocol !== 'http:' && p.protocol !== 'https:') return undefined;
      } catch {
        return undefined;
      }
    }
    return out;
  });
}
