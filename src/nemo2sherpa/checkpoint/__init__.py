"""The source checkpoint: where it comes from (recipe, Hub, file), its archive and config read without trusting them,
and the NeMo model built from it. Shared by convert (which exports it) and validate (which compares against it).

Importing this package is cheap; only `loading` imports NeMo and torch, inside its functions.
"""
