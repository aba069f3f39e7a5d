"""The run-folder toolkit every subsystem writes its outputs with: atomic files and folders (`atomic`), the
provenance that tells whether an output is up to date (`provenance`), JSONL logs (`jsonl`), RNG state for exact
resumes (`rng`) and the torch device a run asks for (`device`). It imports no other eclip subsystem."""
