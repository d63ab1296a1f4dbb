package api

import (
	"strconv"
	"strings"
	"time"
)

// Stream tokens are log positions: a token P names the gap just after
// position P (events at or before P are "before" it). Pagination tokens are
// "t<P>". Sync tokens are "s<P>_<E>": P the log position, E the position of
// the ephemeral streams (typing and presence, in memory; api/sync_hub.go).
// Every parser accepts both forms; P is what pagination uses.

func syncToken(p uint64) string { return "s" + strconv.FormatUint(p, 10) }
func pageToken(p uint64) string { return "t" + strconv.FormatUint(p, 10) }

// syncPos is a position in every stream /sync serves.
type syncPos struct {
	log uint64 // the log (room events, receipts, account data, ...)
	eph uint64 // typing and presence
}

func (p syncPos) token() string {
	b := make([]byte, 0, 40)
	b = append(b, 's')
	b = strconv.AppendUint(b, p.log, 10)
	b = append(b, '_')
	b = strconv.AppendUint(b, p.eph, 10)
	return string(b)
}

// parseSyncToken parses "s<P>", "s<P>_<E>" (and "t<P>"); further "_"
// parts, from a later version with more streams, are ignored.
func parseSyncToken(t string) (syncPos, bool) {
	if len(t) < 2 || (t[0] != 's' && t[0] != 't') {
		return syncPos{}, false
	}
	parts := strings.Split(t[1:], "_")
	var p syncPos
	var err error
	if p.log, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return syncPos{}, false
	}
	if len(parts) > 1 && t[0] == 's' {
		if p.eph, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
			return syncPos{}, false
		}
	}
	return p, true
}

// parseToken accepts either form and returns the log position; ok is false
// for anything else.
func parseToken(t string) (uint64, bool) {
	p, ok := parseSyncToken(t)
	return p.log, ok
}

func nowMS() int64 { return time.Now().UnixMilli() }
