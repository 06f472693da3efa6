"""runstore's web viewer (`runstore ui ROOT`): runs, progress, metric charts and
messages of a root of runs, live, served on 127.0.0.1 with every asset inside the
package (no CDN, no network).

Installed as `runstore.viewer` (setuptools maps it to the repository's `viewer/`). A
job that only logs never imports it: the server's libraries load here, not in
`runstore`.
"""

from __future__ import annotations

from .app import ViewerOptions, create_app
from .server import DEFAULT_PORT, ROOT_VARIABLE, default_root, serve

__all__ = ["DEFAULT_PORT", "ROOT_VARIABLE", "ViewerOptions", "create_app", "default_root", "serve"]
