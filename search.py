"""Search a function index: top-k matches of functions, or a one-to-one diff of two binaries.

    python search.py index=ls.index query=/usr/bin/ls:_obstack_begin  # or :0x148b0, or the whole binary
    python search.py index=ls.index diff=/usr/bin/ls,ls.stripped output=diff.json

See docs/search.md.
"""

from undertale.commands.search import main

if __name__ == "__main__":
    main()
