package api

import (
	"sort"
	"strings"

	"engram/projections"
)

// mutualRooms serves GET /v1/mutual_rooms: the rooms where both the
// requester and user_id are joined, in room ID order, in batches of
// mutualRoomsBatch. next_batch is the last room ID returned.
func (s *Server) mutualRooms(r *Req) error {
	other := r.Query("user_id")
	if other == "" {
		return errInvalid("Missing user_id")
	}
	if !validUserID(other) {
		return errInvalid("The user ID provided was invalid")
	}
	if other == r.User {
		return errInvalid("The user ID provided was the requester's own")
	}
	from := r.Query("from")
	if from != "" && !strings.HasPrefix(from, "!") {
		return errInvalid("Invalid from token")
	}
	mine, err := s.store.UserRooms(r.User)
	if err != nil {
		return err
	}
	joined := []string{}
	for _, ur := range mine {
		if ur.Membership != projections.MemberJoin {
			continue
		}
		m, err := s.store.MemberOf(ur.RoomID, other)
		if err != nil {
			return err
		}
		if m.Membership == projections.MemberJoin {
			joined = append(joined, ur.RoomID)
		}
	}
	sort.Strings(joined)
	count := len(joined)
	page := joined
	if from != "" {
		i := sort.SearchStrings(page, from)
		if i < len(page) && page[i] == from {
			i++
		}
		page = page[i:]
	}
	out := map[string]any{"joined": page, "count": count}
	if len(page) > mutualRoomsBatch {
		page = page[:mutualRoomsBatch]
		out["joined"] = page
		out["next_batch"] = page[len(page)-1]
	}
	return r.json(out)
}

const mutualRoomsBatch = 100
