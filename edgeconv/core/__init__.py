"""Core building blocks shared by every stage: errors, lazy imports, hashing, artifacts, cache."""
