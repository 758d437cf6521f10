"""The commands: ``undertale <command>`` (installed) and ``python <command>.py`` (repository root) run these.

Each Hydra app reads its config from the package's ``conf/`` (the repository's ``conf/``, shipped inside
the package), so a checkout and an installed wheel compose the same configs. The top layer: it may import
every other (``docs/design.md``).
"""

from pathlib import Path

from undertale.settings.store import CONF

# Hydra takes an absolute config path as a directory: the same one from any working directory
CONFIG_PATH = str(Path(CONF).resolve())
