package api

import (
	"strconv"
	"strings"
	"time"
)

// Stream tokens are log positions: a token P names the gap just after
// position P (events at or before P are "before" it). Sync tokens are
// "s<P>"; pagination tokens are "t<P>". Both parse to P.

func syncToken(p uint64) string { return "s" + strconv.FormatUint(p, 10) }
func pageToken(p uint64) string { return "t" + strconv.FormatUint(p, 10) }

// parseToken accepts either form; ok is false for anything else.
func parseToken(t string) (uint64, bool) {
	if len(t) < 2 || (t[0] != 's' && t[0] != 't') {
		return 0, false
	}
	// Tolerate suffixes of ephemeral streams ("s12_3") from later versions.
	num := t[1:]
	if i := strings.IndexByte(num, '_'); i >= 0 {
		num = num[:i]
	}
	p, err := strconv.ParseUint(num, 10, 64)
	return p, err == nil
}

func nowMS() int64 { return time.Now().UnixMilli() }
