/**
 * The EC2 Query protocol as the AWS SDK speaks it (ec2-mac.md §4): a form-encoded body
 * with flattened lists (`HostId.1`, `Filter.1.Value.2`), and XML answers whose list
 * entries are `<item>`s. Errors are `<Response><Errors><Error>…` with a 4xx/5xx status.
 */

export type Params = URLSearchParams;

/** Values of `Prefix.1`, `Prefix.2`, … in index order. */
export function members(p: Params, prefix: string): string[] {
  const out: [number, string][] = [];
  const re = new RegExp(`^${prefix.replace(/\./g, '\\.')}\\.(\\d+)$`);
  for (const [k, v] of p) {
    const m = re.exec(k);
    if (m) out.push([Number(m[1]), v]);
  }
  return out.sort((a, b) => a[0] - b[0]).map(([, v]) => v);
}

/** Structures under `Prefix.N.*`, each as its own Params (keys without the prefix), in index order. */
export function structs(p: Params, prefix: string): Params[] {
  const groups = new Map<number, Params>();
  const re = new RegExp(`^${prefix.replace(/\./g, '\\.')}\\.(\\d+)\\.(.+)$`);
  for (const [k, v] of p) {
    const m = re.exec(k);
    if (!m) continue;
    const n = Number(m[1]);
    let g = groups.get(n);
    if (!g) groups.set(n, (g = new URLSearchParams()));
    g.append(m[2]!, v);
  }
  return [...groups.entries()].sort((a, b) => a[0] - b[0]).map(([, g]) => g);
}

export interface Filter {
  name: string;
  values: string[];
}

export function filters(p: Params): Filter[] {
  return structs(p, 'Filter').map((f) => ({ name: f.get('Name') ?? '', values: members(f, 'Value') }));
}

export type Tags = Map<string, string>;

export function tagSpecs(p: Params, resourceType: string): Tags {
  const tags: Tags = new Map();
  for (const spec of structs(p, 'TagSpecification')) {
    if (spec.get('ResourceType') !== resourceType) continue;
    for (const t of structs(spec, 'Tag')) tags.set(t.get('Key') ?? '', t.get('Value') ?? '');
  }
  return tags;
}

/** Whether a resource passes the common filters (`tag:K`, `tag-key`) and the given field filters. */
export function matches(f: Filter, fields: Record<string, string | undefined>, tags: Tags): boolean | undefined {
  if (f.name.startsWith('tag:')) {
    const v = tags.get(f.name.slice(4));
    return v !== undefined && f.values.some((x) => glob(x, v));
  }
  if (f.name === 'tag-key') return f.values.some((x) => [...tags.keys()].some((k) => glob(x, k)));
  if (!(f.name in fields)) return undefined;
  const v = fields[f.name];
  return v !== undefined && f.values.some((x) => glob(x, v));
}

/** EC2 filter values take `*` and `?` wildcards. */
function glob(pattern: string, value: string): boolean {
  if (!/[*?]/.test(pattern)) return pattern === value;
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
  );
  return re.test(value);
}

const escape = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export type XmlValue = string | number | boolean | Date | null | undefined | XmlValue[] | { [k: string]: XmlValue };

/** Serialises a value as EC2 does: arrays become `<item>` lists, Dates ISO-8601 with milliseconds. */
export function xml(name: string, v: XmlValue): string {
  if (v === undefined) return '';
  if (v === null) return `<${name}/>`;
  if (Array.isArray(v)) return `<${name}>${v.map((x) => xml('item', x)).join('')}</${name}>`;
  if (v instanceof Date) return `<${name}>${v.toISOString()}</${name}>`;
  if (typeof v === 'object') {
    return `<${name}>${Object.entries(v)
      .map(([k, x]) => xml(k, x))
      .join('')}</${name}>`;
  }
  return `<${name}>${escape(String(v))}</${name}>`;
}

export function tagSet(tags: Tags): XmlValue[] {
  return [...tags].map(([key, value]) => ({ key, value }));
}

export function responseXml(action: string, requestId: string, body: Record<string, XmlValue>): string {
  const inner = Object.entries(body)
    .map(([k, v]) => xml(k, v))
    .join('');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>${requestId}</requestId>${inner}</${action}Response>`;
}

export function errorXml(code: string, message: string, requestId: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${escape(code)}</Code><Message>${escape(message)}</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`;
}

/** An EC2 error answer: its code, message and HTTP status (5xx for server faults, 503 for throttling). */
export class Ec2Error extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}
