// Package dag is engram's event model: room versions, canonical JSON,
// content and reference hashes, event IDs, redaction, signing keys, signing
// and verification, parsing received PDUs and building our own.
//
// Spec references are to the Matrix spec v1.19: the appendices ("Canonical
// JSON", "Signing JSON", "Cryptographic Test Vectors"), the server-server API
// ("Signing Events" and its subsections) and rooms/v1..v12 (event IDs,
// redaction and event format per version).
//
// # Contract
//
// Bytes are the truth. A PDU is kept as the bytes it arrived in (Event.Raw);
// nothing here re-encodes a signed object except into canonical JSON, which
// is what hashes and signatures cover, so a stored event verifies forever.
// Every function that produces JSON produces canonical JSON.
//
// Room versions are data. Behaviour that differs between versions is read
// from the RoomVersion flags, never from the version string:
//
//   - EventIDFormat: 1 (v1, v2) event IDs are carried in the event and
//     prev_events/auth_events are [event_id, {hashes}] pairs; 3 (v3) the ID
//     is "$" + unpadded standard base64 of the reference hash; 4 (v4+) the
//     same in URL-safe base64; from v3 prev/auth are plain ID lists.
//   - StrictCanonicalJSON (v6+): floats, exponents and integers outside
//     [-(2**53)+1, (2**53)-1] are invalid JSON (ErrBadJSON). Before v6 they
//     are accepted and canonicalised (see Canonical).
//   - SpecialCaseAliases (v1-v5), RestrictedJoins (v8+),
//     RedactKeepsJoinAuthorised (v9+) and CreatorIsSender (v11+, which also
//     selects the v11 redaction algorithm) pick the redaction rules; see
//     Redact.
//   - RoomIDFromCreate (v12+): the m.room.create event has no room_id and
//     the room ID is "!" + its event ID without the "$".
//
// Parsing (ParseEvent) validates shape and size and computes the event ID;
// it does not check the content hash (CheckContentHash) or signatures
// (VerifyEvent), because those need the caller's keys and policies: a hash
// mismatch means "use the redacted copy", not "drop". Authorization rules
// live in stateres, not here.
//
// Nothing panics on any input. Every error wraps one of ErrBadJSON,
// ErrTooLarge, ErrBadEvent, ErrBadHash, ErrNoSignature, ErrBadSignature or
// ErrBadKey, and says what exactly is wrong.
//
// All functions are safe for concurrent use. They borrow pooled scratch
// buffers internally and return fresh memory; an Event's fields must be
// treated as read-only (Content and Unsigned share memory with Raw).
//
// # Speed
//
// Canonical is a hand-written single-pass scanner: it writes members in
// input order and re-sorts an object only when its keys turn out unsorted,
// which events we produce or receive almost never are. Hashing, redaction
// and signing then work on canonical bytes directly (filtering and inserting
// members) without decoding into maps. ParseEvent makes one string copy of
// the event and slices every string field out of it.
//
// # Signing keys
//
// Keys are ed25519 (crypto/ed25519) with IDs "ed25519:<version>", stored in
// Synapse's signing.key format ("ed25519 <version> <unpadded base64 seed>"
// per line), so an existing Synapse key file can be reused.
package dag
