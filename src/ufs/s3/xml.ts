/**
 * The little XML S3 answers with: ListObjectsV2 pages and error documents. Flat,
 * known element names, so a few regular expressions do (no XML dependency); text is
 * entity-decoded (keys are XML-escaped).
 */
import type { S3ListEntry, S3ListPage } from './transport.js';

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

export function decodeXml(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);/g, (m, e: string) => {
    if (e[0] === '#') {
      const cp = e[1] === 'x' ? Number.parseInt(e.slice(2), 16) : Number.parseInt(e.slice(1), 10);
      return Number.isFinite(cp) && cp <= 0x10ffff ? String.fromCodePoint(cp) : m;
    }
    return ENTITIES[e] ?? m;
  });
}

/** The decoded text of the first `<name>` element in `xml`, or undefined. */
export function xmlText(xml: string, name: string): string | undefined {
  const open = xml.indexOf(`<${name}>`);
  if (open === -1) return xml.includes(`<${name}/>`) ? '' : undefined;
  const start = open + name.length + 2;
  const end = xml.indexOf(`</${name}>`, start);
  return end === -1 ? undefined : decodeXml(xml.slice(start, end));
}

export function parseListPage(xml: string): S3ListPage {
  const contents: S3ListEntry[] = [];
  const re = /<Contents>([\s\S]*?)<\/Contents>/g;
  for (let m = re.exec(xml); m !== null; m = re.exec(xml)) {
    const block = m[1] ?? '';
    const key = xmlText(block, 'Key');
    if (key === undefined) continue;
    const lm = xmlText(block, 'LastModified');
    const t = lm === undefined ? Number.NaN : Date.parse(lm);
    contents.push({ key, size: Number(xmlText(block, 'Size') ?? '0'), etag: xmlText(block, 'ETag'), lastModified: Number.isFinite(t) ? new Date(t) : undefined });
  }
  // Only the top-level elements: the first <Contents> bounds where they may be.
  const first = xml.indexOf('<Contents>');
  const head = first === -1 ? xml : xml.slice(0, first) + xml.slice(xml.lastIndexOf('</Contents>'));
  const truncated = xmlText(head, 'IsTruncated') === 'true';
  return { contents, next: truncated ? xmlText(head, 'NextContinuationToken') : undefined };
}

/** `Code` and `Message` of an S3 error document, when the body is one. */
export function parseError(xml: string): { code: string | undefined; message: string | undefined } {
  return { code: xmlText(xml, 'Code'), message: xmlText(xml, 'Message') };
}
