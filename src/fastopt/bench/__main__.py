import sys

from fastopt.bench.cli import main

sys.exit(main())
