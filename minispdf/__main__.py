import sys


def run() -> int:
    """The ``minispdf`` command; a Ctrl-C while the kit (torch) is still loading ends quietly
    too."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("interrupted: nothing was started", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
