"""Fill [MASK] tokens with a trained model: python infer.py run=<run dir> text="xor rax [MASK]" (see undertale.inference.fill_mask, or --help).

A Hydra app (conf/infer.yaml). Exit codes: 0 done, 2 a mistake in the command (one "error:" line on stderr).
"""

import sys

import hydra
from omegaconf import DictConfig

from undertale.evaluation.entry import before_hydra
from undertale.inference.fill_mask import USAGE, hydra_arguments, main as fill_masks


@hydra.main(version_base="1.3", config_path="conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    sys.exit(fill_masks(cfg))


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"], ["help"]):
        print(USAGE)
        sys.exit(0)
    sys.argv = hydra_arguments(sys.argv)
    before_hydra(sys.argv, "infer")
    main()
