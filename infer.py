"""Fill [MASK] tokens with a trained model: python infer.py run=<run dir> text="xor rax [MASK]" (see undertale.inference.fill_mask, or --help)."""

import sys

from undertale.inference.fill_mask import main

if __name__ == "__main__":
    sys.exit(main())
