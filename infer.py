"""Fill [MASK] tokens with a trained model: python infer.py run=<run dir> text="xor rax [MASK]" (see undertale.inference.fill_mask, or --help).

A Hydra app (conf/infer.yaml). Exit codes: 0 done, 2 a mistake in the command (one "error:" line on stderr).
"""

from undertale.commands.infer import main

if __name__ == "__main__":
    main()
