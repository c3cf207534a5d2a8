"""Command-line scripts; ``scripts.harness`` holds the library code the harness scripts and tests share."""
