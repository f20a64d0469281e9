/**
 * The status page as a document: complete, self-contained (nothing fetched from outside the gateway),
 * a script that parses, and no HTML-from-string APIs in it. Its behaviour in a browser is tested in
 * test/integration/status-page.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { statusPageHtml } from '../../agent/observe/status-page.js';

const html = statusPageHtml();

function scripts(doc: string): string[] {
  return [...doc.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)].map((m) => {
    expect(m[1], 'an inline script, no src').not.toMatch(/\bsrc\s*=/i);
    return m[2]!;
  });
}

describe('status page document', () => {
  it('is one complete HTML document', () => {
    expect(html.startsWith('<!doctype html>')).toBe(true);
    for (const tag of ['<html', '<head>', '</head>', '<body>', '</body>', '</html>', '<title>', '<meta charset="utf-8">', '<meta name="viewport"']) {
      expect(html, tag).toContain(tag);
    }
    expect(html.trimEnd().endsWith('</html>')).toBe(true);
    // The same string each call: the server can hold it, and no build step is needed.
    expect(statusPageHtml()).toBe(html);
  });

  it('references nothing outside itself', () => {
    // No src/href/action/poster to any URL with a scheme or protocol-relative host.
    expect(html).not.toMatch(/\b(src|href|action|poster|srcset)\s*=\s*["']?\s*(https?:|\/\/|data:)/i);
    expect(html).not.toMatch(/@import/i);
    expect(html).not.toMatch(/url\(\s*["']?\s*(https?:|\/\/)/i);
    expect(html).not.toMatch(/<link\b/i);
    expect(html).not.toMatch(/<(img|iframe|object|embed)\b/i);
    // The only absolute URL allowed is the SVG namespace name, which is an identifier and never fetched.
    const urls = [...html.matchAll(/(https?:)?\/\/[\w.-]+\.[a-z]{2,}[^\s'"]*/gi)].map((m) => m[0]);
    expect(urls).toEqual(['http://www.w3.org/2000/svg']);
  });

  it('has one script that parses and builds DOM without HTML strings', () => {
    const s = scripts(html);
    expect(s).toHaveLength(1);
    const src = s[0]!;
    // Parse only (new Function compiles the body without running it): a syntax error throws here.
    expect(() => new Function(src)).not.toThrow();
    // Untrusted text (event messages may carry device text) goes in through textContent/createTextNode.
    expect(src).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/);
    expect(src).toMatch(/createTextNode/);
  });

  it('passes a ?token= from its own URL to the stream and the fetch calls, relative to where it is served', () => {
    const src = scripts(html)[0]!;
    expect(src).toMatch(/new URLSearchParams\(location\.search\)\.get\('token'\)/);
    expect(src).toMatch(/new EventSource\(apiUrl\('api\/events\/stream'\)\)/);
    expect(src).toMatch(/fetch\(apiUrl\('api\/events'\)/);
    // A token in the page URL must not leak to other sites through the Referer header.
    expect(html).toContain('<meta name="referrer" content="no-referrer">');
  });
});
