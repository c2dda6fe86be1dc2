import sys

from livewatch.cli import main

sys.exit(main())
