import sys

from vocalbridge_edge.cli import main

sys.exit(main())
