"""CLI glue of each stage: read inputs, call the stage core, write the store."""
