"""Data-flow-space merging: evolved layer paths with scaling."""
