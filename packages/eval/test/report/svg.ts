/** A minimal XML parser for tests: enough to check well-formedness and count marks in Vega SVG. */

export interface XmlNode {
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string;
}

/** Decode the XML entities Vega and our HTML writer emit. */
export function decodeEntities(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#39|#x[0-9a-fA-F]+|#[0-9]+);/g, (_m, e: string) => {
    switch (e) {
      case "lt":
        return "<";
      case "gt":
        return ">";
      case "amp":
        return "&";
      case "quot":
        return '"';
      case "apos":
      case "#39":
        return "'";
      default:
        return String.fromCodePoint(e[1] === "x" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    }
  });
}

const ATTR = /([^\s=/>]+)\s*=\s*("([^"]*)"|'([^']*)')/g;

/** Parse an XML document; throws on unbalanced or malformed tags and on stray '<' in text. */
export function parseXml(src: string): XmlNode {
  const s = src.replace(/^<\?xml[\s\S]*?\?>/, "").trim();
  const root: XmlNode = { name: "#root", attrs: {}, children: [], text: "" };
  const stack: XmlNode[] = [root];
  let i = 0;
  while (i < s.length) {
    const lt = s.indexOf("<", i);
    const textEnd = lt === -1 ? s.length : lt;
    const text = s.slice(i, textEnd);
    if (/[<>]/.test(text)) throw new Error(`unescaped angle bracket in text at ${i}`);
    stack[stack.length - 1].text += decodeEntities(text);
    if (lt === -1) break;
    if (s.startsWith("<!DOCTYPE", lt) || s.startsWith("<!doctype", lt)) {
      i = s.indexOf(">", lt) + 1;
      continue;
    }
    if (s.startsWith("<!--", lt)) {
      const end = s.indexOf("-->", lt);
      if (end === -1) throw new Error("unterminated comment");
      i = end + 3;
      continue;
    }
    const gt = s.indexOf(">", lt);
    if (gt === -1) throw new Error(`unterminated tag at ${lt}`);
    const tag = s.slice(lt + 1, gt);
    i = gt + 1;
    if (tag.startsWith("/")) {
      const name = tag.slice(1).trim();
      const open = stack.pop();
      if (!open || open.name !== name) throw new Error(`mismatched </${name}> (open: ${open?.name})`);
      continue;
    }
    const selfClosing = tag.endsWith("/");
    const body = selfClosing ? tag.slice(0, -1) : tag;
    const m = /^([A-Za-z_][\w:.-]*)/.exec(body);
    if (!m) throw new Error(`bad tag <${tag}>`);
    const attrs: Record<string, string> = {};
    const rest = body.slice(m[1].length);
    const leftover = rest.replace(ATTR, (_a, k: string, _v: string, dq?: string, sq?: string) => {
      attrs[k] = decodeEntities(dq ?? sq ?? "");
      return "";
    });
    if (leftover.trim() !== "") throw new Error(`malformed attributes in <${tag}>`);
    const node: XmlNode = { name: m[1], attrs, children: [], text: "" };
    stack[stack.length - 1].children.push(node);
    if (!selfClosing) stack.push(node);
  }
  if (stack.length !== 1) throw new Error(`unclosed <${stack[stack.length - 1].name}>`);
  if (root.children.length !== 1) throw new Error("document must have exactly one root element");
  return root.children[0];
}

export function walk(node: XmlNode, visit: (n: XmlNode) => void): void {
  visit(node);
  for (const c of node.children) walk(c, visit);
}

/** Groups whose class list contains every given class. */
export function groupsWithClass(root: XmlNode, ...classes: string[]): XmlNode[] {
  const out: XmlNode[] = [];
  walk(root, (n) => {
    const cls = (n.attrs.class ?? "").split(/\s+/);
    if (n.name === "g" && classes.every((c) => cls.includes(c))) out.push(n);
  });
  return out;
}

/** Number of direct child elements of all mark groups of a Vega mark type (e.g. "mark-symbol"). */
export function countMarks(root: XmlNode, markClass: string, role = "role-mark"): number {
  return groupsWithClass(root, markClass, role).reduce((s, g) => s + g.children.length, 0);
}

/** All text content of <text> elements. */
export function texts(root: XmlNode): string[] {
  const out: string[] = [];
  walk(root, (n) => {
    if (n.name === "text") out.push(n.text);
  });
  return out;
}
