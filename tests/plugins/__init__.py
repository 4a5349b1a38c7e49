"""Feeds defined inside the test package, registered the way ops register theirs (entry point, config)."""
