import { InvalidArgumentError } from 'commander';

/**
 * Parsers for option values. They throw commander's `InvalidArgumentError`, which
 * the program reports as `GRANARY_ERR_CONFIG` with the option's name and exit 2.
 */

const INT_RE = /^\d+(?:_\d+)*$/;

/** An integer option: digits, `_` allowed as a separator (`1_000_000`). */
export function intParser(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    const text = value.trim();
    const n = INT_RE.test(text) ? Number(text.replaceAll('_', '')) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `from ${min} and up` : `from ${min} to ${max}`;
      throw new InvalidArgumentError(`Expected an integer ${range}, got "${value}".`);
    }
    return n;
  };
}

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
const SIZE_RE = /^(\d+(?:_\d+)*)\s*([kmgt]?)(?:i?b)?$/i;

/** A byte size: `4096`, `64k`, `64KiB`, `1.5` is refused; units are powers of 1024. */
export function bytesParser(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    const m = SIZE_RE.exec(value.trim());
    const n = m?.[1] === undefined ? NaN : Number(m[1].replaceAll('_', '')) * (UNITS[(m[2] ?? '').toLowerCase()] ?? NaN);
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`Expected a byte size from ${min} to ${max} (like 4096, 64k, 8MiB), got "${value}".`);
    }
    return n;
  };
}

/** One of a fixed set of words. */
export function choiceParser<T extends string>(choices: readonly T[]): (value: string) => T {
  return (value: string) => {
    if ((choices as readonly string[]).includes(value)) return value as T;
    throw new InvalidArgumentError(`Expected one of ${choices.join(', ')}, got "${value}".`);
  };
}
