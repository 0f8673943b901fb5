"""Generation stage: adapter, inference pipeline, CLAP-based candidate selection."""
