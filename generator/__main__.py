import sys

from .cli import main

if __name__ == "__main__":  # not when a render worker process (spawned) imports this module
    sys.exit(main())
