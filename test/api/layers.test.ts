import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/*
 * Which part of src/ may import which. A part imports only parts of its own rank or
 * below: the core never imports tooling, the demo never imports the CLI, config never
 * imports the demo. The entry points import anything but the CLI, and nothing in src/
 * imports them. A new folder under src/ gets its rank here.
 */
const RANK: Record<string, number> = {
  'errors.ts': 0,
  util: 0,
  ufs: 1,
  shuffle: 1,
  cache: 1,
  loader: 1,
  gen: 2,
  netem: 2,
  fuse: 2,
  csi: 2,
  config: 3,
  demo: 4,
  cli: 5,
};
const ENTRY_POINTS = ['index.ts', 'testing.ts'];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Every module specifier a file names: imports, re-exports, `import()` and `import.meta.resolve` with a literal. */
function specifiers(file: string): string[] {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      out.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.arguments.length > 0) {
      const arg = node.arguments[0];
      const isImport = node.expression.kind === ts.SyntaxKind.ImportKeyword;
      const isResolve = node.expression.getText(sf) === 'import.meta.resolve';
      if ((isImport || isResolve) && arg && ts.isStringLiteralLike(arg)) out.push(arg.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

/** The part of src/ a path inside it belongs to: its first folder, or the file itself at the top. */
function partOf(pathInSrc: string): string {
  return pathInSrc.split('/')[0] ?? pathInSrc;
}

interface Edge {
  from: string;
  to: string;
  spec: string;
}

function edges(): Edge[] {
  const out: Edge[] = [];
  for (const file of sourceFiles('src')) {
    for (const spec of specifiers(file)) {
      if (!spec.startsWith('.')) continue;
      const target = relative('src', normalize(join(dirname(file), spec))).replaceAll('\\', '/');
      out.push({ from: relative('src', file).replaceAll('\\', '/'), to: target.replace(/\.js$/, '.ts'), spec });
    }
  }
  return out;
}

const show = (e: Edge): string => `src/${e.from} imports '${e.spec}' (src/${e.to})`;

describe('imports across src/', () => {
  const all = edges();

  it('finds the imports it checks', () => {
    expect(all.length).toBeGreaterThan(100);
    expect(all.some((e) => e.from === 'cli/demo.ts' && e.to.startsWith('demo/'))).toBe(true);
  });

  it('gives every part of src/ a rank', () => {
    const parts = new Set(sourceFiles('src').map((f) => partOf(relative('src', f).replaceAll('\\', '/'))));
    const unranked = [...parts].filter((p) => !(p in RANK) && !ENTRY_POINTS.includes(p));
    expect(unranked, 'add the new part of src/ to RANK in test/api/layers.test.ts').toEqual([]);
  });

  it('never leave src/', () => {
    expect(all.filter((e) => e.to.startsWith('..')).map(show)).toEqual([]);
  });

  it('go only to a part of the same rank or below: the demo, config, gen and netem never import the CLI, config never the demo', () => {
    const upward = all.filter((e) => {
      const from = partOf(e.from);
      const to = partOf(e.to);
      if (ENTRY_POINTS.includes(from) || ENTRY_POINTS.includes(e.to) || from === to) return false;
      return (RANK[to] ?? Infinity) > (RANK[from] ?? -Infinity);
    });
    expect(upward.map(show)).toEqual([]);
  });

  it('leave the entry points to users: nothing in src/ imports them, and they import no CLI code', () => {
    expect(all.filter((e) => ENTRY_POINTS.includes(e.to)).map(show)).toEqual([]);
    expect(all.filter((e) => ENTRY_POINTS.includes(e.from) && partOf(e.to) === 'cli').map(show)).toEqual([]);
  });
});
