"""`python -m bench [--contacts N ...] [--json] [--database-url URL] [--smtp/--no-smtp]`:
see `bench.harness`."""

from bench.harness import main

raise SystemExit(main())
