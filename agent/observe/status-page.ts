/**
 * PLACEHOLDER (obs-http): the real status page comes from obs-page and replaces this file. It only
 * keeps the server compiling and `/` answering until then.
 */
export function statusPageHtml(): string {
  return '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>rackguard</title></head><body><h1>rackguard</h1><p>Status page not built yet: see <a href="api/state">api/state</a>.</p></body></html>\n';
}
