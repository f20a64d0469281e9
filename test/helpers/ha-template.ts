/**
 * Renders Home Assistant MQTT templates the way HA does for a received message
 * (`async_render_with_possible_json_value`): `value` is the payload text, `value_json` the payload
 * parsed as JSON, the template runs in Jinja2's sandbox and the result is a string (a Python `None`
 * renders as `None`, which HA's MQTT sensor treats as unknown). Real Jinja2 (Debian python3-jinja2,
 * /usr/bin/python3), with StrictUndefined: a key the payload lacks is an error here, where HA would
 * only log a warning and show an empty state.
 */
import { execFileSync } from 'node:child_process';

const SCRIPT = `
import json, sys
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
env = SandboxedEnvironment(undefined=StrictUndefined)
out = []
for template, payload in json.load(sys.stdin):
    try:
        value_json = json.loads(payload)
    except ValueError:
        value_json = None
    try:
        out.append({"ok": env.from_string(template).render(value=payload, value_json=value_json).strip()})
    except Exception as e:
        out.append({"error": f"{type(e).__name__}: {e}"})
json.dump(out, sys.stdout)
`;

export type Rendered = { ok: string } | { error: string };

/** Renders each [template, payload] pair; one python process for the whole list. */
export function renderHaTemplates(pairs: ReadonlyArray<readonly [template: string, payload: string]>): Rendered[] {
  const out = execFileSync('/usr/bin/python3', ['-c', SCRIPT], { input: JSON.stringify(pairs), encoding: 'utf8' });
  return JSON.parse(out) as Rendered[];
}
