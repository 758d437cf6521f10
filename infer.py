"""Fill [MASK] tokens with a trained model: python infer.py ckpt_path=... text="xor rax [MASK]" (see undertale.inference)."""

import sys

from undertale.inference import main

if __name__ == "__main__":
    sys.exit(main())
