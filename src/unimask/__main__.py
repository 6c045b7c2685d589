"""``python -m unimask`` (and ``torchrun -m unimask``) enter the CLI."""

from unimask.cli import main

if __name__ == "__main__":
    main()
