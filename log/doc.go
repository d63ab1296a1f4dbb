// Package log is engram's single source of truth: an append-only log of
// records in a Pebble database, with group commit, and a hook (Options.Apply)
// through which projections write their rows into the same batch as the
// records they are derived from.
//
// # Keys
//
// Every record is one Pebble key in the 'l' keyspace:
//
//	key:   'l' ‖ seq            (1 + 8 bytes, seq big-endian, so keys sort in log order)
//
// Positions (seq) start at 1 and are contiguous: the log holds exactly
// 1..Last(). Open recovers the next position from the last 'l' key. Other
// keyspaces ('p' projection rows, 'c' checkpoints, see ARCHITECTURE.md)
// belong to the projections; Apply must not write 'l' keys.
//
// # Envelope
//
// The value of a log key is an envelope around the record:
//
//	+--------+------+---------+----------------------+
//	| format | kind | version | body ...             |
//	| 1 byte | 1 B  | 1 byte  | len(value)-3 bytes   |
//	+--------+------+---------+----------------------+
//
//	format   envelope format, 1 today. It describes the bytes around the body.
//	kind     Record.Kind: what the body is. Assigned by the writers; opaque here.
//	version  Record.Version: the version of that kind's body encoding.
//	body     Record.Body, stored byte for byte (msgpack, or a PDU's exact
//	         canonical JSON inside a msgpack body). The log never interprets it.
//
// Records are never rewritten, so every envelope format and every body
// version that was ever written must be decoded forever: a new format gets a
// new format byte and a new case in the decoder, and the old case stays
// (the same rule as Pebble's batch encoding, which CockroachDB may hold in
// old formats in unapplied raft entries). testdata holds golden envelopes of
// each format, checked by TestEnvelopeGolden.
//
// # Group commit and durability
//
// One committer goroutine takes requests (one per Append or Submit call)
// from a channel. It takes the first waiting request, then every request
// already waiting, up to 4096 records or 1 MiB of envelopes per group (a
// larger single request forms a group alone: one Append is never split), and
// writes the whole group into ONE indexed Pebble batch. It then calls
// Options.Apply with that batch, the position of the group's first record
// and the records, and commits the batch with a WAL fsync. All the appends
// in a group share the batch and the fsync; while one group is being synced
// the next one queues up, so the number of records per fsync grows with the
// load and the latency of one commit stays bounded by the group bounds.
// Before gathering a group the committer yields the processor a few times
// (while the queue keeps growing), so that the appenders it has just
// answered can queue their next request: without it, closed-loop appenders
// settle into two cohorts that alternate between fsyncs, halving the records
// per fsync.
//
// The records of one Append are atomic: they share a batch. The records of a
// group and the rows Apply wrote for them become durable together, or not at
// all: after a crash the log and the projections agree. An Apply error (or
// panic) fails the whole group; nothing of it is written.
//
// Append, and Pending.Wait, return only after the batch is durable: the
// fsync of Pebble's WAL has returned. Last() is published at that moment,
// before the appenders are woken, so an appender that returns sees its own
// records. Pebble makes a batch visible to its readers before the WAL fsync
// completes (pebble commit.go); the log's readers (Get, Read, Last,
// Changed) never show a position beyond Last(), so nothing that is not
// durable is shown through them. Projection rows read through DB() may run
// ahead of Last() by the group being synced; a reader that must see only
// durable state bounds itself by Last().
//
// If a commit or an fsync fails, the log stops: every pending and later
// append fails with an error wrapping ErrFailed and the cause, and the log
// stays read-only (what was durable stays readable) until it is reopened.
// The fsync is never retried: after a failed fsync the kernel may have
// dropped the dirty pages, and a second fsync that succeeds would lie. (The
// commit uses DB.ApplyNoSyncWait followed by Batch.SyncWait, because Pebble's
// Commit hands an fsync error to Logger.Fatalf, which exits the process.
// Pebble still exits on the errors it considers fatal before the WAL write,
// such as failing to create a new WAL file.)
//
// Close drains: every append submitted before Close is committed (or failed,
// if the log has failed) and answered; then Pebble is closed. Appends and
// reads after Close return ErrClosed.
//
// # Concurrency
//
// All methods of Log are safe for concurrent use. Append and Submit may be
// called from any number of goroutines; positions are unique and
// contiguous, and the records of successive Submit (or Append) calls from
// one goroutine are in the order of the calls. Apply is called from the
// committer goroutine only, one group at a time, in log order. Get, Read,
// Last and Changed never block appends; Read sees the log as of Last() when
// it starts. Body slices passed to Read's callback and to Apply are borrowed
// (valid only during the call); Get returns a Body the caller owns. A
// Submit's record bodies must stay unmodified until its Wait returns.
//
// # Waiting for new records
//
// Changed returns a channel that is closed at the next durable commit, which
// is how long-poll handlers (/sync) wait. Take the channel first, then check
// Last(), then wait on the channel: a commit between the check and the wait
// closes the channel, so it is not missed.
package log
