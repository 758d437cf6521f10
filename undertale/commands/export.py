"""``undertale export`` / ``python export.py``: a run as a Hugging Face-style directory (docs/export.md).

Exit codes: 0 done, 2 a mistake in the command, or an output that cannot be written (checked before any work; a
disk that fills meanwhile is named so): one ``error:`` line on stderr.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from undertale.commands import CONFIG_PATH
from undertale.evaluation.entry import before_hydra
from undertale.inference.export import export_command
from undertale.runtime.outputs import check_writable, run_command


def export(cfg: DictConfig) -> int:
    """The folder of ``output=`` checked writable (the export is written beside it, then renamed into place),
    then :func:`~undertale.inference.export.export_command`."""
    if cfg.get("output"):
        output = Path(str(cfg.output)).expanduser().absolute()
        if output.is_file():
            check_writable(output, "output", directory=True)  # one line: a file, not a directory
        check_writable(output.parent, "output folder", directory=True,
                       hint=f"export.py writes {output.name} there; choose another output")
    return export_command(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def _app(cfg: DictConfig) -> None:
    sys.exit(run_command(export, cfg, output=cfg.get("output")))


def main() -> None:
    before_hydra(sys.argv, "export")  # a mistake in the command line: one line, exit 2
    _app()
