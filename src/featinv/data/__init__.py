"""Data: decoding, shards (write + stream), the bundled photo set and the DataModule."""
