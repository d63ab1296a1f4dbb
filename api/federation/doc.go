// Package federation is engram's server-server API (spec: server-server-api.md,
// Matrix v1.19): the TLS federation listener's handlers on fasthttp, the
// outbound client (server discovery, X-Matrix request signing, connection
// pooling per destination, backoff), the server key service and key cache,
// and the outbound per-destination queue fed from the log.
//
// # Contract
//
//   - Every request to /_matrix/federation is authenticated with the
//     X-Matrix scheme and answered 401 M_UNAUTHORIZED when the signature is
//     missing, malformed, for another destination or invalid. /_matrix/key
//     and /_matrix/federation/v1/version are public.
//
//   - Inbound PDUs are checked for format, content hash and signatures here
//     (checks 1 to 3 of "Checks performed on receipt of a PDU", in parallel
//     across cores); checks 4 to 6 and the append are the sequencer's
//     (rooms.Sequencer.Receive), which captures the verdict in the log.
//
//   - Outbound: only events this server created are sent, to the servers of
//     the room's joined members (and the target of a membership change), in
//     transactions of at most 50 PDUs; the last position delivered to each
//     destination is a log record (projections.FedSentRecord), so delivery
//     resumes after a restart without gaps.
//
//   - EDUs: inbound EDUs go to the handlers registered with HandleEDU
//     (m.typing, m.receipt and m.presence are the client API's, wired in
//     cmd/engram; end-to-end encryption EDUs register their own). Outbound:
//     public read receipts of local users are read from the log by each
//     destination's worker; typing and presence are queued in memory
//     (SendEDU); at most 100 EDUs per transaction.
//
//   - Invites v2 both ways (an outbound invite is appended only after the
//     invitee's server countersigned it), make_knock/send_knock,
//     rejecting a remote invite (make_leave/send_leave through the
//     inviting server), /query/directory and /query/profile both ways,
//     /publicRooms, /timestamp_to_event.
//
//   - Server ACLs are checked on every authenticated request naming a room,
//     on each PDU of a transaction, and on m.typing EDUs.
//
//   - Client-side history: Backfill fetches a room's events older than
//     what this server holds (/backfill) for the client API's /messages
//     (backfill.go); Knock knocks on rooms this server is not in, and
//     /hierarchy and OpenID userinfo are served (hierarchy.go, openid.go).
//
// Simplifications (see the report in docs): remote keys are cached in
// memory only (a server that cannot be reached is asked of the notaries in
// trusted_key_servers); transaction answers are deduplicated in memory
// only.
//
// History visibility for servers: the room reads (/event, /state, /backfill,
// ...) need a joined member of the requesting server, or a world_readable
// room; within that, each event is checked as visibility.go says (events a
// server may not see are refused by /event and served redacted by /backfill
// and /get_missing_events).
package federation
