"""C{python -m agwtx.tools.armimport}: the C{agw-import-arm} command."""

import sys

from agwtx.tools.armimport.cli import main

sys.exit(main())
