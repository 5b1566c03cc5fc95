"""The test suite (a package: helpers are imported as ``tests.common``, tools as ``tools.<name>``)."""
