import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isPlainSafe, toYaml, toYamlStream, type JsonObject } from '../../deploy/kubernetes/generator/yaml.js';
import { kubectl, kubectlAvailable, parseJsonStream } from './support.js';

/** Strings that a careless writer turns into something else on the way back. */
const TRICKY = [
  'yes', 'No', 'ON', 'off', 'y', 'n', 'true', 'False', 'null', 'Null', '~', '',
  '0', '123', '1.5', '1e3', '0x1F', '0o17', '.5', '-1', '+1', '.inf', '-.Inf', '.NaN', '1:20', '2001-12-14', '1_000',
  '500m', '2Gi', '0.1.0', 'a: b', 'a #b', 'trailing:', 'trailing ', ' leading', '#comment', '- item', '? key', '[x]', '{x}',
  '*alias', '&anchor', '!tag', '|', '>', '%dir', '@at', '`tick`', "'single'", '"double"', 'tab\there', 'ünïcödé', 'back\\slash',
  '--host=$(POD_IP)', 'http://a.b:2379', 'app.kubernetes.io/name', 'line1\nline2\n', 'no newline\nat end', 'ends\n\n', 'x\n  y\n',
  'trailing space \nline\n', '\tindent\n', 'cr\r\nlf', 'nul\u0000', 'bell\u0007',
];

describe('the YAML emitter', () => {
  it('writes maps, sequences of maps and nested sequences in block style', () => {
    const doc: JsonObject = { a: 1, b: [{ c: 'd', e: [true, null] }, 'f', [1, 2]], g: {}, h: [], i: { j: 'k' } };
    expect(toYaml(doc)).toBe(
      ['a: 1', 'b:', '- c: d', '  e:', '  - true', '  - null', '- f', '- - 1', '  - 2', 'g: {}', 'h: []', 'i:', '  j: k', ''].join('\n'),
    );
  });

  it('quotes every string that could read back as a number, boolean, null or structure', () => {
    for (const s of ['yes', 'off', 'null', '~', '', '123', '1.5', '.inf', '500m', 'a: b', 'a #b', '#c', '- x', '[x]', '*a', ' x', 'x ']) {
      expect(isPlainSafe(s), s).toBe(false);
    }
    for (const s of ['granary', '--csi-address=/csi/csi.sock', 'http://a.b:2379', 'app.kubernetes.io/name', '$(POD_IP)']) {
      expect(isPlainSafe(s), s).toBe(true);
    }
  });

  it('writes multi-line text as a block literal, keeping its final newline or its absence', () => {
    expect(toYaml({ s: 'a\n  b\n' })).toBe('s: |\n  a\n    b\n');
    expect(toYaml({ s: 'a\n\nb' })).toBe('s: |-\n  a\n\n  b\n');
    expect(toYaml({ s: 'a\n\n' })).toBe('s: "a\\n\\n"\n');
  });

  it('refuses numbers YAML cannot hold', () => {
    expect(() => toYaml({ n: Number.NaN })).toThrow(/NaN/);
  });

  it('puts a comment header before the documents and separates them', () => {
    expect(toYamlStream([{ a: 1 }, { b: 2 }], 'one\n\ntwo')).toBe('# one\n#\n# two\na: 1\n---\nb: 2\n');
  });

  describe.runIf(kubectlAvailable())('read back by kubectl (an independent YAML parser)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-yaml-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('gives back every tricky string exactly, as values, keys and list items', async () => {
      const data = Object.fromEntries(TRICKY.map((s, i) => [`k${i}`, s]));
      const annotations = Object.fromEntries(TRICKY.filter((s) => /^[a-z0-9.]+$/i.test(s)).map((s) => [s, s]));
      const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'tricky', annotations }, data };
      const pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'p', labels: { x: 'y' } },
        spec: { containers: [{ name: 'c', image: 'i', args: TRICKY, env: [{ name: 'N', value: '0755' }] }] },
      };
      const file = join(dir, 'tricky.yaml');
      writeFileSync(file, toYamlStream([cm, { ...pod, metadata: { name: 'p' } }], 'tricky'));
      const back = parseJsonStream(await kubectl(['label', '--local', '-f', file, '-o', 'json', 'x=y']));
      expect(back).toEqual([{ ...cm, metadata: { ...cm.metadata, labels: { x: 'y' } } }, pod]);
    });
  });
});
