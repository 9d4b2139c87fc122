"""Static files under content-hashed names, compressed, and served for good (README, "Static files").

`collectstatic` (the Procfile's release step) writes each file under a name carrying its
hash, with gzip variants, and a manifest; pages then name the hashed files, which WhiteNoise
serves with a ten-year, immutable cache lifetime and compressed to clients that accept it.

The browser client is ES modules importing each other by relative path
(`import … from "./http.js"`): those imports are rewritten to the hashed names too, so a
module never loads a stale neighbour. A file the manifest does not name (a checkout where
collectstatic never ran, as in development and tests) keeps its plain name and is served
from the source folders, with WhiteNoise's short cache lifetime.
"""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    support_js_module_import_aggregation = True

    def stored_name(self, name: str) -> str:
        try:
            return super().stored_name(name)
        except ValueError:
            # Not collected (or added after the last collectstatic): its source file, by its own name.
            return name
