"""`sendtime consume`'s parts: Kafka topics into the lake, exactly once, with file ingest's contracts.

One module per job (pipeline/consume.py is the command: one per home, signals, the run):

* `config`: the topic map, the client options and the ones the design owns (`ConsumeConfig`);
* `messages`: message values -> the validator's input (tombstones, size, UTF-8, the JSON
  converter's schema wrapper);
* `offsets`: the lake's record of offsets (each batch's Parquet metadata), the checkpoint that
  caches it, and the recovery of what a killed consumer left;
* `batches`: one topic's buffered messages -> one validated lake batch (+ quarantine), durable;
* `consumer`: the poll -> buffer -> flush -> commit loop and the rebalance callbacks;
* `state`: what the consumer reports for `/metrics` and `/status` (lag, rate, client errors),
  kept in the online store;
* `failpoints`: the crash tests' kill points.

Exactly once into the lake (docs/kafka.md has the whole design):
- The commit point of a batch is the rename of its lake file (`os.replace` after fsync). The file
  carries, in its Parquet key-value metadata (`sendtime.kafka`), the offset range of every
  partition it covers: every offset in a range was consumed into this batch, as an accepted row,
  a quarantined record or a skipped tombstone. A batch with nothing accepted is still written
  (0 rows) so that its offsets are recorded.
- The lake's ranges decide where a partition resumes: on assignment, each partition is sought to
  max(recorded last offset) + 1 (a partition the lake has never seen starts at the group's
  committed offset, else at the earliest offset). Offsets are committed to Kafka only after the
  lake file is durable, and only for monitoring and for partitions the lake does not know.
- A crash before the rename leaves a hidden temporary file (removed at the next start) and the
  offsets are read again; a crash after it leaves a complete batch that the next start finds.
  A batch's quarantine file is written and fsynced before the lake rename under a hidden pending
  name and renamed after it; the next start renames a pending file whose lake file exists and
  deletes one whose lake file does not.
- Reading every footer at each start would grow with the lake: a checkpoint (`kafka/offsets.json`
  under the home, written after each flush) holds the ranges up to a batch id, and a start reads
  only the footers of newer files. The checkpoint is a cache of the lake, never the truth.

Nothing here is imported by this package's `__init__`: import the module you need.
"""
