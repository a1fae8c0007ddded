/**
 * A YAML emitter for the subset the manifests use: maps, sequences, strings, numbers,
 * booleans and null, from JSON values. Every string that a YAML 1.1 or 1.2 reader could
 * take for something else (a number, a boolean, null, a comment, a flow collection) is
 * written as a JSON double-quoted string, which both read the same way; multi-line
 * strings (scripts) are block literals when that keeps them exact.
 */

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** Words that some YAML reader turns into a boolean or null. */
const RESERVED = /^(?:y|yes|n|no|true|false|on|off|null|~)$/i;
/** Characters a plain scalar may hold here (a conservative subset of what YAML allows). */
const PLAIN = /^(?:[A-Za-z_/$(]|--?[A-Za-z])[A-Za-z0-9 _./:=,@+$()*~%-]*$/;

/** Whether `s` reads back as the same string when written without quotes. */
export function isPlainSafe(s: string): boolean {
  return PLAIN.test(s) && !RESERVED.test(s) && !s.endsWith(' ') && !s.endsWith(':') && !s.includes(': ') && !s.includes(' #');
}

function scalar(s: string): string {
  return isPlainSafe(s) ? s : JSON.stringify(s);
}

/** A block literal for `s`, or undefined when one would not read back exactly. */
function blockLiteral(s: string, indent: string): string | undefined {
  if (!s.includes('\n') || s.endsWith('\n\n') || /^[ \t\n]/.test(s)) return undefined;
  // Only printable text, tabs aside: anything else needs an escape.
  if (/[^\x20-\x7e\n\u00a0-\uffff]/.test(s)) return undefined;
  const chomp = s.endsWith('\n') ? '|' : '|-';
  const body = (s.endsWith('\n') ? s.slice(0, -1) : s).split('\n');
  if (body.some((line) => /[ \t]$/.test(line))) return undefined;
  return `${chomp}\n${body.map((line) => (line === '' ? '' : `${indent}${line}`)).join('\n')}`;
}

function isEmptyCollection(v: JsonValue): boolean {
  return (Array.isArray(v) && v.length === 0) || (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0);
}

function inline(v: JsonValue, indent: string): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`YAML: cannot write the number ${v}`);
    return String(v);
  }
  if (typeof v === 'string') return blockLiteral(v, indent) ?? scalar(v);
  if (Array.isArray(v)) return '[]';
  return '{}';
}

function isCollection(v: JsonValue): v is JsonValue[] | JsonObject {
  return v !== null && typeof v === 'object' && !isEmptyCollection(v);
}

/** Lines of `v` at `indent`; a map's or sequence's lines start at the indent. */
function block(v: JsonValue[] | JsonObject, indent: string): string[] {
  const lines: string[] = [];
  const deeper = `${indent}  `;
  if (Array.isArray(v)) {
    for (const item of v) {
      if (isCollection(item)) {
        // The item's first line goes after "- ", the rest keep its indent.
        const [first, ...rest] = block(item, deeper);
        lines.push(`${indent}- ${(first ?? '').slice(deeper.length)}`, ...rest);
      } else {
        lines.push(`${indent}- ${inline(item, deeper)}`);
      }
    }
    return lines;
  }
  for (const [key, value] of Object.entries(v)) {
    const k = scalar(key);
    if (isCollection(value)) {
      lines.push(`${indent}${k}:`, ...block(value, Array.isArray(value) ? indent : deeper));
    } else {
      lines.push(`${indent}${k}: ${inline(value, deeper)}`);
    }
  }
  return lines;
}

/** One YAML document for `v`, ending in a newline. */
export function toYaml(v: JsonValue): string {
  return `${isCollection(v) ? block(v, '').join('\n') : inline(v, '')}\n`;
}

/** A YAML stream of documents, after an optional comment header. */
export function toYamlStream(docs: readonly JsonValue[], header?: string): string {
  const head = header === undefined ? '' : `${header.split('\n').map((l) => (l === '' ? '#' : `# ${l}`)).join('\n')}\n`;
  return head + docs.map(toYaml).join('---\n');
}
