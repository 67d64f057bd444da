"""`python -m zoo.bench`: the zoo-bench command."""

from zoo.bench import main

main()
