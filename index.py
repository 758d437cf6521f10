"""Build (or append to) a function search index: every function of some ELF files, embedded.

    python index.py binaries=[/usr/bin/ls,/usr/bin/cp] model=outputs/train/runs/<time> output=ls.index
    python index.py binaries=[/usr/bin/grep] model=<the same model> output=ls.index   # appends

See docs/search.md.
"""

from undertale.commands.index import main

if __name__ == "__main__":
    main()
