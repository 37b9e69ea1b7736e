"""`python -m nemo2sherpa` is the same program as the `nemo2sherpa` console script."""

from nemo2sherpa.cli import console_main

if __name__ == "__main__":
    console_main()
