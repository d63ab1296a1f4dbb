package dag

import "errors"

// Error categories. Every error returned by this package wraps exactly one of
// them, so callers can map failures to Matrix error codes with errors.Is
// (ErrBadJSON -> M_BAD_JSON, ErrTooLarge -> M_TOO_LARGE, ...) while the message
// still says what exactly is wrong.
var (
	// ErrBadJSON: the input is not JSON this package accepts: a syntax error,
	// invalid UTF-8, a lone surrogate, a duplicate key, nesting deeper than
	// MaxNesting, or (strict mode) a number that is not an integer in
	// [-(2**53)+1, (2**53)-1].
	ErrBadJSON = errors.New("dag: invalid JSON")
	// ErrTooLarge: the event exceeds a size limit of the spec.
	ErrTooLarge = errors.New("dag: event too large")
	// ErrBadEvent: the JSON is fine but the event does not have the shape the
	// room version requires (missing or mistyped key, bad identifier, ...).
	ErrBadEvent = errors.New("dag: malformed event")
	// ErrBadHash: the content hash in "hashes" does not match the event.
	ErrBadHash = errors.New("dag: content hash mismatch")
	// ErrNoSignature: the object carries no signature for the requested
	// server and key ID.
	ErrNoSignature = errors.New("dag: signature missing")
	// ErrBadSignature: a signature is present but does not verify, or cannot
	// be decoded.
	ErrBadSignature = errors.New("dag: bad signature")
	// ErrBadKey: a signing key or key file is malformed.
	ErrBadKey = errors.New("dag: bad signing key")
)
