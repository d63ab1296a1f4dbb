package stateres

import (
	"errors"
	"strings"
)

// ErrNotFound is what a fetcher returns (or wraps) when it does not have an
// event. Resolve and CheckAuthEvents turn it into a *MissingEventsError, which
// also matches ErrNotFound with errors.Is, so the caller can fetch the events
// (for example over /event_auth) and try again.
var ErrNotFound = errors.New("stateres: not found")

// ErrNoVersion is returned when an event or a call carries no room version:
// the rules cannot be chosen, so nothing is decided.
var ErrNoVersion = errors.New("stateres: no room version")

// DeniedError is the verdict "the authorisation rules reject this event". It
// is a value, not a failure: the caller records it (the event is rejected or
// soft-failed). Every other error from this package means "could not
// evaluate" and must not be recorded as a rejection.
type DeniedError struct {
	// Rule is the number of the deciding rule in the room version's own list
	// of authorisation rules, as the spec renders it (rooms/v<N>.md), e.g.
	// "4.3.2" in room version 10 is "If the sender does not match state_key,
	// reject". Numbers differ between versions because rules were added and
	// removed; Rule always uses the numbering of the event's room version.
	// Checks that come before the rules (the event's own format) use "format".
	Rule string
	// Reason says in words what the rule found.
	Reason string
}

func (e *DeniedError) Error() string {
	return "stateres: rejected by rule " + e.Rule + ": " + e.Reason
}

// IsDenied reports whether err is (or wraps) a *DeniedError, that is a
// verdict rather than a failure to evaluate.
func IsDenied(err error) bool {
	var d *DeniedError
	return errors.As(err, &d)
}

// MissingEventsError lists events that a fetcher did not have.
type MissingEventsError struct {
	IDs []string // sorted, without duplicates
}

func (e *MissingEventsError) Error() string {
	const max = 5
	ids := e.IDs
	more := ""
	if len(ids) > max {
		more = " and more"
		ids = ids[:max]
	}
	return "stateres: missing events " + strings.Join(ids, ", ") + more
}

// Is makes errors.Is(err, ErrNotFound) true for a *MissingEventsError.
func (e *MissingEventsError) Is(target error) bool { return target == ErrNotFound }
