"""Support code for tests and the bundled fixtures; not part of the user-facing API."""
